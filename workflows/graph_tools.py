"""MCP tools for a registered Python graph's factory (CHATTER_GRAPHS): the tools its run's owner may call.

    from langchain.agents import create_agent
    from workflows.graph_tools import run_tools

    async def graph(config):
        return create_agent(model, tools=[*await run_tools(config, allowed=["tracker__*"])])

Outside a run (a graph read for its structure or schemas) there is no owner: no MCP tools."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

from django.db import connection

from tools.langchain import user_tools


async def run_tools(config: dict | None, *, allowed: Sequence[str]) -> list:
    """The MCP tools among `allowed` that the owner of the run (`config`'s configurable `run_id`) may call, as
    LangChain tools (tools.langchain.user_tools), a priced one's calls held to the run's budgets; none outside a
    run."""
    run_id = ((config or {}).get("configurable") or {}).get("run_id")
    owner = await asyncio.to_thread(_run_owner, run_id) if run_id else None
    if owner is None:
        return []
    accounting = _run_accounting(config)  # the run's: a priced call is held to its budgets before it is made
    return await user_tools(owner, allowed=allowed,
                            before_call=accounting.tool_reserve if accounting is not None else None)


def _run_accounting(config: dict):
    """The run's GraphAccounting among the config's callbacks (a list, or LangChain's callback manager)."""
    from engine.graph_accounting import GraphAccounting

    callbacks = config.get("callbacks") or []
    handlers = callbacks if isinstance(callbacks, list) else getattr(callbacks, "handlers", [])
    return next((handler for handler in handlers if isinstance(handler, GraphAccounting)), None)


def _run_owner(run_id: str):
    from workflows.models import WorkflowExecution

    try:
        execution = WorkflowExecution.objects.select_related("owner").filter(pk=run_id).first()
        return execution.owner if execution else None
    finally:
        connection.close()
