"""Authentication by API key (chatter_project.tokens: stored hashed): `Authorization: Token <key>` or
`Authorization: Bearer <key>` over HTTP, `?token=<key>` on websockets, next to the session cookie; and the scopes
a key is limited to (ApiKeyScope)."""
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import AllowedHostsOriginValidator
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import SAFE_METHODS, BasePermission

from chatter_project.models import API_KEY_SCOPES, ApiToken

ALL_SCOPES = "*"  # a view's key_scope meaning: only a key holding every scope (or a session)


class ApiTokenAuthentication(TokenAuthentication):
    """DRF's `Authorization: Token <key>` (its header parsing and its 401 with `WWW-Authenticate: Token`), with
    keys checked against the stored digests."""

    def authenticate_credentials(self, key: str):
        from chatter_project.tokens import api_token_get, api_token_touch

        token = api_token_get(key=key)
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        api_token_touch(token=token)
        return token.user, token


class ApiKeyBearerAuthentication(ApiTokenAuthentication):
    """The same keys as `Authorization: Bearer <key>` (what OpenAI's clients send)."""

    keyword = "Bearer"


def request_api_key(request) -> ApiToken | None:
    """The API key a request authenticated with, or None (a session)."""
    return request.auth if isinstance(request.auth, ApiToken) else None


def required_scope(request, view) -> str:
    """The scope a key needs for this request: a view's `key_scope_read` (default "read") for reads, its
    `key_scope` (default "runs") for writes."""
    if request.method in SAFE_METHODS:
        return getattr(view, "key_scope_read", "read")
    return getattr(view, "key_scope", "runs")


class ApiKeyScope(BasePermission):
    """A request authenticated by an API key may do only what the key's scopes allow (SPEC: chat, runs, gateway,
    read); a session is not limited."""

    message = "this API key does not have the scope this request needs"

    def has_permission(self, request, view) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            return True
        needed = required_scope(request, view)
        if needed == ALL_SCOPES:
            allowed = set(API_KEY_SCOPES) <= set(token.scopes)
            needed = "every scope"
        else:
            allowed = needed in token.scopes
        if not allowed:
            self.message = f"this API key does not have the scope this request needs ({needed})"
        return allowed


@database_sync_to_async
def _user_for_token(key: str):
    from chatter_project.tokens import api_token_get

    token = api_token_get(key=key)
    if token is None or not token.user.is_active or "read" not in token.scopes:
        return None
    return token.user


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


class BearerKeyScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of `Authorization: Bearer <key>` (drf-spectacular's own extension point;
    `Token <key>` is documented by its built-in one for TokenAuthentication)."""

    target_class = ApiKeyBearerAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "an API key (POST /api/v1/keys/)"}
