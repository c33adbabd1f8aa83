"""MCP tools for a registered Python graph's factory (CHATTER_GRAPHS): the tools its run's owner may call.

    from langgraph.prebuilt import create_react_agent
    from workflows.graph_tools import run_tools

    async def graph(config):
        return create_react_agent(model, tools=[*await run_tools(config, allowed=["tracker__*"])])

Outside a run (a graph read for its structure or schemas) there is no owner: no MCP tools."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

from django.db import connection

from tools.langchain import user_tools


async def run_tools(config: dict | None, *, allowed: Sequence[str]) -> list:
    """The MCP tools among `allowed` that the owner of the run (`config`'s configurable `run_id`) may call, as
    LangChain tools (tools.langchain.user_tools); none outside a run."""
    run_id = ((config or {}).get("configurable") or {}).get("run_id")
    owner = await asyncio.to_thread(_run_owner, run_id) if run_id else None
    return await user_tools(owner, allowed=allowed) if owner is not None else []


def _run_owner(run_id: str):
    from workflows.models import WorkflowExecution

    try:
        execution = WorkflowExecution.objects.select_related("owner").filter(pk=run_id).first()
        return execution.owner if execution else None
    finally:
        connection.close()
