"""Authentication by API token (chatter_project.tokens: stored hashed): `Authorization: Token <key>` over HTTP,
`?token=<key>` on websockets, next to the session cookie."""
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import AllowedHostsOriginValidator
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed


class ApiTokenAuthentication(TokenAuthentication):
    """DRF's `Authorization: Token <key>` (its header parsing and its 401 with `WWW-Authenticate: Token`), with
    keys checked against the stored digests."""

    def authenticate_credentials(self, key: str):
        from chatter_project.tokens import api_token_get

        token = api_token_get(key=key)
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        return token.user, token


@database_sync_to_async
def _user_for_token(key: str):
    from chatter_project.tokens import api_token_get

    token = api_token_get(key=key)
    return token.user if token is not None and token.user.is_active else None


class TokenAuthMiddleware(BaseMiddleware):
    """Sets scope["user"] from `?token=` when the session did not authenticate the connection."""

    async def __call__(self, scope, receive, send):
        user = scope.get("user")
        if user is None or not user.is_authenticated:
            key = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0]
            if key:
                found = await _user_for_token(key)
                if found is not None:
                    scope = {**scope, "user": found}
        return await super().__call__(scope, receive, send)


class OriginCheckedForCookies:
    """Websockets: the Origin check (Channels' AllowedHostsOriginValidator) guards cookie sessions against other
    sites' pages, which a browser sends the cookie from (with their Origin: every browser sends one). A
    handshake with neither cookies nor an Origin is a program's, authenticating with a token it holds itself
    (`?token=`): it is not asked for an Origin. Any Origin that is sent must be an allowed host."""

    def __init__(self, inner):
        self.inner = inner
        self.checked = AllowedHostsOriginValidator(inner)

    async def __call__(self, scope, receive, send):
        if any(name in (b"cookie", b"origin") for name, _ in scope.get("headers", ())):
            return await self.checked(scope, receive, send)
        return await self.inner(scope, receive, send)
