"""workflows.pricing: runs ask it for prices; the app that keeps them (analytics) registers its lookup at start-up."""
import pytest
from django.core.exceptions import ImproperlyConfigured

from analytics.models import ModelPrice
from workflows import pricing


@pytest.mark.django_db
def test_it_answers_with_the_prices_analytics_keeps():
    price = pricing.price_for_call(provider="local", model="local-echo-1")

    assert isinstance(price, ModelPrice) and price.provider == "local"
    assert pricing.price_for_call(provider="local", model="no-such-model") is None


def test_without_a_registered_lookup_it_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(pricing, "_lookup", None)

    with pytest.raises(ImproperlyConfigured, match="no price lookup is registered"):
        pricing.price_for_call(provider="local", model="local-echo-1")
