"""Authentication by API key (keys.services: stored hashed): `Authorization: Token <key>` or
`Authorization: Bearer <key>` over HTTP, `?token=<key>` on websockets, next to the session cookie; and the scopes
a key is limited to (ApiKeyScope)."""
import base64
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import AllowedHostsOriginValidator
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import SAFE_METHODS, BasePermission

from keys.models import API_KEY_SCOPES, ApiToken

ALL_SCOPES = "*"  # a view's key_scope meaning: only a key holding every scope (or a session)


def api_key_authenticate(key: str) -> ApiToken:
    """The live key (revoked and expired ones are not) that `key` is, of an active user, noted as used; else
    AuthenticationFailed. How every surface authenticates a key: DRF's classes below (/api/v1/, /v1/, /langgraph/)
    and the websockets (TokenAuthMiddleware)."""
    from keys.services import api_token_get, api_token_touch

    token = api_token_get(key=key)
    if token is None:
        raise AuthenticationFailed("Invalid token.")
    if not token.user.is_active:
        raise AuthenticationFailed("User inactive or deleted.")
    api_token_touch(token=token)
    return token


class ApiTokenAuthentication(TokenAuthentication):
    """DRF's `Authorization: Token <key>` (its header parsing and its 401 with `WWW-Authenticate: Token`), with
    keys checked against the stored digests."""

    def authenticate_credentials(self, key: str):
        token = api_key_authenticate(key)
        return token.user, token


class ApiKeyBearerAuthentication(ApiTokenAuthentication):
    """The same keys as `Authorization: Bearer <key>` (what OpenAI's clients send)."""

    keyword = "Bearer"


class ApiKeyHeaderAuthentication(BaseAuthentication):
    """The same keys in the `x-api-key` header, as LangGraph's SDKs send them (/langgraph/)."""

    header = "x-api-key"

    def authenticate(self, request):
        key = request.headers.get(self.header, "")
        if not key:
            return None  # the next class reads `Authorization`
        token = api_key_authenticate(key)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return f'ApiKey header="{self.header}"'  # a challenge, so a request without a key is a 401 (DRF)


def request_api_key(request) -> ApiToken | None:
    """The API key a request authenticated with, or None (a session)."""
    return request.auth if isinstance(request.auth, ApiToken) else None


def required_scope(request, view) -> str:
    """The scope a key needs for this request: a view's `key_scope_read` (default "read") for reads, its
    `key_scope` (default "runs") for writes."""
    if request.method in SAFE_METHODS:
        return getattr(view, "key_scope_read", "read")
    return getattr(view, "key_scope", "runs")


def key_scope_refusal(token: ApiToken | None, needed: str) -> str | None:
    """Why `token` may not do what needs the scope `needed` (ALL_SCOPES: every one), or None when it may; a request
    without a key (a session) is not limited. The one scope rule of every surface: ApiKeyScope (/api/v1/, /v1/,
    /langgraph/) and the websockets (TokenAuthMiddleware)."""
    if token is None:
        return None
    if needed == ALL_SCOPES:
        if set(API_KEY_SCOPES) <= set(token.scopes):
            return None
        needed = "every scope"
    elif needed in token.scopes:
        return None
    return f"this API key does not have the scope this request needs ({needed})"


class ApiKeyScope(BasePermission):
    """A request authenticated by an API key may do only what the key's scopes allow (docs/api/rest.md#api-keys: chat,
    runs, gateway, read); a session is not limited."""

    message = "this API key does not have the scope this request needs"

    def has_permission(self, request, view) -> bool:
        refusal = key_scope_refusal(request_api_key(request), required_scope(request, view))
        if refusal is not None:
            self.message = refusal
        return refusal is None


@database_sync_to_async
def _websocket_key(key: str) -> ApiToken | None:
    try:
        token = api_key_authenticate(key)
    except AuthenticationFailed:
        return None
    return token if key_scope_refusal(token, "read") is None else None


def handshake_key(scope) -> str:
    """The API key a websocket handshake carries: `?token=`, or (a program's, which sets headers) `x-api-key`, or
    `Authorization: Token|Bearer <key>` or `Basic` with the key as the user name (what a client sends for a
    `ws://<key>@host/…` URL, as LangGraph's SDK builds its socket's URL from its server URL)."""
    key = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0]
    if key:
        return key
    headers = {name.lower(): value.decode("latin-1") for name, value in scope.get("headers", ())}
    if headers.get(b"x-api-key", ""):
        return headers[b"x-api-key"]
    scheme, _, value = headers.get(b"authorization", "").partition(" ")
    if scheme.lower() in ("token", "bearer"):
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            return ""
    return ""


class TokenAuthMiddleware(BaseMiddleware):
    """Sets scope["user"] from the handshake's key (handshake_key) when the session did not authenticate the
    connection, scope["api_key"] to the key's id (uid), by which its sockets are closed when it is revoked, and
    scope["api_key_expires_at"] to its expiry (None: none), when they are closed too
    (workflows.realtime.access_ended)."""

    async def __call__(self, scope, receive, send):
        user = scope.get("user")
        if user is None or not user.is_authenticated:
            key = handshake_key(scope)
            if key:
                token = await _websocket_key(key)
                if token is not None:
                    scope = {**scope, "user": token.user, "api_key": str(token.uid),
                             "api_key_expires_at": token.expires_at}
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


class ApiKeyHeaderScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of `x-api-key: <key>`, as LangGraph's SDKs send it (/langgraph/)."""

    target_class = ApiKeyHeaderAuthentication
    name = "apiKeyHeader"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": ApiKeyHeaderAuthentication.header,
                "description": "an API key (POST /api/v1/keys/), as LangGraph's SDKs send it"}
