"""Serializers are made per request (core.api.serializers): none renders or validates through an instance shared
between requests or threads, or through DRF's methods called with another instance as `self`; many threads at once
render and validate exactly what one thread does."""
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.urls import get_resolver
from rest_framework import serializers

from core.api import serializers as core_serializers
from gateway.serializers import ChatCompletionSerializer, CompletionSerializer, EmbeddingsSerializer, ResponsesSerializer
from workflows.api.chat import ChatSerializer
from workflows.api.serializers import RunResultSerializer
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_run_now

pytestmark = pytest.mark.django_db


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def test_item_03_no_serializer_renders_or_validates_through_a_shared_instance():
    get_resolver().url_patterns  # noqa: B018 - imports every view, so every serializer of the product
    product = [cls for cls in _subclasses(serializers.BaseSerializer)
               if cls.__module__.split(".")[0] not in ("tests", "rest_framework", "drf_spectacular")]
    assert len(product) > 50
    allowed = {core_serializers.StrictFieldsMixin, core_serializers.StrictSerializer}
    for cls in product:
        shared = [base for base in cls.__mro__ if base.__module__ == core_serializers.__name__ and base not in allowed]
        assert not shared, (cls.__qualname__, shared)
    assert not [name for name, value in vars(core_serializers).items()
                if isinstance(value, dict) and not name.startswith("__")]  # no registry of built instances


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



def validated(serializer_class: type, data) -> tuple[bool, dict, dict]:
    serializer = serializer_class(data=data)
    valid = serializer.is_valid()
    return valid, dict(serializer.validated_data) if valid else {}, serializer.errors


def test_many_threads_validate_what_one_thread_validates():
    cases = [(cls, data) for cls, requests in REQUESTS.items() for data in requests]
    expected = [validated(cls, data) for cls, data in cases]
    for cls in REQUESTS:  # each class answered both ways
        assert {found[0] for (case_cls, _), found in zip(cases, expected) if case_cls is cls} == {True, False}

    def check(i: int) -> bool:
        cls, data = cases[i % len(cases)]
        return validated(cls, data) == expected[i % len(cases)]

    with ThreadPoolExecutor(8) as threads:
        assert all(threads.map(check, range(len(cases) * 8)))


def test_many_threads_render_what_one_thread_renders(alice):
    runs = [execution_run_now(ChatRequest(owner=alice, message=message)) for message in ("What is 12*7?", "hello")]
    expected = {run.pk: RunResultSerializer(run).data for run in runs}
    assert expected[runs[0].pk] != expected[runs[1].pk] and len(expected[runs[0].pk]["messages"]) == 2

    def render(i: int) -> bool:
        run = runs[i % 2]
        return RunResultSerializer(run).data == expected[run.pk]

    with ThreadPoolExecutor(8) as threads:
        assert all(threads.map(render, range(64)))
