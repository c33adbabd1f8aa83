"""ASGI entry point: HTTP through Django's own ASGI handler (on request threads that outlive their request:
core/serving.py), websockets through Channels (session or token auth) beside it."""
import os
from importlib import import_module

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the imports below load models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
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

# Every route's view is loaded now, not by the first request (295-344 ms where later ones took 25-45, daphne on
# SQLite, quiet), and is frozen out of the collector's passes with the rest of what the process keeps.
import_module(settings.ROOT_URLCONF)
tune_collector()
