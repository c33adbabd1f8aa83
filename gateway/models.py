from django.core.validators import MinValueValidator
from django.db import models

from core.cache import RenewsHotReads

from keys.models import ApiToken


class KeyLimits(models.Model):
    """What an API key may do through the gateway beyond its scopes: the models it may call (none listed: any), and
    how many requests and tokens a minute, in all (`rpm`, `tpm`) and per model (`per_model`: {model: {"rpm": n,
    "tpm": n}}). Enforced across server processes through the shared cache (gateway.limits)."""

    api_key = models.OneToOneField(ApiToken, on_delete=models.CASCADE, related_name="gateway_limits")
    allowed_models = models.JSONField(default=list, blank=True)
    rpm = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    tpm = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    per_model = models.JSONField(default=dict, blank=True)
    # Set by staff (or an operator's shell): the key's owner may read them, not change or remove them.
    set_by_staff = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RenewsHotReads.as_manager()  # (a bare update renews the processes' memo of limits: core.cache)

    class Meta:
        verbose_name = "gateway key limits"
        verbose_name_plural = "gateway key limits"

    def __str__(self) -> str:
        return f"limits of {self.api_key}"
