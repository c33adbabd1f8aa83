"""Endpoints that belong to no app: API tokens."""
from rest_framework.authtoken.views import ObtainAuthToken


class AuthTokenView(ObtainAuthToken):
    """POST username + password → {"token": key}; bad credentials → 400 validation_error."""

    authentication_classes = ()  # a stale session cookie must not demand a CSRF token here
    permission_classes = ()
