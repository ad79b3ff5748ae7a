"""The web console (layer 6): one place for the whole lifecycle, served by ``lamina serve`` at ``/``.

Server-rendered Jinja2 pages with one small hand-written script (``static/console.js``) and one
stylesheet, no build step and no vendored framework. Why not htmx or a JS bundle: the console's
interactive parts are few (a streamed chat, forms that call the API, a chart that refreshes), and
each of them calls the *same* HTTP API a client would (``/v1/chat/completions``, ``/v1/feedback``,
``/admin/models/promote``…), so the browser holds no second path to any action; what is left for a
framework to do is small enough to read in one file. Plots are drawn on the server with matplotlib,
as the reports are.

Sign-in exchanges an API key for an HttpOnly, SameSite=Strict session cookie
(``lamina.gateway.sessions``); the pages declare their roles like every route, so a ``user`` key
cannot open the admin pages or call the admin API.

Importing this package mounts the console (``core.extensions.API_ROUTERS``).
"""

from lamina.console import routes as _routes  # noqa: F401 (registers the console's router)
