"""The engine's settings come from Django's (workflows.engine_setup): as the process starts and at every change
of a setting, so override_settings and the tests' `settings` fixture reach the engine."""
import pytest
from django.test import override_settings

from core.errors import InvalidInput
from engine.settings import settings as engine_settings

pytestmark = pytest.mark.one_database

SECRET = "sk-engine-setup-not-a-real-key"


def test_item_04_a_changed_setting_reaches_the_engine_and_leaves_with_the_change():
    before = (engine_settings.provider_timeout_s, engine_settings.openai_base_url, engine_settings.openai_api_key)
    with override_settings(CHATTER_PROVIDER_TIMEOUT_S=7, OPENAI_BASE_URL="http://127.0.0.1:9/v1",
                           OPENAI_API_KEY=SECRET):
        assert (engine_settings.provider_timeout_s, engine_settings.openai_base_url) == (7, "http://127.0.0.1:9/v1")
        assert InvalidInput(f"upstream said: bad key {SECRET}").message == "upstream said: bad key [redacted]"
    assert (engine_settings.provider_timeout_s, engine_settings.openai_base_url,
            engine_settings.openai_api_key) == before
    assert SECRET in InvalidInput(SECRET).message  # no longer a configured secret


def test_item_04_the_engine_is_given_djangos_cache_and_the_tracing_hooks():
    from django.core.cache import cache

    from core.tracing import outbound_hooks

    assert engine_settings.shared_cache is cache and engine_settings.outbound_hooks is outbound_hooks
