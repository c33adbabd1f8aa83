"""Writes of scores: a score judges one of its owner's runs or messages."""
from __future__ import annotations

from conversations.models import Message
from core.errors import InvalidInput
from scores.models import Score
from workflows.models import WorkflowExecution


def score_create(*, owner, name: str, value, data_type: str, comment: str = "", source: str = Score.Source.API,
                 execution_id=None, message_id=None) -> Score:
    """`value`: a number (numeric), a bool (boolean) or a string (categorical). A run or message that is not the
    owner's is refused like a missing one (400 naming the field: nothing is revealed)."""
    if (execution_id is None) == (message_id is None):
        raise InvalidInput("score a run or a message (one of them)", details={"execution": ["execution or message"]})
    if message_id is not None:
        message = Message.objects.filter(pk=message_id, conversation__owner=owner).values_list(
            "pk", "execution_id").first()
        if message is None:
            raise InvalidInput("message not found", details={"message": ["no such message of yours"]})
        execution_id = message[1]
    elif not WorkflowExecution.objects.filter(pk=execution_id, owner=owner).exists():
        raise InvalidInput("run not found", details={"execution": ["no such run of yours"]})
    numeric = data_type != Score.DataType.CATEGORICAL
    return Score.objects.create(
        owner=owner, name=name, data_type=data_type, value=float(value) if numeric else None,
        category="" if numeric else value, comment=comment, source=source, execution_id=execution_id,
        message_id=message_id)


def score_delete(*, score: Score) -> None:
    score.delete()
