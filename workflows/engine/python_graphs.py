"""Python graphs of your own (CHATTER_GRAPHS: LangGraph graphs, compiled or factories) run inside a Chatter run
as one `python_graph` node: every chat-model call they make, whatever its class, is accounted like a built-in
model node's, from LangChain's callbacks: usage from the model's own `usage_metadata` (estimated and flagged when
it reports none), provider and model from the model's LangSmith metadata, priced from ModelPrice (a model with no
price is recorded with its tokens, flagged `unpriced`, cost 0), tokens streamed live, tool calls in the trail.
"""
from __future__ import annotations

import importlib.util
import threading
import time
from typing import Any

from django.conf import settings
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage

from chatter_project.errors import InvalidInput
from workflows.engine.graph import Node
from workflows.engine.runtime import CallStarted, RunContext
from workflows.engine.usage import estimate_prompt_tokens, streamed_so_far, usage_from_message

MAX_STEPS = 100
_loaded: dict[str, Any] = {}
_loading = threading.Lock()


def graph_names() -> list[str]:
    return sorted(settings.CHATTER_GRAPHS)


def graph_load(name: str):
    """The compiled graph registered as `name` (a factory is called once), imported on first use."""
    if name not in settings.CHATTER_GRAPHS:
        raise InvalidInput(f"no Python graph {name!r} is registered (CHATTER_GRAPHS)")
    with _loading:
        if name not in _loaded:
            path, attribute = settings.CHATTER_GRAPHS[name]
            spec = importlib.util.spec_from_file_location(f"chatter_graphs.{name}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            graph = getattr(module, attribute)
            _loaded[name] = graph if hasattr(graph, "invoke") else graph()
        return _loaded[name]


class CallAccounting(BaseCallbackHandler):
    """LangChain's callbacks of one python_graph node's run, turned into the run's hooks: each chat-model call
    recorded and priced through RunContext, its tokens streamed, each tool call in the trail."""

    raise_error = True  # a cancel or a limit raised at a token boundary must stop the graph

    def __init__(self, node: Node, ctx: RunContext):
        self.node, self.ctx = node, ctx
        self.calls: dict[Any, dict] = {}
        self.tools: dict[Any, dict] = {}

    def on_chat_model_start(self, serialized, messages, *, run_id, metadata=None, **kwargs) -> None:
        metadata = metadata or {}
        prompt = messages[0] if messages else []
        call = {"provider": str(metadata.get("ls_provider") or "unknown"),
                "model": str(metadata.get("ls_model_name") or "unknown"), "prompt": prompt,
                "started": time.monotonic(), "text": ""}
        self.calls[run_id] = call
        self.ctx.hooks.model_call_started(self.node, CallStarted(
            call["provider"], call["model"], estimate_prompt_tokens(prompt),
            lambda: streamed_so_far(AIMessage(call["text"]))))
        self.ctx.checkpoint()

    def on_llm_new_token(self, token, *, run_id, **kwargs) -> None:
        if isinstance(token, str) and token:
            self.calls[run_id]["text"] += token
            self.ctx.partial_text += token
            self.ctx.hooks.token(self.node, token)
        self.ctx.checkpoint()

    def on_llm_end(self, response, *, run_id, **kwargs) -> None:
        call = self.calls.pop(run_id, None)
        if call is None:  # a completion model, not a chat model: not one this node knows how to account
            return
        generation = response.generations[0][0] if response.generations and response.generations[0] else None
        message = getattr(generation, "message", None) or AIMessage(call["text"])
        usage = usage_from_message(message, prompt=call["prompt"])
        reported = (message.response_metadata or {}).get("model_name") or call["model"]
        self.ctx.call_recorded(self.node, provider=call["provider"], reported_model=reported,
                               requested_model=call["model"], usage=usage, started=call["started"])

    def on_tool_start(self, serialized, input_str, *, run_id, inputs=None, **kwargs) -> None:
        self.ctx.claim_tool_calls(1, node_limit=self.ctx.config["max_tool_calls"])  # the run's limit holds here too
        self.tools[run_id] = {"tool": (serialized or {}).get("name") or kwargs.get("name") or "tool",
                              "arguments": inputs if isinstance(inputs, dict) else {"input": input_str},
                              "started": time.monotonic()}

    def _tool_ended(self, run_id, *, result: str, ok: bool, error: str) -> None:
        tool = self.tools.pop(run_id, None)
        if tool is None:
            return
        self.ctx.hooks.tool_called(self.node, tool=tool["tool"], arguments=tool["arguments"], result=result, ok=ok,
                                   error=error, duration_ms=int((time.monotonic() - tool["started"]) * 1000))

    def on_tool_end(self, output, *, run_id, **kwargs) -> None:
        content = getattr(output, "content", output)
        self._tool_ended(run_id, result=content if isinstance(content, str) else str(content), ok=True, error="")

    def on_tool_error(self, error, *, run_id, **kwargs) -> None:
        self._tool_ended(run_id, result="", ok=False, error=f"{type(error).__name__}: {error}")


def python_graph_invoke(node: Node, messages: list[BaseMessage], ctx: RunContext) -> list[BaseMessage]:
    """Run the registered graph on the turn's messages; returns the messages it added."""
    graph = graph_load(node.config["graph"])
    sent = [message.model_copy(update={"id": message.id or f"chatter-input-{index}"})
            for index, message in enumerate(messages)]
    result = graph.invoke({"messages": sent}, config={"callbacks": [CallAccounting(node, ctx)],
                                                      "recursion_limit": MAX_STEPS})
    known = {message.id for message in sent}
    return [message for message in (result or {}).get("messages") or []
            if isinstance(message, BaseMessage) and message.id not in known]
