"""/api/v1/pricing/: every authenticated user reads the prices; staff add rows and retire them. A change of price
is a new row from its effective_from: past rows and past calls keep theirs."""
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics.models import ModelPrice
from analytics.selectors import price_for_call
from audit.models import AuditEvent
from tests.api.conftest import assert_error
from workflows.models import LLMCall
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db

URL = "/api/v1/pricing/"
NEW_LOCAL_PRICE = {"provider": "local", "model_pattern": r"local-.*", "input_per_million": "10",
                   "output_per_million": "20"}


def test_every_user_reads_the_prices(alice_api):
    response = alice_api.get(URL, {"page_size": 100})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == ModelPrice.objects.count() > 0
    local = next(row for row in body["results"] if row["provider"] == "local" and row["model_pattern"] == "local-.*")
    assert (local["model_pattern"], local["input_per_million"], local["output_per_million"]) == (
        "local-.*", "0.50000000", "1.50000000")
    assert alice_api.get(URL, {"provider": "openai"}).json()["count"] == ModelPrice.objects.filter(
        provider="openai").count()
    assert alice_api.get(f"{URL}{local['id']}/").json() == local


def test_a_new_price_is_a_new_row_and_leaves_history_alone(staff_api, staff, alice):
    before = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hello")).pk)
    old = ModelPrice.objects.get(provider="local", model_pattern="local-.*")

    response = staff_api.post(URL, NEW_LOCAL_PRICE, format="json")

    assert response.status_code == 201, response.content
    new = ModelPrice.objects.get(pk=response.json()["id"])
    assert new.effective_from <= timezone.now() and new.is_active
    assert ModelPrice.objects.get(pk=old.pk).input_per_million == Decimal("0.5")  # untouched
    assert price_for_call(provider="local", model="local-echo-1") == new
    assert price_for_call(provider="local", model="local-echo-1", at=new.effective_from - timedelta(seconds=1)) == old
    call = LLMCall.objects.get(execution=before)
    assert call.cost == (Decimal(call.prompt_tokens) * Decimal("0.5")
                         + Decimal(call.completion_tokens) * Decimal("1.5")) / 10**6  # priced as it was
    after = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hello")).pk)
    call = LLMCall.objects.get(execution=after)
    assert call.cost == (Decimal(call.prompt_tokens) * 10 + Decimal(call.completion_tokens) * 20) / 10**6
    audit = AuditEvent.objects.filter(action="price.changed").last()
    assert (audit.actor, audit.target_id, audit.data["change"]) == (staff, str(new.pk), "created")


def test_a_price_can_start_at_a_given_time(staff_api):
    moment = timezone.now() + timedelta(days=7)
    response = staff_api.post(URL, {**NEW_LOCAL_PRICE, "effective_from": moment.isoformat(),
                                    "cached_input_per_million": "1"}, format="json")

    assert response.status_code == 201, response.content
    assert price_for_call(provider="local", model="local-echo-1").input_per_million == Decimal("0.5")
    assert price_for_call(provider="local", model="local-echo-1", at=moment).input_per_million == Decimal("10")


def test_staff_retire_a_row_but_never_change_its_figures(staff_api):
    price = ModelPrice.objects.get(provider="local", model_pattern="local-.*")

    response = staff_api.patch(f"{URL}{price.pk}/", {"is_active": False}, format="json")
    assert response.status_code == 200 and response.json()["is_active"] is False

    details = assert_error(staff_api.patch(f"{URL}{price.pk}/", {"input_per_million": "9"}, format="json"), 400,
                           "validation_error")
    assert details == [{"path": "input_per_million", "code": "read_only",
                        "message": "input_per_million is fixed once the price exists"}]
    price.refresh_from_db()
    assert price.input_per_million == Decimal("0.5") and price.is_active is False
    assert staff_api.put(f"{URL}{price.pk}/", NEW_LOCAL_PRICE, format="json").status_code == 405


def test_users_cannot_write_prices(alice_api):
    count = ModelPrice.objects.count()
    price = ModelPrice.objects.first()

    assert_error(alice_api.post(URL, NEW_LOCAL_PRICE, format="json"), 403, "permission_denied")
    assert_error(alice_api.patch(f"{URL}{price.pk}/", {"is_active": False}, format="json"), 403,
                 "permission_denied")
    assert ModelPrice.objects.count() == count and ModelPrice.objects.get(pk=price.pk).is_active


@pytest.mark.parametrize(("change", "field"), [
    ({"model_pattern": "gpt-(4"}, "model_pattern"),
    ({"provider": "nope"}, "provider"),
    ({"input_per_million": "-1"}, "input_per_million"),
    ({"input_per_million": "999999999999.99999999"}, "input_per_million"),  # would not read back (core.models)
    ({"cached_input_per_million": "10000000.00000001"}, "cached_input_per_million"),
    ({"output_per_million": "10000001"}, "output_per_million"),
    ({"provider": "mcp", "model_pattern": "a__b", "per_call": "999999999999.99999999"}, "per_call"),
    ({"output_per_million": "abc"}, "output_per_million"),
    ({"effective_from": "soon"}, "effective_from"),
    ({"cost": "1"}, "cost"),
])
def test_a_bad_price_is_a_400_and_writes_nothing(staff_api, change, field):
    count = ModelPrice.objects.count()

    details = assert_error(staff_api.post(URL, {**NEW_LOCAL_PRICE, **change}, format="json"), 400,
                           "validation_error")

    assert field in str(details)
    assert ModelPrice.objects.count() == count


def test_it_needs_a_login(client):
    assert_error(client.get(URL), 401, "not_authenticated")


def test_an_unknown_price_is_a_404(alice_api):
    assert_error(alice_api.get(f"{URL}999999/"), 404, "not_found")
    assert_error(alice_api.get(f"{URL}abc/"), 404, "not_found")


def test_the_price_in_force_is_the_one_a_run_is_charged_at(alice_api, staff_api, alice):
    staff_api.post(URL, {"provider": "*", "model_pattern": r"local-.*", "input_per_million": "7",
                         "output_per_million": "9", "effective_from": (timezone.now() - timedelta(seconds=2))
                         .isoformat()}, format="json")  # an older wildcard row: the newer one wins
    newer = staff_api.post(URL, {**NEW_LOCAL_PRICE, "effective_from": (timezone.now() - timedelta(seconds=1))
                                 .isoformat()}, format="json").json()
    run = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hello")).pk)
    call = LLMCall.objects.get(execution=run)

    response = alice_api.get(f"{URL}in-force/", {"provider": call.provider, "model": call.model})

    assert response.status_code == 200
    assert response.json() == alice_api.get(f"{URL}{newer['id']}/").json()
    price = response.json()
    assert call.cost == (Decimal(price["input_per_million"]) * call.prompt_tokens
                         + Decimal(price["output_per_million"]) * call.completion_tokens) / 1_000_000


def test_the_price_in_force_needs_provider_and_model_and_may_be_none(alice_api):
    details = assert_error(alice_api.get(f"{URL}in-force/", {"provider": "local"}), 400, "validation_error")
    assert [d["path"] for d in details] == ["model"]
    assert_error(alice_api.get(f"{URL}in-force/", {"provider": "nobody", "model": "nothing"}), 404, "not_found")
