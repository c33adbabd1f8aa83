"""ASGI entry point: HTTP through Django's own handler (on request threads that outlive their request:
core/request_threads.py), websockets through Channels (session or token auth)."""
import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from agent_server.routing import websocket_urlpatterns as agent_server_sockets  # noqa: E402
from core.request_threads import RequestThreads  # noqa: E402
from keys.auth import OriginCheckedForCookies, TokenAuthMiddleware  # noqa: E402
from workflows.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": RequestThreads(django_asgi_app),
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
