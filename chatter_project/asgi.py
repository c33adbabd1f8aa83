"""ASGI entry point: HTTP through Django, websockets through Channels (session or token auth)."""
import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application does, with the handler below

from chatter_project.handlers import ThreadReusingASGIHandler  # noqa: E402  (needs Django set up)

django_asgi_app = ThreadReusingASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from chatter_project.auth import TokenAuthMiddleware  # noqa: E402
from workflows.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))),
    }
)

# The objects loaded so far (Django, DRF, LangChain, pydantic: ~260k) live as long as the server: keep them out of
# the garbage collector's full passes, which otherwise traversed them all every ~45 chat turns (a 140 ms pause, B5).
gc.freeze()
