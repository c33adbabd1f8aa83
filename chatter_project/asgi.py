"""ASGI entry point: HTTP through Django's request handling in one hand-off to a request thread that outlives its
request (core/http_handler.py), websockets through Channels (session or token auth)."""
import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
django.setup(set_prefix=False)  # as get_asgi_application() does: the script prefix comes from each request

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from agent_server.routing import websocket_urlpatterns as agent_server_sockets  # noqa: E402
from core.http_handler import HttpHandler  # noqa: E402
from keys.auth import OriginCheckedForCookies, TokenAuthMiddleware  # noqa: E402
from workflows.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": HttpHandler(),
        "websocket": OriginCheckedForCookies(AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(
            [*websocket_urlpatterns, *agent_server_sockets])))),
    }
)

# The objects loaded so far (Django, DRF, LangChain, pydantic) live as long as the server: keep them out of the
# garbage collector's full passes, which would otherwise traverse them all again and again.
gc.freeze()
# A request leaves few cycles behind, but at the default thresholds its allocations set off young and middle
# collections every turn or two: fewer, larger young collections cost less in all (bench/RESULTS.md, B5).
gc.set_threshold(20_000, 20, 50)
