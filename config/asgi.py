"""The ASGI entry point: Django for HTTP, Channels for websockets (session auth, origin-checked, second factor)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

# Django must be set up before anything that imports models (consumers, auth middleware).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from apps.users.two_factor import TwoFactorWebsocketMiddleware  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # A session still owing its second factor gets no websocket (apps/users/two_factor.py).
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(TwoFactorWebsocketMiddleware(URLRouter(websocket_urlpatterns)))
        ),
    }
)
