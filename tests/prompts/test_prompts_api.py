"""/api/v1/prompts/: named prompts, immutable versions, labels (latest moves by itself; protected ones are staff's),
fetch by label or version, rollback as an audited label move; another user's prompt is a 404."""
import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from prompts.models import Prompt, PromptLabel, PromptVersion
from tests.api.conftest import assert_error
from tests.prompts.factories import PromptFactory, versions_add

pytestmark = pytest.mark.django_db
BASE = "/api/v1/prompts/"


def labels_of(body: dict) -> dict:
    return {label["name"]: label["version"] for label in body["labels"]}


def prompt_rows() -> tuple[int, int, int]:
    return Prompt.objects.count(), PromptVersion.objects.count(), PromptLabel.objects.count()


def test_it_creates_a_prompt_with_version_1_labelled_latest_and_as_asked(api, alice):
    response = api.post(BASE, {"name": "support", "prompt": "Help with {{product}}.", "labels": ["production"],
                               "config": {"model": "local-echo-1", "temperature": 0.3}}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "support" and body["latest_version"] == 1
    assert labels_of(body) == {"latest": 1, "production": 1}
    version = api.get(f"{BASE}support/versions/1/").json()
    assert version["prompt"] == "Help with {{product}}." and version["variables"] == ["product"]
    assert version["config"] == {"model": "local-echo-1", "temperature": 0.3}
    assert AuditEvent.objects.filter(action="prompt.created", actor=alice).count() == 1


def test_every_save_is_a_new_version_and_latest_follows_it(api, alice):
    PromptFactory(owner=alice, name="support", labels=["production"])

    response = api.post(f"{BASE}support/versions/", {"prompt": "Second.", "commit_message": "shorter"}, format="json")

    assert response.status_code == 201 and response.json()["version"] == 2
    assert labels_of(api.get(f"{BASE}support/").json()) == {"latest": 2, "production": 1}
    listed = api.get(f"{BASE}support/versions/").json()
    assert [v["version"] for v in listed["results"]] == [2, 1] and listed["results"][0]["commit_message"] == "shorter"


def test_a_chat_prompt_keeps_its_messages_and_fills_variables_when_fetched(api, alice):
    messages = [{"role": "system", "content": "You sell {{product}}."}, {"role": "user", "content": "Hi"}]
    assert api.post(BASE, {"name": "sales", "type": "chat", "prompt": messages}, format="json").status_code == 201

    fetched = api.get(f"{BASE}sales/resolve/?label=latest").json()

    assert fetched["type"] == "chat" and fetched["prompt"] == messages and fetched["variables"] == ["product"]


def test_it_fetches_by_label_defaulting_to_production_or_by_version(api, alice):
    prompt = PromptFactory(owner=alice, name="support", labels=["production"])
    versions_add(prompt, 2)

    assert api.get(f"{BASE}support/resolve/").json()["version"] == 1
    assert api.get(f"{BASE}support/resolve/?label=latest").json()["version"] == 3
    assert api.get(f"{BASE}support/resolve/?version=2").json()["version"] == 2
    assert_error(api.get(f"{BASE}support/resolve/?label=staging"), 404, "not_found")
    assert_error(api.get(f"{BASE}support/resolve/?version=9"), 404, "not_found")
    assert_error(api.get(f"{BASE}support/resolve/?version=1&label=latest"), 400, "validation_error")


def test_a_rollback_is_a_label_move_and_it_is_audited(api, alice):
    prompt = PromptFactory(owner=alice, name="support")
    versions_add(prompt, 1)
    assert api.put(f"{BASE}support/labels/production/", {"version": 2}, format="json").status_code == 200

    response = api.put(f"{BASE}support/labels/production/", {"version": 1}, format="json")

    assert response.status_code == 200 and response.json()["version"] == 1
    assert api.get(f"{BASE}support/resolve/?label=production").json()["version"] == 1
    moves = AuditEvent.objects.filter(action="prompt.label_moved").order_by("id")
    assert [(m.data["from"], m.data["to"]) for m in moves] == [
        (None, {"version": 2}), ({"version": 2}, {"version": 1})]
    assert {m.actor_id for m in moves} == {alice.pk} and {m.target_id for m in moves} == {str(prompt.pk)}
    assert audit_chain_verify().valid


def test_latest_cannot_be_moved_or_deleted_by_hand(api, alice):
    prompt = PromptFactory(owner=alice, name="support")
    versions_add(prompt, 1)

    assert_error(api.put(f"{BASE}support/labels/latest/", {"version": 1}, format="json"), 400, "validation_error")
    assert_error(api.delete(f"{BASE}support/labels/latest/"), 400, "validation_error")
    assert prompt.labels.get(name="latest").version.version == 2


def test_a_protected_label_is_moved_only_by_staff(api, alice, staff):
    prompt = PromptFactory(owner=alice, name="support", labels=["production"])
    versions_add(prompt, 1)
    assert_error(api.put(f"{BASE}support/labels/production/", {"version": 1, "protected": True}, format="json"),
                 403, "permission_denied")
    PromptLabel.objects.filter(prompt=prompt, name="production").update(protected=True)  # as staff set it

    refused = api.put(f"{BASE}support/labels/production/", {"version": 2}, format="json")

    assert_error(refused, 403, "permission_denied")
    assert_error(api.delete(f"{BASE}support/labels/production/"), 403, "permission_denied")
    assert prompt.labels.get(name="production").version.version == 1
    assert not AuditEvent.objects.filter(action="prompt.label_moved", data__label="production",
                                         data__to={"version": 2}).exists()


def test_staff_protect_and_move_a_protected_label_with_the_cli(alice, staff):
    from io import StringIO

    from django.core.management import call_command

    prompt = PromptFactory(owner=staff, name="ops", labels=["production"])
    versions_add(prompt, 1)
    out = StringIO()
    call_command("prompt", "--user", "root", "label", "ops", "production", "2", "--protect", stdout=out)
    assert "ops production → v2 (protected)" in out.getvalue()
    assert prompt.labels.get(name="production").protected


def test_a_label_may_point_at_a_split(api, alice):
    prompt = PromptFactory(owner=alice, name="support")
    versions_add(prompt, 1)

    response = api.put(f"{BASE}support/labels/production/", {"split": {"1": 90, "2": 10}}, format="json")

    assert response.status_code == 200 and response.json()["split"] == {"1": 90, "2": 10}
    assert response.json()["version"] is None
    assert api.get(f"{BASE}support/resolve/").json()["version"] in (1, 2)


@pytest.mark.parametrize("body", [
    {"name": "bad name", "prompt": "x"},
    {"name": "", "prompt": "x"},
    {"name": "ok", "prompt": ""},
    {"name": "ok", "prompt": ["not", "text"]},
    {"name": "ok", "type": "chat", "prompt": "not a list"},
    {"name": "ok", "type": "chat", "prompt": [{"role": "wizard", "content": "x"}]},
    {"name": "ok", "type": "chat", "prompt": [{"role": "user"}]},
    {"name": "ok", "prompt": "x", "config": {"temperature": 9}},
    {"name": "ok", "prompt": "x", "config": {"colour": "blue"}},
    {"name": "ok", "prompt": "x", "labels": ["latest"]},
    {"name": "ok", "prompt": "x", "version": 3},
])
def test_bad_input_is_a_400_and_writes_nothing(api, alice, body):
    before = prompt_rows(), AuditEvent.objects.count()

    assert_error(api.post(BASE, body, format="json"), 400, "validation_error")

    assert (prompt_rows(), AuditEvent.objects.count()) == before


@pytest.mark.parametrize("body", [{}, {"version": 1, "split": {"1": 50, "2": 50}}, {"version": 7},
                                  {"split": {"1": 50, "9": 50}}, {"split": {"1": 0, "2": 0}}, {"split": {"1": 100}},
                                  {"split": {"x": 1, "1": 1}}, {"version": "one"}])
def test_a_bad_label_move_is_a_400_and_moves_nothing(api, alice, body):
    prompt = PromptFactory(owner=alice, name="support")
    versions_add(prompt, 1)
    before = prompt_rows(), AuditEvent.objects.count()

    assert_error(api.put(f"{BASE}support/labels/production/", body, format="json"), 400, "validation_error")

    assert (prompt_rows(), AuditEvent.objects.count()) == before


@pytest.mark.parametrize("weights", [{"1": 5, "01": 0}, {"1": 50, "01": 50, "2": 0}, {"1": 1, "\u00b2": 1},
                                     {"1": 1, "1" * 5000: 1}])
def test_a_split_naming_one_version_twice_or_no_version_is_a_400_naming_split(api, alice, weights):
    """"1" and "01" are one version: merged, {"1": 5, "01": 0} was kept as {"1": 0}, a split no draw can use."""
    prompt = PromptFactory(owner=alice, name="support")
    versions_add(prompt, 1)
    before = prompt_rows(), AuditEvent.objects.count()

    details = assert_error(api.put(f"{BASE}support/labels/production/", {"split": weights}, format="json"), 400,
                           "validation_error")

    assert [item["path"] for item in details] == ["split"]
    assert (prompt_rows(), AuditEvent.objects.count()) == before


def test_a_split_key_is_kept_as_its_version_number(api, alice):
    prompt = PromptFactory(owner=alice, name="support")
    versions_add(prompt, 1)

    response = api.put(f"{BASE}support/labels/production/", {"split": {"01": 90, "2": 10}}, format="json")

    assert response.status_code == 200 and response.json()["split"] == {"1": 90, "2": 10}
    assert api.get(f"{BASE}support/resolve/").json()["version"] in (1, 2)


def test_a_name_already_used_is_a_400_but_another_user_may_use_it(api, bob_api, alice):
    PromptFactory(owner=alice, name="support")

    assert_error(api.post(BASE, {"name": "support", "prompt": "x"}, format="json"), 400, "validation_error")
    assert bob_api.post(BASE, {"name": "support", "prompt": "Bob's."}, format="json").status_code == 201
    assert api.get(f"{BASE}support/resolve/?label=latest").json()["prompt"] == PromptFactory.content


def test_another_users_prompt_is_a_404_everywhere(bob_api, alice):
    PromptFactory(owner=alice, name="secret", labels=["production"])
    before = prompt_rows(), AuditEvent.objects.count()

    assert bob_api.get(BASE).json()["count"] == 0
    for response in (
        bob_api.get(f"{BASE}secret/"), bob_api.get(f"{BASE}secret/versions/"),
        bob_api.get(f"{BASE}secret/versions/1/"), bob_api.get(f"{BASE}secret/resolve/"),
        bob_api.post(f"{BASE}secret/versions/", {"prompt": "mine now"}, format="json"),
        bob_api.put(f"{BASE}secret/labels/production/", {"version": 1}, format="json"),
        bob_api.delete(f"{BASE}secret/labels/production/"),
        bob_api.patch(f"{BASE}secret/", {"description": "x"}, format="json"),
        bob_api.delete(f"{BASE}secret/"),
    ):
        assert_error(response, 404, "not_found")
    assert (prompt_rows(), AuditEvent.objects.count()) == before


def test_versions_are_immutable(alice):
    prompt = PromptFactory(owner=alice)
    version = prompt.versions.get()
    version.content = "changed"

    with pytest.raises(Exception, match="immutable"):
        version.save()
    assert PromptVersion.objects.get(pk=version.pk).content == PromptFactory.content


def test_deleting_a_prompt_is_audited_and_takes_its_versions(api, alice):
    PromptFactory(owner=alice, name="support")

    assert api.delete(f"{BASE}support/").status_code == 204

    assert prompt_rows() == (0, 0, 0)
    assert AuditEvent.objects.filter(action="prompt.deleted", data__name="support").count() == 1


def test_the_list_is_filtered_and_needs_authentication(api, alice):
    PromptFactory(owner=alice, name="support")
    PromptFactory(owner=alice, name="sales")

    assert [p["name"] for p in api.get(f"{BASE}?name=sup").json()["results"]] == ["support"]
    assert APIClient().get(BASE).status_code == 401


def test_staff_protect_a_users_label_in_the_admin_and_the_owner_can_no_longer_move_it(api, alice, staff, client):
    prompt = PromptFactory(owner=alice, name="support", labels=["production"])
    versions_add(prompt, 1)
    client.force_login(staff)
    labels = list(prompt.labels.values_list("pk", flat=True))

    response = client.post("/admin/prompts/promptlabel/", {"action": "protect", "_selected_action": labels})

    assert response.status_code == 302
    assert dict(prompt.labels.values_list("name", "protected")) == {"latest": False, "production": True}
    assert AuditEvent.objects.filter(action="prompt.label_moved", actor=staff, data__protected=True).count() == 1
    assert_error(api.put(f"{BASE}support/labels/production/", {"version": 2}, format="json"), 403,
                 "permission_denied")


def test_a_split_stored_as_one_version_before_the_check_gives_that_version(api, alice):
    """{"1": 5, "01": 0} was kept as {"1": 0} before 8e15600: a split no draw could use, every resolve a 500. A split
    that names one version gives it, whatever its weight."""
    prompt = PromptFactory(owner=alice, name="support")
    versions_add(prompt, 1)
    api.put(f"{BASE}support/labels/production/", {"split": {"1": 90, "2": 10}}, format="json")
    PromptLabel.objects.filter(prompt=prompt, name="production").update(split={"1": 0})

    resolved = api.get(f"{BASE}support/resolve/")

    assert resolved.status_code == 200, resolved.content
    assert resolved.json()["version"] == 1 and resolved.json()["label"] == "production"


def test_a_split_stored_with_no_weight_is_refused_naming_the_label(api, alice):
    """A split of several versions whose weights are all 0 (kept so before 8e15600) gives none: a 409 that says which
    label to set again, not a 500."""
    prompt = PromptFactory(owner=alice, name="support")
    versions_add(prompt, 1)
    api.put(f"{BASE}support/labels/production/", {"split": {"1": 90, "2": 10}}, format="json")
    PromptLabel.objects.filter(prompt=prompt, name="production").update(split={"1": 0, "2": 0})

    refused = api.get(f"{BASE}support/resolve/")

    assert_error(refused, 409, "conflict")
    assert "production" in refused.json()["error"]["message"]


def test_the_migration_points_a_split_of_one_version_at_it_and_leaves_the_rest(api, alice):
    from importlib import import_module

    from django.apps import apps

    prompt = PromptFactory(owner=alice, name="support")
    versions_add(prompt, 1)
    for name, split in (("production", {"1": 0}), ("staging", {"1": 0, "2": 0}), ("canary", {"1": 90, "2": 10})):
        api.put(f"{BASE}support/labels/{name}/", {"split": {"1": 90, "2": 10}}, format="json")
        PromptLabel.objects.filter(prompt=prompt, name=name).update(split=split)

    import_module("prompts.migrations.0002_split_of_one_version_repaired").split_of_one_version_repaired(apps, None)

    shown = api.get(f"{BASE}support/").json()["labels"]
    labels = {label["name"]: (label["version"], label["split"]) for label in shown}
    assert labels["production"] == (1, {}) and labels["staging"] == (None, {"1": 0, "2": 0})
    assert labels["canary"] == (None, {"1": 90, "2": 10})
