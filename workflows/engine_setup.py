"""The engine's settings (engine.settings) filled from Django's: as the process starts (WorkflowsConfig.ready)
and again whenever a setting changes (override_settings, the tests' `settings`), so the engine reads what Django
has. The engine is also handed the shared cache (routing's counters), the secrets its errors scrub and the tracing
hooks of its HTTP clients."""
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from core.secrets import secrets_read
from core.tracing import outbound_hooks
from engine.routing import DeploymentsInvalid, routing_table
from engine.settings import settings_update


def engine_configure(**kwargs) -> None:
    """Hand the engine its settings (also the receiver of Django's `setting_changed`: any setting may be one of
    those read here, a secret included, and reading them all takes microseconds)."""
    settings_update(
        default_provider=settings.CHATTER_DEFAULT_PROVIDER,
        default_model=settings.CHATTER_DEFAULT_MODEL,
        provider_default_models=settings.CHATTER_PROVIDER_DEFAULT_MODELS,
        execution_timeout_s=settings.CHATTER_EXECUTION_TIMEOUT_S,
        provider_timeout_s=settings.CHATTER_PROVIDER_TIMEOUT_S,
        provider_max_retries=settings.CHATTER_PROVIDER_MAX_RETRIES,
        local_token_delay_ms=settings.CHATTER_LOCAL_TOKEN_DELAY_MS,
        openai_api_key=settings.OPENAI_API_KEY,
        openai_base_url=settings.OPENAI_BASE_URL,
        anthropic_api_key=settings.ANTHROPIC_API_KEY,
        deployments=settings.CHATTER_DEPLOYMENTS,
        graphs=settings.CHATTER_GRAPHS,
        secrets=secrets_read(),
        shared_cache=cache,
        outbound_hooks=outbound_hooks,
    )


def deployments_check() -> None:
    """Read and check the deployments file (CHATTER_DEPLOYMENTS) as the process starts: a bad one stops it, with a
    message naming the setting, the file and every problem."""
    try:
        routing_table()
    except DeploymentsInvalid as exc:
        raise ImproperlyConfigured(f"CHATTER_DEPLOYMENTS ({exc.path}): {exc.problems}") from None
