"""/api/v1/keys/<id>/limits/: a key's gateway limits (gateway.limits). The key's owner reads and sets them, unless
staff set them (then the owner only reads); staff manage any key's. Changing them needs a key holding every scope
(or a session), as managing keys does; every change is audited."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway.api.serializers import KeyLimitsOutSerializer, KeyLimitsSerializer
from gateway.limits import key_limits_remove, key_limits_set
from gateway.models import KeyLimits
from gateway.selectors import key_for_limits_get, key_limits_get
from keys.auth import ALL_SCOPES
from keys.models import ApiToken


def _shown(key: ApiToken, limits: KeyLimits | None) -> dict:
    return KeyLimitsOutSerializer({
        "api_key": key.uid, "allowed_models": limits.allowed_models if limits else [],
        "rpm": limits.rpm if limits else None, "tpm": limits.tpm if limits else None,
        "per_model": limits.per_model if limits else {}, "set_by_staff": bool(limits and limits.set_by_staff),
        "updated_at": limits.updated_at if limits else None}).data


class KeyLimitsView(APIView):
    key_scope = ALL_SCOPES

    @extend_schema(responses={200: KeyLimitsOutSerializer})
    def get(self, request: Request, uid) -> Response:
        key = key_for_limits_get(user=request.user, uid=uid)
        return Response(_shown(key, key_limits_get(api_key=key)))

    @extend_schema(request=KeyLimitsSerializer, responses={200: KeyLimitsOutSerializer})
    def put(self, request: Request, uid) -> Response:
        key = key_for_limits_get(user=request.user, uid=uid)
        serializer = KeyLimitsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        limits = key_limits_set(api_key=key, allowed_models=data.get("allowed_models") or [], rpm=data.get("rpm"),
                                tpm=data.get("tpm"), per_model=data.get("per_model") or {},
                                actor=request.user, ip=request.META.get("REMOTE_ADDR"))
        return Response(_shown(key, limits))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, uid) -> Response:
        key_limits_remove(api_key=key_for_limits_get(user=request.user, uid=uid), actor=request.user,
                          ip=request.META.get("REMOTE_ADDR"))
        return Response(status=status.HTTP_204_NO_CONTENT)
