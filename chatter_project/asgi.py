"""ASGI entry point: HTTP through Django's own ASGI handler (on request threads that outlive their request:
core/serving.py), websockets through Channels (session or token auth) beside it."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the imports below load models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from agent_server.routing import websocket_urlpatterns as agent_server_sockets  # noqa: E402
from core.serving import RequestThreads, tune_collector  # noqa: E402
from keys.auth import OriginCheckedForCookies, TokenAuthMiddleware  # noqa: E402
from workflows.consumers import NoRouteConsumer  # noqa: E402
from workflows.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": RequestThreads(django_asgi_app),
        "websocket": OriginCheckedForCookies(AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(
            [*websocket_urlpatterns, *agent_server_sockets, re_path(r"", NoRouteConsumer.as_asgi())])))),
    }
)

tune_collector()
