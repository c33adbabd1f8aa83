"""In headless Chromium against a real daphne server: thumbs and a comment on a message of the live page become
a score of that message; the admin's comparison page puts two experiments side by side."""
import pytest

from conversations.models import Message
from experiments.services import experiment_create, experiment_run
from scores.models import Score
from tests.browser import needs_chromium
from tests.test_live_page import live_server_url, logged_in_page, send, wait_until_finished  # noqa: F401

pytest_plugins = ["tests.fixtures_browser"]
pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True)]


def test_thumbs_and_a_comment_on_the_live_page_become_a_score_of_the_message(live_server_url, alice, new_page):
    with logged_in_page(new_page, live_server_url) as (page, errors):
        send(page, "What is 12*7?")
        wait_until_finished(page)
        reply = page.locator("[data-testid=run-message]").filter(has=page.locator("[data-testid=thumbs]"))
        # The lines are drawn again once the saved messages are read back (with their content): wait for that.
        reply.get_by_test_id("run-message-content").filter(has_text="84").wait_for()
        reply.get_by_test_id("thumbs-comment").fill("spot on")
        reply.get_by_test_id("thumbs-up").click()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=thumbs-note]').textContent.startsWith('thanks')")
        message_id = reply.get_attribute("data-message-id")
        assert errors == []

    message = Message.objects.get(pk=message_id)
    assert message.role == "assistant" and "84" in message.content
    score = Score.objects.get()
    assert (score.name, score.data_type, score.value, score.source, score.comment) == (
        "thumbs", "boolean", 1.0, "human", "spot on")
    assert (score.message_id, score.execution_id, score.owner_id) == (message.pk, message.execution_id, alice.pk)


def test_the_comparison_page_shows_two_experiments_side_by_side(live_server_url, alice, new_page):
    from tests.datasets.factories import DatasetFactory, DatasetItemFactory
    from tests.prompts.factories import PromptFactory, versions_add

    alice.is_staff = alice.is_superuser = True
    alice.save(update_fields=["is_staff", "is_superuser"])
    dataset = DatasetFactory(owner=alice, name="qa")
    for n in range(3):
        DatasetItemFactory(dataset=dataset, input=f"question {n}", expected_output=f"answer {n}")
    versions_add(PromptFactory(owner=alice, name="support", content="Answer briefly."), 1,
                 text="Answer at length, with examples.")
    experiments = []
    for version in (1, 2):
        made = experiment_create(owner=alice, name=f"support v{version}", dataset_id=dataset.pk, start=False,
                                 targets=[{"name": f"v{version}", "prompt": {"name": "support", "version": version}}],
                                 evaluators=[{"type": "regex", "name": "nonempty", "pattern": "."}])
        experiments.append(experiment_run(experiment_id=made.pk))

    with logged_in_page(new_page, live_server_url) as (page, errors):
        page.goto(f"{live_server_url}/admin/experiments/experiment/")
        for experiment in experiments:
            page.locator(f"input[name=_selected_action][value='{experiment.pk}']").check()
        page.select_option("select[name=action]", "compare")
        page.locator("button[name=index]").click()
        page.wait_for_selector("[data-testid=compare-totals]")
        totals = page.locator("[data-testid=compare-total]").evaluate_all(
            "rows => rows.map(r => [r.dataset.experimentId, r.dataset.target,"
            " r.querySelector('[data-testid=total-tokens]').textContent])")
        cells = page.locator("[data-testid=compare-item]").evaluate_all(
            "rows => rows.map(r => r.querySelectorAll('[data-testid=compare-cell]').length)")
        headers = [h.strip() for h in page.locator("[data-testid=compare-items] thead th").all_text_contents()]
        assert errors == []

    assert sorted(totals) == sorted(
        [str(e.pk), e.targets[0]["name"], str(sum(r.total_tokens for r in e.results.all()))] for e in experiments)
    assert cells == [2, 2, 2]
    assert sorted(headers[2:]) == ["support v1 · v1", "support v2 · v2"]  # a column each, side by side
