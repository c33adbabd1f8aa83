"""Response serializers that build their fields once per class (core.api.serializers.FieldsBuiltOnce)
answer exactly what DRF's own per-instance rendering answers, for every such class, from many threads at once."""
from concurrent.futures import ThreadPoolExecutor

import pytest
from rest_framework import serializers

from conversations.api.serializers import ConversationSerializer, MessageSerializer
from core.api.serializers import FieldsBuiltOnce
from workflows.api.serializers import (
    AcceptedRunSerializer,
    ExecutionDetailSerializer,
    ExecutionSerializer,
    NodeExecutionSerializer,
    RunResultSerializer,
)
from workflows.selectors import execution_with_trace
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
    return execution_run_now(owner=alice, chat=True, message="What is 12*7?")


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
    other = execution_run_now(owner=alice, chat=True, message="hello")
    expected = {row.pk: drf_rendered(RunResultSerializer, row) for row in (turn, other)}
    assert expected[turn.pk] != expected[other.pk]

    def render(i: int) -> bool:
        row = (turn, other)[i % 2]
        return RunResultSerializer(row).data == expected[row.pk]

    with ThreadPoolExecutor(8) as threads:
        assert all(threads.map(render, range(400)))
