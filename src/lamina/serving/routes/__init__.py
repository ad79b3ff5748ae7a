"""Thin routers, one per resource: parse, call a service, return. Each route declares who may call
it (``openapi_extra=permit(...)``) and the errors it answers (``responses=``)."""
