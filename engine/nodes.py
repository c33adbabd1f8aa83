"""What each node type does. A behaviour takes (node, state, ctx) and returns an Outcome; tracking,
limits and error routing are the compiler's job (compile.py), so every node type gets them alike."""
from __future__ import annotations

import functools
from decimal import Decimal
import random
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Callable, TypedDict

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
)

from engine.chat_messages import content_text, messages_from_openai
from engine.conditions import ConditionContext, parse_condition
from engine.graph import Graph, Node
from engine.hooks import RetrievalRequest
from engine.retrieval import citation, collections_retrieve
from engine.runtime import RunContext
from engine.tools import TOOLS, ToolFailed, budget_refusal, tool_allowed, tool_run

MAX_OUTPUT_CHARS = 500
SUMMARY_PROMPT = "Summarize the conversation so far in a few sentences, keeping facts and numbers."


def _merged(old: dict | None, new: dict | None) -> dict:
    """A node returns the whole dict it changed; nodes of parallel branches (one step) each return theirs."""
    return {**(old or {}), **(new or {})}


def _messages_added(old: list | None, new) -> list[BaseMessage]:
    """Messages add up; each gets an id (a client names a message by it: regenerate, edit), and a state update's
    message given as a dict (LangChain's or OpenAI's shape) becomes a message."""
    added = new if isinstance(new, list) else [new]
    if not all(isinstance(m, BaseMessage) for m in added):
        added = convert_to_messages(added)
    for message in added:
        if message.id is None:  # as LangGraph's add_messages names them: in place, a node's message being new
            message.id = str(uuid.uuid4())
    return [*(old or []), *added]


class RunState(TypedDict, total=False):
    # The run's messages: input, AI replies, tool results. On a thread that keeps its graph's state (turn_start
    # set) also the thread's earlier messages: this turn's begin at turn_start.
    messages: Annotated[list[BaseMessage], _messages_added]
    turn_start: int
    history: list[BaseMessage]  # earlier conversation loaded by a memory node
    documents: list[dict]  # context found by a retrieval node
    variables: Annotated[dict[str, Any], _merged]
    conditions: Annotated[dict[str, bool], _merged]  # conditional node id -> last result
    loops: Annotated[dict[str, int], _merged]  # node id -> passes so far (loop and delay nodes)
    errors: list[dict]  # unhandled node failures, routed to error_handler nodes
    retries: Annotated[dict[str, int], _merged]
    retry_target: str | None


@dataclass
class Outcome:
    update: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)
    skipped: bool = False


def turn_messages(state: RunState) -> list[BaseMessage]:
    """This turn's messages (on a thread that keeps its graph's state, those since its input)."""
    return (state.get("messages") or [])[state.get("turn_start") or 0:]


def last_ai_message(state: RunState) -> AIMessage | None:
    for message in reversed(turn_messages(state)):
        if isinstance(message, AIMessage):
            return message
    return None


def conversation_before(state: RunState, ctx: RunContext, limit: int) -> list[BaseMessage]:
    """The last `limit` messages of the conversation before this turn: the thread's own state when it keeps one
    (they are in it already, never read twice), else the conversation's messages in the database."""
    if "turn_start" not in state:
        return ctx.hooks.history(limit)
    earlier = (state.get("messages") or [])[:state["turn_start"]][-limit:] if limit else []
    while earlier and isinstance(earlier[0], ToolMessage):  # a tool result without its call is refused by models
        earlier = earlier[1:]
    return earlier


def condition_context(graph: Graph, state: RunState, ctx: RunContext) -> ConditionContext:
    messages = state.get("messages") or []
    last = messages[-1] if messages else None
    pending = len(last.tool_calls) if isinstance(last, AIMessage) else 0
    loops = state.get("loops") or {}

    def loop_continue(node_id: str) -> bool:
        loop = graph.node(node_id)
        if loops.get(node_id, 0) > loop.config["max_iterations"]:
            return False
        condition = loop.config.get("condition")
        return condition is None or _parsed(condition).evaluate(context)

    context = ConditionContext(
        pending_tool_calls=pending,
        has_errors=bool(state.get("errors")),
        tool_calls=ctx.tool_calls,
        variables=state.get("variables") or {},
        config=ctx.config,
        last_message=_text(last) if last is not None else "",
        loop_continue=loop_continue,
    )
    return context


_parsed = functools.lru_cache(maxsize=1024)(parse_condition)


def _text(message: BaseMessage) -> str:
    return content_text(message.content)


def _setting(node: Node, key: str, ctx: RunContext, run_key: str | None = None) -> Any:
    """A node's own setting wins over the run config; the run config fills what the node leaves open."""
    value = node.config.get(key)
    return ctx.config[run_key or key] if value is None else value


# --- behaviours -----------------------------------------------------------------------------------------
def passthrough(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    return Outcome()


PROMPT_CONFIG_KEYS = ("provider", "model", "temperature", "max_tokens")  # what a stored prompt's config may set


def model(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    prompt: list[BaseMessage] = []
    if node.config.get("prompt"):  # a stored prompt, fetched now: a label moved since the last run is seen
        fetched = ctx.hooks.prompt(node, node.config["prompt"], state.get("variables") or {})
        prompt += messages_from_openai(fetched.messages)
        node = replace(node, config={**node.config, **{
            key: fetched.config[key] for key in PROMPT_CONFIG_KEYS
            if node.config.get(key) is None and fetched.config.get(key) is not None}})
    elif system := node.config.get("system_message") or ctx.config["system_prompt"]:
        prompt.append(SystemMessage(system))
    documents = state.get("documents") or []
    if documents:
        context = "\n\n".join(f"[{d['title']}]\n{d['content']}" for d in documents)
        prompt.append(SystemMessage(f"Documents that may help answer:\n\n{context}"))
    prompt += state.get("history") or []
    prompt += turn_messages(state)
    tools_on = _setting(node, "enable_tools", ctx)
    tools = _bound_tools(ctx) if tools_on and ctx.tool_budget_left() > 0 else ()
    reply = ctx.call_model(node, prompt, tools=tools)
    return Outcome(
        update={"messages": [reply]},
        output={"content": _text(reply)[:MAX_OUTPUT_CHARS], "tool_calls": [c["name"] for c in reply.tool_calls]},
    )


def _bound_tools(ctx: RunContext) -> tuple[str | dict, ...]:
    """The tools a model may call: the allowed built-ins by name, then the allowed MCP tools the run's user may call
    (their schemas, from the app through the hooks)."""
    allowed = ctx.config["allowed_tools"]
    mcp = [name for name in allowed if name not in TOOLS]
    return (*[name for name in allowed if name in TOOLS], *(ctx.hooks.tool_schemas(mcp) if mcp else ()))


def embedding(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    """Embeds the run's variable `input` (a list of texts) with the run's provider and model: the vectors go to the
    variable `embeddings` (the gateway's /v1/embeddings). The variable `batch_size` splits the texts into calls of
    at most that many, each an LLM call of its own; without it they go in one call."""
    variables = state.get("variables") or {}
    inputs = variables.get("input")
    if not isinstance(inputs, list) or not inputs:
        raise VariableError("an embedding node embeds the variable `input`: a list of texts")
    size = variables.get("batch_size") or len(inputs)
    if not isinstance(size, int) or size < 1:
        raise VariableError("batch_size must be a positive whole number")
    vectors = []
    for start in range(0, len(inputs), size):
        vectors += ctx.embed(node, inputs[start:start + size], dimensions=variables.get("dimensions"))
    return Outcome(update={"variables": {**variables, "embeddings": vectors}}, output={"embedded": len(vectors)})


def rerank(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    """Reranks the run's variable `documents` (a list of texts) against its variable `query` with the run's provider
    and model (a rerank API): the variable `reranked` gets the best `top_n` (default all) as {index, relevance_score},
    most relevant first, in one LLM call of kind `rerank` (knowledge's searches, outside a run: gateway.rerank)."""
    variables = state.get("variables") or {}
    query, documents = variables.get("query"), variables.get("documents")
    if not isinstance(query, str) or not query.strip():
        raise VariableError("a rerank node reranks against the variable `query`: a text")
    if not isinstance(documents, list) or not documents or not all(isinstance(text, str) for text in documents):
        raise VariableError("a rerank node reranks the variable `documents`: a list of texts")
    top_n = variables.get("top_n") or len(documents)
    if not isinstance(top_n, int) or top_n < 1:
        raise VariableError("top_n must be a positive whole number")
    scores = ctx.rerank(node, query, documents, provider=ctx.config["provider"], model=ctx.config["model"],
                        top_n=min(top_n, len(documents)))
    reranked = [{"index": index, "relevance_score": score} for index, score in scores]
    return Outcome(update={"variables": {**variables, "reranked": reranked}}, output={"reranked": len(reranked)})


def tools(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    reply = last_ai_message(state)
    calls = reply.tool_calls if reply is not None else []
    if not calls:
        return Outcome(skipped=True)
    ctx.claim_tool_calls(len(calls), node_limit=node.config["max_tool_calls"])
    allowed = set(ctx.config["allowed_tools"]) if ctx.config["enable_tools"] else set()
    results = []
    for call in calls:
        name, arguments = call["name"], call.get("args") or {}
        started = time.monotonic()
        ok, error, result, server_id, cost = True, "", "", None, Decimal("0")
        try:
            if not tool_allowed(name, allowed):
                # The call fails (recorded, the run goes on) and the refusal is reported like a limit.
                ctx.hooks.limit_exceeded("allowed_tools", name)
                raise ToolFailed(f"tool {name!r} is not allowed in this run")
            if name in TOOLS:
                ctx.hooks.tool_started(node, tool=name, call_id=call.get("id"), waits=False)
                result = tool_run(name, arguments)
            else:
                # An MCP tool reaches outside the process: the run writes what it holds (and sees a cancel) first.
                ctx.hooks.tool_started(node, tool=name, call_id=call.get("id"), waits=True)
                ctx.checkpoint()
                price = ctx.hooks.tool_price(name)
                if price and (budget := ctx.hooks.tool_cover(price)) is not None:
                    raise ToolFailed(budget_refusal(budget, name))
                outcome = ctx.hooks.tool_run(name, arguments, timeout_s=min(node.config["tool_timeout_ms"] / 1000,
                                                                            ctx.remaining_s()))
                server_id, result = outcome.server_id, outcome.text
                if not outcome.ok:
                    raise ToolFailed(outcome.error)
                cost = price  # a call is charged when it answered
        except ToolFailed as exc:
            ok, error = False, str(exc)
        duration_ms = int((time.monotonic() - started) * 1000)
        ctx.tool_cost_add(cost)
        # Its id now, not the state's reducer's: the run's watchers are told the message as the state will hold it.
        told = ToolMessage(content=result if ok else f"Error: {error}", tool_call_id=call["id"], name=name,
                           status="success" if ok else "error", id=str(uuid.uuid4()))
        ctx.hooks.tool_called(node, tool=name, arguments=arguments, result=result, ok=ok, error=error,
                              duration_ms=duration_ms, server_id=server_id, cost=cost, message=told)
        results.append(told)
    # The built-in tools only compute (bounded input, no I/O): the node checks in only before an MCP tool, which
    # waits; a cancel or the run's timeout is seen as the next call starts.
    return Outcome(update={"messages": results}, output={"tools": [c["name"] for c in calls]})


def memory(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    if not ctx.config["enable_memory"]:
        return Outcome(skipped=True)
    window = _setting(node, "memory_window", ctx)
    if not node.config.get("summarize"):
        history = conversation_before(state, ctx, window)
        return Outcome(update={"history": history}, output={"messages": len(history)})
    history = conversation_before(state, ctx, window * 10)
    older, recent = history[:-window], history[-window:]
    if not older:
        return Outcome(update={"history": recent}, output={"messages": len(recent)})
    summary = ctx.call_model(node, [SystemMessage(SUMMARY_PROMPT), *older, HumanMessage(SUMMARY_PROMPT)])
    summarized = [SystemMessage(f"Summary of the earlier conversation: {_text(summary)}"), *recent]
    return Outcome(update={"history": summarized}, output={"messages": len(recent), "summarized": len(older)})


def retrieval(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    """The last user message searched: in the knowledge collections the node names (always: naming them is asking
    for them), else, when the run enables retrieval, in the owner's documents by keywords."""
    collections = node.config.get("collections")
    if not collections and not ctx.config["enable_retrieval"]:
        return Outcome(skipped=True)
    query = next((_text(m) for m in reversed(state.get("messages") or []) if isinstance(m, HumanMessage)), "")
    if not collections:
        documents = ctx.hooks.documents(query, _setting(node, "max_documents", ctx)) if query else []
        return Outcome(update={"documents": documents}, output={"documents": [d["id"] for d in documents]})
    if not query.strip():
        return Outcome(update={"documents": []}, output={"documents": []})
    request = RetrievalRequest(
        query=query, collections=tuple(collections), k=node.config.get("k") or _setting(node, "max_documents", ctx),
        mode=node.config.get("mode") or "hybrid", score_threshold=node.config.get("score_threshold"),
        filters=node.config.get("filters"), rerank_model=node.config.get("rerank_model"))
    chunks = collections_retrieve(node, ctx, request)
    documents = [{"id": chunk["chunk_id"], "title": chunk["title"], "content": chunk["text"],
                  "citation": citation(chunk)} for chunk in chunks]
    return Outcome(update={"documents": documents}, output={
        "documents": [d["id"] for d in documents], "citations": [d["citation"] for d in documents]})


def conditional(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    result = _parsed(node.config["condition"]).evaluate(condition_context(graph, state, ctx))
    return Outcome(update={"conditions": {**(state.get("conditions") or {}), node.id: result}},
                   output={"result": result})


def loop(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    loops = {**(state.get("loops") or {})}
    loops[node.id] = loops.get(node.id, 0) + 1
    return Outcome(update={"loops": loops}, output={"pass": loops[node.id]})


class VariableError(Exception):
    pass


def variable(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    variables = {**(state.get("variables") or {})}
    name, operation = node.config["variable_name"], node.config["operation"]
    value = node.config.get("value")
    current = variables.get(name)
    if operation == "get":
        return Outcome(output={"value": current})
    if operation == "set":
        variables[name] = value
    elif operation == "append":
        if current is not None and not isinstance(current, list):
            raise VariableError(f"variable {name!r} is not a list")
        variables[name] = [*(current or []), value]
    else:
        step = 1 if value is None else value
        if not _is_number(step) or (current is not None and not _is_number(current)):
            raise VariableError(f"cannot {operation} variable {name!r} by {step!r}")
        sign = 1 if operation == "increment" else -1
        variables[name] = (current or 0) + sign * step
    return Outcome(update={"variables": variables}, output={"value": variables[name]})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def error_handler(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    errors = state.get("errors") or []
    if not errors:
        return Outcome(update={"retry_target": None}, skipped=True)
    failed = errors[-1]
    retries = {**(state.get("retries") or {})}
    if retries.get(failed["node_id"], 0) < node.config["retry_count"]:
        retries[failed["node_id"]] = retries.get(failed["node_id"], 0) + 1
        return Outcome(
            update={"errors": [], "retries": retries, "retry_target": failed["node_id"]},
            output={"retry": failed["node_id"], "attempt": retries[failed["node_id"]]},
        )
    if node.config["fallback_action"] == "stop":
        raise HandlerStopped(failed["message"])
    return Outcome(update={"errors": [], "retry_target": None}, output={"continued_after": failed["node_id"]})


class HandlerStopped(Exception):
    """An error handler gave up: the run fails with the error it was handling."""


def delay(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    loops = {**(state.get("loops") or {})}
    passes = loops[node.id] = loops.get(node.id, 0) + 1
    base = node.config["duration_ms"]
    kind = node.config["delay_type"]
    duration = {
        "fixed": base,
        "random": random.uniform(0, base),
        "exponential": min(base * 2 ** (passes - 1), 60_000),
    }[kind]
    deadline = time.monotonic() + duration / 1000
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))
        ctx.checkpoint()
    return Outcome(update={"loops": loops}, output={"slept_ms": int(duration)})


def human_input(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    """Ask a person (LangGraph's interrupt: the run pauses, its state in its checkpoints); the node runs again from
    its start when the run resumes, and the answer is what interrupt() then returns. The answer goes to the
    variable (the node's id unless `variable` names one) and, when it is text, into the messages."""
    from langgraph.types import interrupt

    cfg = node.config
    answer = interrupt({"node_id": node.id, "prompt": cfg["prompt"], "schema": cfg.get("schema"),
                        "timeout_s": cfg.get("timeout_s"), "on_timeout": cfg["on_timeout"]})
    update: dict = {"variables": {**(state.get("variables") or {}), cfg.get("variable") or node.id: answer}}
    if isinstance(answer, str):
        update["messages"] = [HumanMessage(answer)]
    return Outcome(update=update, output={"answer": answer})


Behaviour = Callable[[Node, RunState, RunContext, Graph], Outcome]
def python_graph(node: Node, state: RunState, ctx: RunContext, graph: Graph) -> Outcome:
    """A registered Python graph (CHATTER_GRAPHS) run on the turn (with the conversation's recent history when
    memory is on); its chat-model calls and tool calls are accounted by engine.python_graphs."""
    from engine.python_graphs import python_graph_invoke

    history = conversation_before(state, ctx, ctx.config["memory_window"]) if ctx.config["enable_memory"] else []
    added = python_graph_invoke(node, [*history, *turn_messages(state)], ctx)
    reply = next((m for m in reversed(added) if isinstance(m, AIMessage)), None)
    return Outcome(update={"messages": added}, output={
        "content": _text(reply)[:MAX_OUTPUT_CHARS] if reply else "", "messages": len(added)})


BEHAVIOURS: dict[str, Behaviour] = {
    "start": passthrough,
    "end": passthrough,
    "model": model,
    "embedding": embedding,
    "rerank": rerank,
    "tools": tools,
    "memory": memory,
    "retrieval": retrieval,
    "conditional": conditional,
    "loop": loop,
    "variable": variable,
    "error_handler": error_handler,
    "delay": delay,
    "python_graph": python_graph,
    "human_input": human_input,
}
