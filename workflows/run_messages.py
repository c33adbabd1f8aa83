"""The messages a run's ending saves to its conversation, each with the usage it carries (I3)."""
from __future__ import annotations

from dataclasses import replace

from conversations.models import Message
from conversations.services import message_save
from core.errors import RunError
from engine.chat_messages import content_text, json_object, tool_calls_as_sent
from engine.python_graphs import MESSAGES_USAGE
from engine.runtime import RunContext
from workflows.models import WorkflowExecution


def run_messages_save(*, execution: WorkflowExecution, state: dict | None, ctx: RunContext, reply, content: str,
                      call, error: RunError | None, status: str, elapsed_ms: int) -> list[Message]:
    """What a run's ending saves to its conversation, in its transaction: a registered graph's every message
    (graph_messages_save), else its reply (`reply`, the graph's last AI message, or None: `content`, what it
    streamed) with the run's usage, the call that answered (`call`), and how it ended (`error`, `status`)."""
    if state is not None and MESSAGES_USAGE in state:  # a registered graph: every message it produced
        return _graph_messages_save(execution=execution, state=state, ctx=ctx, elapsed_ms=elapsed_ms)
    citations = citations_of(state)
    return [message_save(
        conversation_id=execution.conversation_id, role=Message.Role.ASSISTANT, content=content,
        execution=execution, prompt_tokens=execution.prompt_tokens, completion_tokens=execution.completion_tokens,
        cached_prompt_tokens=ctx.usage.cached_prompt_tokens, reasoning_tokens=ctx.usage.reasoning_tokens,
        cost=execution.cost, usage_estimated=ctx.usage.estimated, usage_raw=ctx.usage.raw,
        provider_used=call.provider if call else execution.provider,
        model_used=call.model if call else execution.model,
        finish_reason=(reply.response_metadata.get("finish_reason", "") if reply else "") or (
            "" if error is None else status),
        response_time_ms=elapsed_ms, tool_calls=_stored_tool_calls(reply),
        error_message=error.message if error else "", actor=execution.owner,
        # on a thread that keeps its graph's state: the answer's id there
        metadata={**({"message_id": reply.id} if reply is not None and "turn_start" in state else {}),
                  **({"citations": citations} if citations else {})} or None,
    )]


def citations_of(state: dict | None) -> list[dict]:
    """The knowledge chunks a retrieval node gave the run (its state's documents that cite one)."""
    return [document["citation"] for document in (state or {}).get("documents") or [] if "citation" in document]


_ROLES = {"human": Message.Role.USER, "ai": Message.Role.ASSISTANT, "tool": Message.Role.TOOL,
          "system": Message.Role.SYSTEM}


def _graph_messages_save(*, execution: WorkflowExecution, state: dict, ctx: RunContext,
                         elapsed_ms: int) -> list[Message]:
    """The messages a registered graph's run added to its state, in order, each saved to the conversation: an AI
    message with the usage of the model call that produced it; what no message took (a call whose reply the graph
    kept elsewhere, calls before the run paused) rides on its last AI message, or on an assistant message of its
    own, so the run's messages hold exactly its usage (I3)."""
    from langchain_core.messages import BaseMessage

    saved_before = Message.objects.filter(conversation_id=execution.conversation_id).exclude(metadata__message_id=None)
    known = set(saved_before.values_list("metadata__message_id", flat=True))
    branched_at = _messages_at_branch_point(execution)
    if branched_at is not None:  # a message of the branch it left, produced again under the same id, is its own
        known = (known & branched_at) | set(saved_before.filter(execution=execution).values_list(
            "metadata__message_id", flat=True))
    # the run's own message, saved before it ran, is in the graph's state under its row's id (graph_input_of)
    known |= {str(pk) for pk in Message.objects.filter(execution=execution, role=Message.Role.USER).values_list(
        "pk", flat=True)}
    produced = [m for m in state.get("messages") or [] if isinstance(m, BaseMessage) and m.id not in known]
    booked = state[MESSAGES_USAGE]
    fields = []
    for m in produced:
        entry = {"role": _ROLES.get(m.type, Message.Role.ASSISTANT), "content": content_text(m.content), "usage": None,
                 "metadata": {"message_id": m.id, **({"name": m.name} if m.name else {}),
                              **({"tool_call_id": m.tool_call_id} if m.type == "tool" else {})},
                 "tool_calls": _stored_tool_calls(m) if m.type == "ai" else [],
                 "provider": "", "model": "",
                 "finish_reason": (m.response_metadata or {}).get("finish_reason", "") if m.type == "ai" else ""}
        if m.type == "ai" and "usage" in booked.get(m.id, {}):
            entry.update(usage=booked[m.id]["usage"], provider=booked[m.id]["provider"], model=booked[m.id]["model"])
        fields.append(entry)
    rest = ctx.usage
    for entry in fields:
        if entry["usage"] is not None:
            rest = _less(rest, entry["usage"])
    if rest.total_tokens or rest.cost:
        last_ai = next((e for e in reversed(fields) if e["role"] == Message.Role.ASSISTANT), None)
        if last_ai is None:
            last_ai = {"role": Message.Role.ASSISTANT, "content": ctx.partial_text, "usage": None, "metadata": {},
                       "tool_calls": [], "provider": "", "model": "", "finish_reason": ""}
            fields.append(last_ai)
        last_ai["usage"] = rest if last_ai["usage"] is None else last_ai["usage"] + rest
    saved = []
    for entry in fields:
        usage = entry["usage"]
        saved.append(message_save(
            conversation_id=execution.conversation_id, role=entry["role"], content=entry["content"],
            execution=execution, actor=execution.owner, metadata=entry["metadata"], tool_calls=entry["tool_calls"],
            finish_reason=entry["finish_reason"],
            provider_used=entry["provider"] or (execution.provider if usage is not None else ""),
            model_used=entry["model"] or (execution.model if usage is not None else ""),
            response_time_ms=elapsed_ms if entry["role"] == Message.Role.ASSISTANT else 0,
            **({} if usage is None else {
                "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                "cached_prompt_tokens": usage.cached_prompt_tokens, "reasoning_tokens": usage.reasoning_tokens,
                "cost": usage.cost, "usage_estimated": usage.estimated, "usage_raw": usage.raw})))
    return saved


def _messages_at_branch_point(execution: WorkflowExecution) -> set[str] | None:
    """A registered graph's run from one of its thread's checkpoints (regenerate, edit): the ids of the messages
    its thread held at that checkpoint, which it did not produce. None for any other run."""
    from langchain_core.messages import BaseMessage

    from workflows.checkpointer import checkpointer

    checkpoint_id = (execution.input_data or {}).get("checkpoint_id")
    if not checkpoint_id:
        return None
    found = checkpointer.get_tuple({"configurable": {"thread_id": str(execution.conversation_id), "checkpoint_ns": "",
                                                     "checkpoint_id": checkpoint_id}})
    messages = (found.checkpoint["channel_values"].get("messages") if found else None) or []
    return {m.id for m in messages if isinstance(m, BaseMessage)}


def _less(total, part):
    """What of `total` usage `part` does not account for."""
    return replace(total, prompt_tokens=total.prompt_tokens - part.prompt_tokens,
                   completion_tokens=total.completion_tokens - part.completion_tokens,
                   cached_prompt_tokens=total.cached_prompt_tokens - part.cached_prompt_tokens,
                   reasoning_tokens=total.reasoning_tokens - part.reasoning_tokens, cost=total.cost - part.cost,
                   raw={})


def _stored_tool_calls(reply) -> list[dict]:
    """A reply's tool calls as its message keeps them: the arguments as the model sent them, and parsed (`args`,
    None when they are no JSON object)."""
    return [{"id": call["id"], "name": call["function"]["name"], "args": json_object(call["function"]["arguments"]),
             "arguments": call["function"]["arguments"]} for call in (tool_calls_as_sent(reply) if reply else [])]
