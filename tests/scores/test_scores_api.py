"""/api/v1/scores/: numeric, boolean or categorical judgements of your runs and messages; another user's run,
message or score is not yours to see or score."""
import pytest

from scores.models import Score
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db
BASE = "/api/v1/scores/"


@pytest.fixture
def turn(api, alice) -> dict:
    response = api.post("/api/v1/chat/", {"message": "What is 12*7?"}, format="json")
    assert response.status_code == 201
    return response.json()


def test_it_scores_a_run_with_a_number_a_boolean_and_a_category(api, turn):
    run = turn["execution"]["id"]
    bodies = [{"name": "quality", "value": 0.8, "execution": run},
              {"name": "helpful", "value": True, "execution": run, "source": "human", "comment": "thumbs up"},
              {"name": "tone", "value": "friendly", "execution": run}]

    created = [api.post(BASE, body, format="json") for body in bodies]

    assert [r.status_code for r in created] == [201, 201, 201]
    assert [(r.json()["data_type"], r.json()["value"]) for r in created] == [
        ("numeric", 0.8), ("boolean", True), ("categorical", "friendly")]
    listed = api.get(f"{BASE}?execution={run}&ordering=name").json()
    assert [s["name"] for s in listed["results"]] == ["helpful", "quality", "tone"]
    assert listed["results"][0]["comment"] == "thumbs up" and listed["results"][0]["source"] == "human"


def test_a_message_score_also_names_the_run_that_wrote_it(api, turn):
    reply = turn["messages"][1]

    response = api.post(BASE, {"name": "thumbs", "value": False, "message": reply["id"]}, format="json")

    assert response.status_code == 201
    assert response.json()["message"] == reply["id"] and response.json()["execution"] == turn["execution"]["id"]


@pytest.mark.parametrize("body", [
    {"name": "q", "value": 1},  # no target
    {"name": "q", "value": 1, "execution": "RUN", "message": "MESSAGE"},
    {"name": "q", "value": None, "execution": "RUN"},
    {"name": "q", "value": [1], "execution": "RUN"},
    {"name": "q", "value": "", "execution": "RUN"},
    {"name": "q", "value": "x", "data_type": "numeric", "execution": "RUN"},
    {"name": "q", "value": 7, "data_type": "boolean", "execution": "RUN"},
    {"name": "q", "value": 1e300, "execution": "RUN"},
    {"name": "bad name", "value": 1, "execution": "RUN"},
    {"name": "q", "value": 1, "execution": "RUN", "owner": 1},
    {"name": "q", "value": 1, "execution": "00000000-0000-0000-0000-000000000000"},
])
def test_bad_input_is_a_400_and_writes_nothing(api, turn, body):
    body = {key: turn["execution"]["id"] if value == "RUN" else turn["messages"][1]["id"] if value == "MESSAGE"
            else value for key, value in body.items()}

    assert_error(api.post(BASE, body, format="json"), 400, "validation_error")

    assert Score.objects.count() == 0


def test_bob_cannot_score_alices_run_or_message_nor_see_her_scores(api, bob_api, turn):
    score = api.post(BASE, {"name": "q", "value": 1, "execution": turn["execution"]["id"]}, format="json").json()

    for body in ({"name": "q", "value": 0, "execution": turn["execution"]["id"]},
                 {"name": "q", "value": 0, "message": turn["messages"][1]["id"]}):
        assert_error(bob_api.post(BASE, body, format="json"), 400, "validation_error")
    assert_error(bob_api.get(f"{BASE}{score['id']}/"), 404, "not_found")
    assert_error(bob_api.delete(f"{BASE}{score['id']}/"), 404, "not_found")
    assert bob_api.get(BASE).json()["count"] == 0
    assert Score.objects.count() == 1


def test_a_score_can_be_deleted_by_its_owner(api, turn):
    score = api.post(BASE, {"name": "q", "value": 3, "execution": turn["execution"]["id"]}, format="json").json()

    assert api.delete(f"{BASE}{score['id']}/").status_code == 204
    assert Score.objects.count() == 0
