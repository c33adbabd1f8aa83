"""Serializers are made per request (core.api.serializers): none renders or validates through an instance shared
between requests or threads, or through DRF's methods called with another instance as `self`; many threads at once
render and validate exactly what one thread does."""
import copy
import json
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.urls import get_resolver
from django.utils import timezone
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from conversations.api.serializers import ConversationSerializer, MessageSerializer
from conversations.models import Conversation, Message
from core.api import serializers as core_serializers
from gateway.chat_request import chat_request_validated
from gateway.serializers import CompletionSerializer, EmbeddingsSerializer, ResponsesSerializer
from workflows.api.chat import ChatSerializer
from workflows.api.run_serializers import (
    AcceptedRunSerializer,
    ExecutionDetailSerializer,
    ExecutionSerializer,
    RunResultSerializer,
)
from workflows.models import WorkflowExecution
from workflows.selectors import execution_with_trace
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
    chat_request_validated: [  # (a pydantic model, not a serializer: validated by a function all the same)
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



def validated(serializer_class, data) -> tuple[bool, dict, dict]:
    if serializer_class is chat_request_validated:
        try:
            return True, chat_request_validated(copy.deepcopy(data)), {}
        except serializers.ValidationError as exc:
            return False, {}, exc.detail
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


def _model_serializer(serializer_class: type, model: type) -> type:
    """A ModelSerializer over the same fields: what rendered these shapes before they were declared."""
    names = tuple(serializer_class().fields)
    declared = {"template": serializers.SlugRelatedField(slug_field="key", read_only=True, allow_null=True)}
    declared = declared if "template" in names else {}
    meta = type("Meta", (), {"model": model, "fields": names, "read_only_fields": names})
    return type(f"Model{serializer_class.__name__}", (serializers.ModelSerializer,), {**declared, "Meta": meta})


def _as_json(data) -> object:
    return json.loads(JSONRenderer().render(data))


def test_item_03_hot_shapes_render_as_drf_renders_their_declared_fields(alice):
    """A run, its conversation and its messages render through plain functions (no fields built per request):
    what they answer is, field for field, what DRF renders through their declared fields, and what the model
    serializers rendered before (null fields, a template, a fork, money, another time zone)."""
    first = execution_run_now(ChatRequest(owner=alice, message="What is 12*7?"))
    run = execution_run_now(ChatRequest(owner=alice, message="hello", conversation_id=first.conversation_id))
    bare = WorkflowExecution.objects.create(owner=alice, workflow_type="custom", status="pending", mode="sync",
                                            cost=Decimal("0.1"), forked_from=first, forked_from_checkpoint="cp")
    with_template = WorkflowExecution.objects.filter(template__isnull=False).first()
    assert run.template_id is not None and run.turn_messages[1].execution_id == run.pk
    executions = [run, bare, with_template, WorkflowExecution.objects.get(pk=run.pk)]
    messages = [*run.turn_messages, *Message.objects.filter(conversation=run.conversation)]
    conversations = [run.conversation, Conversation.objects.get(pk=run.conversation_id)]
    cases = [(ExecutionSerializer, WorkflowExecution, executions), (MessageSerializer, Message, messages),
             (ConversationSerializer, Conversation, conversations)]
    for zone in ("UTC", "Europe/Paris"):
        with timezone.override(zone):
            for serializer_class, model, instances in cases:
                before = _model_serializer(serializer_class, model)
                for instance in instances:
                    answered = serializer_class(instance).data
                    assert answered == serializers.Serializer.to_representation(serializer_class(), instance)
                    assert _as_json(answered) == _as_json(before(instance).data), (serializer_class, zone)
            result = RunResultSerializer(run).data
            assert result == {"execution": ExecutionSerializer(run).data,
                              "conversation": ConversationSerializer(run.conversation).data,
                              "messages": MessageSerializer(run.turn_messages, many=True).data}
    assert _as_json(RunResultSerializer(run).data)["execution"]["cost"] == f"{run.cost:.8f}"
    traced = execution_with_trace(execution=WorkflowExecution.objects.get(pk=run.pk))
    for serializer_class in (ExecutionDetailSerializer, AcceptedRunSerializer):  # the run's shape and more
        answered = serializer_class(traced).data
        assert answered == serializers.Serializer.to_representation(serializer_class(traced), traced)
        assert answered["total_tokens"] == run.total_tokens and len(answered) > len(ExecutionSerializer(run).data)


def test_item_03_a_run_result_builds_no_fields(alice, monkeypatch):
    """What every sync chat turn answers (the run, its conversation, its two messages) is rendered without building
    one serializer field: DRF builds a serializer's fields on each instance, which cost a turn milliseconds."""
    run = execution_run_now(ChatRequest(owner=alice, message="hello"))
    built = []
    get_fields = serializers.Serializer.get_fields

    def counted(self):
        built.append(type(self).__name__)
        return get_fields(self)

    monkeypatch.setattr(serializers.Serializer, "get_fields", counted)
    body = RunResultSerializer(run).data
    assert len(body["messages"]) == 2 and body["execution"]["id"] == str(run.pk)
    assert built == []
