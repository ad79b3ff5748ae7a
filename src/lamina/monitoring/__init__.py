"""Layer 5: what happens after the response — feedback tied to requests and the review queue
(DESIGN.md). Importing it registers its API routes (``/v1/feedback``, ``/v1/review``)."""

from lamina.monitoring import routes as _routes  # noqa: F401 (registers the routers)
