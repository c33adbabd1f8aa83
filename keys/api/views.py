"""/api/v1/keys/: a user's API keys. POST makes one (the key is in the 201, and never again), GET lists them (by
prefix, never the key), DELETE /keys/<id>/ revokes one. Managing keys with a key needs a key holding every scope,
so a key limited to some scopes cannot make itself a wider one. /api/v1/auth/token/: a new token for a username
and password."""
from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.parsers import FormParser, JSONParser
from core.api.serializers import StrictSerializer
from core.api.viewsets import OwnedViewSet
from keys.auth import ALL_SCOPES
from keys.models import API_KEY_SCOPES, ApiToken
from keys.services import api_key_create, api_key_list, api_key_revoke, api_token_create


class ApiKeySerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uid", read_only=True)
    active = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = ("id", "name", "prefix", "scopes", "expires_at", "revoked_at", "last_used_at", "created_at",
                  "active")
        read_only_fields = fields

    def get_active(self, token: ApiToken) -> bool:
        return token.revoked_at is None and (token.expires_at is None or token.expires_at > timezone.now())


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.SerializerMethodField(help_text="the key: shown this once (only its SHA-256 is stored)")

    class Meta(ApiKeySerializer.Meta):
        fields = (*ApiKeySerializer.Meta.fields, "key")
        read_only_fields = fields

    def get_key(self, token: ApiToken) -> str:
        return self.context["key"]


class ApiKeyCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=API_KEY_SCOPES), allow_empty=False,
                                   required=False, help_text="default: every scope")
    expires_at = serializers.DateTimeField(required=False, allow_null=True)

    def validate_scopes(self, value: list[str]) -> list[str]:
        return [scope for scope in API_KEY_SCOPES if scope in value]

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("must be in the future")
        return value


class ApiKeyViewSet(mixins.ListModelMixin, OwnedViewSet):
    queryset = ApiToken.objects.none()
    serializer_class = ApiKeySerializer
    ordering_fields = ("created_at", "last_used_at", "name")
    ordering = ("-created_at",)
    key_scope = ALL_SCOPES
    not_found = "API key not found"
    id_field = "uid"

    def get_queryset(self):
        return api_key_list(user=self.request.user)

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer})
    def create(self, request: Request) -> Response:
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        token, key = api_key_create(user=request.user, name=data["name"], scopes=data.get("scopes", API_KEY_SCOPES),
                                    expires_at=data.get("expires_at"), ip=request.META.get("REMOTE_ADDR"))
        return Response(ApiKeyCreatedSerializer(token, context={"key": key}).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        api_key_revoke(token=self.get_object(), actor=request.user, ip=request.META.get("REMOTE_ADDR"))
        return Response(status=status.HTTP_204_NO_CONTENT)


IssuedTokenSerializer = inline_serializer("IssuedToken", {
    "token": serializers.CharField(help_text="a new API token: shown this once (only its SHA-256 is stored)"),
})


class AuthTokenView(APIView):
    """POST username + password → {"token": key}, a new token each time, shown once; bad credentials → 400
    validation_error."""

    authentication_classes = ()  # a stale session cookie must not demand a CSRF token here
    permission_classes = ()
    parser_classes = (JSONParser, FormParser)  # the size-limited ones

    @extend_schema(request=AuthTokenSerializer, responses={200: IssuedTokenSerializer})
    def post(self, request: Request) -> Response:
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        _, key = api_token_create(user=serializer.validated_data["user"])
        return Response({"token": key})
