"""POST /v1/completions, the legacy API, through OpenAI's own client against a real daphne server: the prompt is the
one user message of a chat completion run (the same run, parameters and usage), answered as text_completion objects,
whole or streamed, with `echo` and legacy-shaped logprobs; what a chat model cannot do is a 400 and no run."""
from decimal import Decimal

import pytest

from tests.gateway.conftest import client
from tests.invariants import assert_all
from tests.openai_stub import split_words
from workflows.models import LLMCall, WorkflowExecution

USAGE = {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}
COST = ((Decimal(6) * Decimal("0.15") + Decimal(4) * Decimal("0.60")) / 10**6).quantize(Decimal("0.00000001"))


def assert_recorded(execution_id) -> None:
    execution = WorkflowExecution.objects.get(pk=execution_id)
    (call,) = LLMCall.objects.filter(execution=execution)
    assert (execution.workflow_type, execution.status, execution.total_tokens, call.total_tokens) == (
        "gateway", "completed", 10, 10)
    assert execution.cost == call.cost == COST
    assert_all(execution)


def test_a_prompt_is_completed_as_a_chat_run(gateway, openai_stub):
    openai_stub.reply(content=" blue.", usage=USAGE)

    raw = client(gateway).completions.with_raw_response.create(
        model="gpt-4o-mini", prompt="The sky is", max_tokens=5, temperature=0, stop=["\n"], seed=2)
    completion = raw.parse()

    sent = openai_stub.last_request.body
    assert sent["messages"] == [{"role": "user", "content": "The sky is"}]
    assert (sent["max_completion_tokens"], sent["temperature"], sent["stop"], sent["seed"]) == (5, 0, ["\n"], 2)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert [(c.index, c.text, c.finish_reason) for c in completion.choices] == [(0, " blue.", "stop")]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (6, 4)
    assert Decimal(raw.headers["x-chatter-cost"]) == COST
    assert_recorded(raw.headers["x-request-id"])


def test_echo_and_logprobs_in_the_legacy_shape(gateway, openai_stub):
    openai_stub.reply(content=" blue today.", usage=USAGE)

    completion = client(gateway).completions.create(model="gpt-4o-mini", prompt="The sky is", echo=True, logprobs=2)

    (choice,) = completion.choices
    assert choice.text == "The sky is blue today."
    sent = openai_stub.last_request.body
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    words = split_words(" blue today.")
    assert words == [" ", "blue ", "today."]
    assert choice.logprobs.tokens == words and choice.logprobs.token_logprobs == [-0.25, -0.5, -0.75]
    assert choice.logprobs.text_offset == [10, 11, 16]  # after the echoed prompt
    assert choice.logprobs.top_logprobs[1] == {"blue ": -0.5, "alt1": -1.5}


def test_a_streamed_completions_logprobs_count_the_echoed_prompt_and_the_text_before(gateway, openai_stub):
    openai_stub.reply(content=" blue today.", usage=USAGE)

    chunks = list(client(gateway).completions.create(model="gpt-4o-mini", prompt="The sky is", echo=True,
                                                     logprobs=1, stream=True))

    assert "".join(c.choices[0].text for c in chunks if c.choices) == "The sky is blue today."
    logprobs = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs]
    assert [token for part in logprobs for token in part.tokens] == [" ", "blue ", "today."]
    assert [offset for part in logprobs for offset in part.text_offset] == [10, 11, 16]  # as answered whole


def test_a_streamed_completion_ends_with_its_usage(gateway, openai_stub):
    openai_stub.reply(content=" blue and clear.", usage=USAGE)

    with client(gateway).completions.with_streaming_response.create(
            model="gpt-4o-mini", prompt="The sky is", stream=True, stream_options={"include_usage": True}) as raw:
        chunks = list(raw.parse())
        request_id = raw.headers["x-request-id"]

    assert all(chunk.object == "text_completion" for chunk in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " blue and clear."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 10
    assert_recorded(request_id)


def test_n_completions_from_one_call(gateway, openai_stub):
    openai_stub.reply(content=" blue.", more_choices=[" grey."], usage=USAGE)

    completion = client(gateway).completions.create(model="gpt-4o-mini", prompt="The sky is", n=2)

    assert [(c.index, c.text) for c in completion.choices] == [(0, " blue."), (1, " grey.")]
    assert openai_stub.last_request.body["n"] == 2




def test_the_local_model_completes_out_of_the_box(gateway_api):
    response = gateway_api.post("/v1/completions", {"model": "local-echo-1", "prompt": "Hello"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"].startswith("(local model)")
    assert body["usage"]["total_tokens"] == WorkflowExecution.objects.get().total_tokens > 0


REFUSED = {
    "a suffix": ({"suffix": " and then?"}, "suffix"),
    "best of several": ({"best_of": 3}, "best_of"),
    "several prompts": ({"prompt": ["a", "b"]}, "prompt"),
    "a token-array prompt": ({"prompt": [1, 2, 3]}, "prompt"),
    "too many logprobs": ({"logprobs": 6}, "logprobs"),
    "an unknown parameter": ({"messages": []}, "messages"),
}


@pytest.mark.parametrize("fields, param", REFUSED.values(), ids=REFUSED.keys())
def test_what_a_chat_model_cannot_do_is_refused(gateway_api, fields, param):
    response = gateway_api.post("/v1/completions", {"model": "local-echo-1", "prompt": "Hi", **fields}, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == param
    assert not WorkflowExecution.objects.exists()
