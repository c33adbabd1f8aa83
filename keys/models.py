"""API keys: the one credential of the API, websockets and compatible surfaces (only their SHA-256 is stored)."""
import uuid

from django.conf import settings
from django.db import models

from core.cache import RenewsHotReads

API_KEY_SCOPES = ("chat", "runs", "gateway", "read", "tools", "knowledge")


def all_scopes() -> list[str]:
    return list(API_KEY_SCOPES)


class ApiTokenQuerySet(RenewsHotReads):
    unread = frozenset({"last_used_at"})  # a key's last use: no memo reads it


class ApiToken(models.Model):
    """An API key (`Authorization: Token <key>` or `Bearer <key>`, websockets `?token=<key>`). Only the SHA-256 of
    the key is stored: the key is shown once, when it is made (POST /api/v1/keys/, POST /api/v1/auth/token/,
    `manage.py create_api_token`), and a stolen database authenticates no one. `prefix` (the key's first
    characters) tells keys apart. A key is named, limited to its `scopes`, and refused once revoked or expired;
    tokens from auth/token/ are keys with every scope and no name. `last_used_at` is kept to the minute."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)  # the public id (/api/v1/keys/<uid>/)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=8, editable=False)
    name = models.CharField(max_length=100, blank=True, default="")
    scopes = models.JSONField(default=all_scopes)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ApiTokenQuerySet.as_manager()  # (a bare update renews the processes' memo of keys: core.cache)

    class Meta:
        db_table = "chatter_project_apitoken"  # made by chatter_project's migrations, before this app had it
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        label = f" {self.name}" if self.name else ""
        return f"{self.prefix}…{label} ({self.user})"
