"""Response serializers that build their fields once per class (core.api.serializers.FieldsBuiltOnce)
answer exactly what DRF's own per-instance rendering answers, for every such class, from many threads at once; and
request serializers validated through fields built once (ValidatedByFieldsBuiltOnce) validate exactly as DRF's own
per-instance validation does: the same data, the same errors."""
from concurrent.futures import ThreadPoolExecutor

import pytest
from rest_framework import serializers

from conversations.api.serializers import ConversationSerializer, MessageSerializer
from core.api.serializers import FieldsBuiltOnce, ValidatedByFieldsBuiltOnce
from gateway.serializers import ChatCompletionSerializer, CompletionSerializer, EmbeddingsSerializer, ResponsesSerializer
from workflows.api.chat import ChatSerializer
from workflows.api.serializers import (
    AcceptedRunSerializer,
    ExecutionDetailSerializer,
    ExecutionSerializer,
    NodeExecutionSerializer,
    RunResultSerializer,
)
from workflows.selectors import execution_with_trace
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_run_now

pytestmark = pytest.mark.django_db


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def drf_rendered(serializer_class: type, instance) -> dict:
    """What DRF renders with fields built for this one instance (its own Serializer.to_representation)."""
    return serializers.Serializer.to_representation(serializer_class(), instance)


@pytest.fixture
def turn(alice):
    """A tool-calling chat turn, ended: an execution with nodes, calls, a conversation and both messages."""
    return execution_run_now(ChatRequest(owner=alice, message="What is 12*7?"))


def test_every_class_that_builds_its_fields_once_is_checked_here():
    checked = {ExecutionSerializer, AcceptedRunSerializer, ExecutionDetailSerializer, NodeExecutionSerializer,
               RunResultSerializer, ConversationSerializer, MessageSerializer}
    assert {cls for cls in _subclasses(FieldsBuiltOnce) if cls.__module__.split(".")[0] != "tests"} == checked


def test_each_renders_what_drf_renders_with_fields_of_its_own(turn):
    detail = execution_with_trace(execution=turn)
    cases = [
        (ExecutionSerializer, turn), (AcceptedRunSerializer, turn), (RunResultSerializer, turn),
        (ExecutionDetailSerializer, detail), (ConversationSerializer, turn.conversation),
        *((NodeExecutionSerializer, node) for node in detail.node_executions.all()),
        *((MessageSerializer, message) for message in turn.turn_messages),
    ]
    for serializer_class, instance in cases:
        rendered = serializer_class(instance).data
        assert rendered == drf_rendered(serializer_class, instance), serializer_class.__name__
    assert len(RunResultSerializer(turn).data["messages"]) == 2
    assert len(ExecutionDetailSerializer(detail).data["node_executions"]) >= 5  # start … end, with the tools node


def test_many_threads_render_different_rows_with_the_same_fields(alice, turn):
    other = execution_run_now(ChatRequest(owner=alice, message="hello"))
    expected = {row.pk: drf_rendered(RunResultSerializer, row) for row in (turn, other)}
    assert expected[turn.pk] != expected[other.pk]

    def render(i: int) -> bool:
        row = (turn, other)[i % 2]
        return RunResultSerializer(row).data == expected[row.pk]

    with ThreadPoolExecutor(8) as threads:
        assert all(threads.map(render, range(400)))


TOOL = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}
REQUESTS = {
    ChatSerializer: [
        {"message": "hello there"},
        {"message": "hi", "temperature": 0.5, "max_tokens": 64, "allowed_tools": ["calculator"], "stream": True,
         "template": "universal_chat", "enable_memory": False, "checkpoints": "every_step"},
        {"message": "  "}, {"message": "hi", "temperature": 9}, {"message": "hi", "allowed_tools": ["rm -rf"]},
        {"message": "hi", "template": "t", "definition_id": "00000000-0000-0000-0000-000000000001"},
        {"message": "hi", "stream": True, "background": True}, {"message": "hi", "bogus": 1}, {}, "not an object",
    ],
    ChatCompletionSerializer: [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
        {"model": "m", "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}, "index": 0}]},
            {"role": "tool", "tool_call_id": "c1", "content": "84"}],
         "tools": [TOOL], "tool_choice": "auto", "temperature": 0.5, "n": 2, "logprobs": True, "top_logprobs": 3,
         "stop": ["x"], "metadata": {"a": "b"}, "stream": True, "stream_options": {"include_usage": True}},
        {"model": "m", "messages": [{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
                                    {"role": "function", "name": "f", "content": "1"}], "functions": [{"name": "f"}]},
        {"model": "m", "messages": [], "total_tokens": 3},
        {"model": "m", "messages": [{"role": "robot", "content": "hi"}], "temperature": 3, "logit_bias": {"1": 500}},
        {"model": "m", "messages": [{"role": "tool", "content": "84"}], "stop": [1, 2], "tool_choice": "sometimes"},
        {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "function": {"name": "f", "arguments": 1}}]}]},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "audio": {"voice": "x"}},
        "not an object",
    ],
    EmbeddingsSerializer: [
        {"model": "local-embed-1", "input": "hello"}, {"model": "e", "input": [[1, 2], [3]], "dimensions": 8},
        {"model": "e", "input": []}, {"model": "e", "input": [True], "encoding_format": "hex"},
    ],
    CompletionSerializer: [
        {"model": "m", "prompt": "Say", "echo": True, "max_tokens": 5}, {"model": "m", "prompt": ["a", "b"]},
        {"model": "m", "prompt": "x", "suffix": "y", "best_of": 2},
    ],
    ResponsesSerializer: [
        {"model": "m", "input": "hi", "instructions": "be brief", "tools": [{"type": "function", "name": "f"}]},
        {"model": "m", "input": [{"role": "user", "content": "hi"}], "tools": [{"type": "web_search"}]},
        {"model": "m", "input": "hi", "truncation": "auto", "stream": "yes"},
    ],
}


def drf_validated(serializer_class: type, data) -> tuple[bool, dict, dict]:
    """(valid, data, errors) as DRF validates with fields built for this one instance (its own run_validation)."""
    try:
        return True, serializers.Serializer.run_validation(serializer_class(data=data), data), {}
    except serializers.ValidationError as error:
        return False, {}, error.detail


def validated(serializer_class: type, data) -> tuple[bool, dict, dict]:
    serializer = serializer_class(data=data)
    valid = serializer.is_valid()
    return valid, dict(serializer.validated_data) if valid else {}, serializer.errors


def test_every_request_class_validated_by_fields_built_once_is_checked_here():
    assert {cls for cls in _subclasses(ValidatedByFieldsBuiltOnce) if cls.__module__.split(".")[0] != "tests"} == \
        set(REQUESTS)


def test_each_validates_as_drf_validates_with_fields_of_its_own():
    for serializer_class, requests in REQUESTS.items():
        outcomes = set()
        for data in requests:
            found = validated(serializer_class, data)
            assert found == drf_validated(serializer_class, data), (serializer_class.__name__, data)
            outcomes.add(found[0])
        assert outcomes == {True, False}, serializer_class.__name__  # both kinds of answer were compared


def test_many_threads_validate_different_requests_with_the_same_fields():
    cases = [(cls, data) for cls, requests in REQUESTS.items() for data in requests]
    expected = [drf_validated(cls, data) for cls, data in cases]

    def check(i: int) -> bool:
        cls, data = cases[i % len(cases)]
        return validated(cls, data) == expected[i % len(cases)]

    with ThreadPoolExecutor(8) as threads:
        assert all(threads.map(check, range(800)))
