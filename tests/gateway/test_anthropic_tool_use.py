"""An Anthropic model that calls a tool answers its text and a `tool_use` block in one list of content blocks
(LangChain's ChatAnthropic keeps that list as the reply's content, and its streamed chunks carry lists too). What
Chatter shows of such a reply is its text, read as a model reads content parts (engine.chat_messages.content_text):
in a chat turn's node outputs, its conversation's messages and its events, and in the OpenAI-shaped answer of
/v1/chat/completions, whole and streamed, beside the tool calls it made. Against a daphne server routing a claude
model to an Anthropic deployment on the stub (tests/openai_stub.py speaks Anthropic's Messages API)."""
import json
from decimal import Decimal

import httpx
import pytest

from tests.api.sse import parse_sse
from tests.factories import ApiTokenFactory
from tests.gateway.test_routing import (  # noqa: F401 - fixtures
    KEYS,
    _deployments_of_module,
    _upstreams_of_module,
    assert_exact,
    client,
    routed,
    routes,
    upstreams,
)
from tests.openai_stub import split_words
from workflows.models import LLMCall, WorkflowExecution

ANSWERED = "claude-3-5-haiku-20241022"
CALC = {"id": "toolu_stub_calc", "name": "calculator", "arguments": {"expression": "12*7"}}
FIRST, SECOND = {"input_tokens": 30, "output_tokens": 12}, {"input_tokens": 52, "output_tokens": 6}


def claude_route(stub, n) -> dict:
    """The test's claude model, served by an Anthropic deployment on `stub`."""
    return {n.claude: {"deployments": [
        {"name": n.b, "provider": "anthropic", "base_url": stub.root_url, "api_key_env": "ROUTE_KEY_B"}]}}


def haiku_cost(usage: dict) -> Decimal:
    # claude-3-5-haiku: $0.80 input, $4.00 output per million (analytics' seeded prices)
    return (Decimal(usage["input_tokens"]) * Decimal("0.80")
            + Decimal(usage["output_tokens"]) * Decimal("4.00")) / 10**6


def shown(*texts: str) -> None:
    """What the API showed holds no Python repr of content blocks, nor the tool_use block itself."""
    for text in texts:
        assert "tool_use" not in text and "'type'" not in text and "toolset_name" not in text, text


@routes(lambda first, claude, n: claude_route(claude, n))
def test_a_chat_turn_whose_anthropic_model_calls_a_tool_shows_its_text(routed, upstreams, alice):
    _, claude = upstreams
    claude.reply(content="Let me work that out.", tool_calls=[CALC], usage=FIRST, model=ANSWERED)
    claude.reply(content="12*7 is 84.", usage=SECOND, model=ANSWERED)
    headers = {"Authorization": f"Bearer {ApiTokenFactory(user=alice).key}"}
    api = httpx.Client(base_url=f"{routed.base_url}/api/v1", headers=headers, timeout=60)

    with api.stream("POST", "/chat/", json={"message": "What is 12*7?", "stream": True, "provider": "anthropic",
                                            "model": routed.names.claude, "allowed_tools": ["calculator"]}) as turn:
        assert turn.status_code == 200
        streamed = turn.read().decode()

    frames = parse_sse(streamed)
    assert frames[-1].event == "workflow_completed", streamed
    run_id = frames[-1].envelope["execution_id"]
    texts: dict[str, str] = {}  # each reply's tokens, as its watchers saw them
    for frame in frames:
        if frame.event == "token":
            texts[frame.envelope["data"]["message_id"]] = texts.get(frame.envelope["data"]["message_id"], "") + \
                frame.envelope["data"]["text"]
    assert list(texts.values()) == ["Let me work that out.", "12*7 is 84."]
    detail = api.get(f"/executions/{run_id}/")
    assert [(node["output"]["content"], node["output"]["tool_calls"]) for node in detail.json()["node_executions"]
            if node["node_type"] == "model"] == [("Let me work that out.", ["calculator"]), ("12*7 is 84.", [])]
    assert detail.json()["output_data"]["content"] == "12*7 is 84."
    conversation = detail.json()["conversation"]
    messages = api.get(f"/conversations/{conversation}/messages/")
    events = api.get(f"/executions/{run_id}/events/", params={"page_size": 100})
    assert events.json()["next"] is None
    shown(streamed, detail.text, messages.text, events.text)
    calls = list(LLMCall.objects.filter(execution_id=run_id).order_by("id").values_list(
        "provider", "model", "prompt_tokens", "completion_tokens", "cost"))
    assert calls == [("anthropic", ANSWERED, 30, 12, haiku_cost(FIRST)),
                     ("anthropic", ANSWERED, 52, 6, haiku_cost(SECOND))]
    cost = haiku_cost(FIRST) + haiku_cost(SECOND)
    assert [(m["role"], m["content"], m["prompt_tokens"], m["completion_tokens"], Decimal(m["cost"]))
            for m in messages.json()["results"]] == [("user", "What is 12*7?", 0, 0, 0),
                                                     ("assistant", "12*7 is 84.", 82, 18, cost)]
    run = detail.json()
    assert (run["prompt_tokens"], run["completion_tokens"], run["total_tokens"], Decimal(run["cost"]),
            run["llm_calls"], run["tool_calls"]) == (82, 18, 100, cost, 2, 1)
    assert_exact()


CALCULATOR = {"type": "function", "function": {"name": "calculator", "description": "Evaluates arithmetic.",
                                               "parameters": {"type": "object",
                                                              "properties": {"expression": {"type": "string"}},
                                                              "required": ["expression"]}}}
ASKED = [{"role": "user", "content": "What is 12*7?"}]


def answered(api, model: str, *, stream: bool) -> tuple[str | None, list[tuple], str, int]:
    """One /v1/chat/completions call: the answer's content, its tool calls (id, name, arguments), its finish reason and
    its total tokens, from the whole answer or the chunks of the streamed one (whose text must come first, as the
    provider streamed it: word by word, before the tool calls)."""
    if not stream:
        reply = api.chat.completions.create(model=model, messages=ASKED, tools=[CALCULATOR])
        message = reply.choices[0].message
        return (message.content, [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []],
                reply.choices[0].finish_reason, reply.usage.total_tokens)
    chunks = list(api.chat.completions.create(model=model, messages=ASKED, tools=[CALCULATOR], stream=True,
                                              stream_options={"include_usage": True}))
    deltas = [chunk.choices[0] for chunk in chunks if chunk.choices]
    texts = [choice.delta.content for choice in deltas if choice.delta.content]
    first_call = next(index for index, choice in enumerate(deltas) if choice.delta.tool_calls)
    assert texts == [choice.delta.content for choice in deltas[:first_call] if choice.delta.content]
    assert texts == split_words("".join(texts))
    calls: dict[int, list] = {}
    for choice in deltas:
        for call in choice.delta.tool_calls or []:
            whole = calls.setdefault(call.index, [call.id, call.function.name, ""])
            whole[2] += call.function.arguments or ""
    finish = next(choice.finish_reason for choice in deltas if choice.finish_reason)
    return "".join(texts) or None, [tuple(call) for call in calls.values()], finish, chunks[-1].usage.total_tokens


@routes(lambda first, claude, n: claude_route(claude, n), ids=("whole", "streamed"))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_routed_anthropic_reply_with_a_tool_call_is_answered_as_openai_does(routed, upstreams, stream):
    _, claude = upstreams
    claude.reply(content="Let me work that out.", tool_calls=[CALC], usage=FIRST, model=ANSWERED)
    claude.reply(tool_calls=[{**CALC, "id": "toolu_stub_only"}], usage=SECOND, model=ANSWERED)
    api, model = client(routed), routed.names.claude

    with_text, without_text = answered(api, model, stream=stream), answered(api, model, stream=stream)

    assert with_text == ("Let me work that out.", [("toolu_stub_calc", "calculator", '{"expression": "12*7"}')],
                         "tool_calls", 42)
    assert without_text == (None, [("toolu_stub_only", "calculator", '{"expression": "12*7"}')], "tool_calls", 58)
    assert [request.body.get("stream", False) for request in claude.requests] == [stream, stream]
    runs = WorkflowExecution.objects.order_by("created_at")
    assert [(run.output_data["content"], run.total_tokens, run.cost) for run in runs] == [
        ("Let me work that out.", 42, haiku_cost(FIRST)), ("", 58, haiku_cost(SECOND))]
    shown(*(json.dumps(run.output_data) for run in runs))
    assert_exact()


# A reply whose text Anthropic splits into blocks, as it does around a citation: the blocks, one after the other, are
# its text (as Anthropic's SDK reads a message's text, `get_final_text`, and LangChain's `message.text`).
BLOCKS = ["The capital of France is ", "Paris", "."]
SAID = "The capital of France is Paris."


@routes(lambda first, claude, n: claude_route(claude, n))
def test_a_chat_turn_stores_the_text_blocks_of_an_anthropic_reply_as_its_watchers_saw_them(routed, upstreams, alice):
    _, claude = upstreams
    claude.reply(text_blocks=BLOCKS, usage=FIRST, model=ANSWERED)
    headers = {"Authorization": f"Bearer {ApiTokenFactory(user=alice).key}"}
    api = httpx.Client(base_url=f"{routed.base_url}/api/v1", headers=headers, timeout=60)

    with api.stream("POST", "/chat/", json={"message": "What is the capital of France?", "stream": True,
                                            "provider": "anthropic", "model": routed.names.claude}) as turn:
        assert turn.status_code == 200
        frames = parse_sse(turn.read().decode())

    assert frames[-1].event == "workflow_completed"
    seen = "".join(frame.envelope["data"]["text"] for frame in frames if frame.event == "token")
    detail = api.get(f"/executions/{frames[-1].envelope['execution_id']}/").json()
    messages = api.get(f"/conversations/{detail['conversation']}/messages/").json()["results"]
    assert (seen, detail["output_data"]["content"], messages[-1]["content"]) == (SAID, SAID, SAID)
    assert_exact()


@routes(lambda first, claude, n: claude_route(claude, n), ids=("whole", "streamed"))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_gateway_answers_and_stores_the_text_blocks_of_an_anthropic_reply_as_one_text(routed, upstreams, stream):
    _, claude = upstreams
    claude.reply(text_blocks=BLOCKS, usage=FIRST, model=ANSWERED)
    api, model = client(routed), routed.names.claude
    asked = {"model": model, "messages": ASKED, "tools": [CALCULATOR]}  # with tools, LangChain keeps the blocks

    if stream:
        chunks = api.chat.completions.create(**asked, stream=True)
        answered_text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    else:
        answered_text = api.chat.completions.create(**asked).choices[0].message.content

    assert [request.body.get("stream", False) for request in claude.requests] == [stream]
    assert (answered_text, WorkflowExecution.objects.get().output_data["content"]) == (SAID, SAID)
    assert_exact()


ANTHROPIC_CALCULATOR = {"name": "calculator", "description": "Evaluates arithmetic.",
                        "input_schema": CALCULATOR["function"]["parameters"]}
CHOICES = {  # OpenAI's tool_choice, and Anthropic's for it
    "auto": ("auto", {"type": "auto"}),
    "required": ("required", {"type": "any"}),
    "none": ("none", {"type": "none"}),
    "function": ({"type": "function", "function": {"name": "calculator"}}, {"type": "tool", "name": "calculator"}),
}


@routes(lambda first, claude, n: claude_route(claude, n),
        ids=tuple(f"{choice}-{way}" for choice in CHOICES for way in ("whole", "streamed")))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("choice", list(CHOICES))
def test_a_routed_anthropic_model_is_sent_the_client_tools_and_tool_choice_in_anthropic_shape(routed, upstreams,
                                                                                           stream, choice):
    _, claude = upstreams
    claude.reply(content="84", usage=FIRST, model=ANSWERED)
    openai_choice, anthropic_choice = CHOICES[choice]

    answer = client(routed).chat.completions.create(model=routed.names.claude, messages=ASKED, tools=[CALCULATOR],
                                                    tool_choice=openai_choice, stream=stream)
    list(answer) if stream else answer

    sent = claude.requests[-1].body
    assert (sent.get("stream", False), sent["tools"], sent["tool_choice"]) == (
        stream, [ANTHROPIC_CALCULATOR], anthropic_choice)
    assert_exact()


@routes(lambda first, claude, n: claude_route(claude, n))
def test_a_response_of_a_routed_anthropic_model_sends_it_the_tools_in_anthropic_shape(routed, upstreams):
    _, claude = upstreams
    claude.reply(content="84", usage=FIRST, model=ANSWERED)
    tool = {"type": "function", **CALCULATOR["function"]}

    response = client(routed).responses.create(model=routed.names.claude, input="What is 12*7?", tools=[tool],
                                               tool_choice="required")

    sent = claude.requests[-1].body
    assert (response.output_text, sent["tools"], sent["tool_choice"]) == ("84", [ANTHROPIC_CALCULATOR],
                                                                         {"type": "any"})
    assert_exact()
