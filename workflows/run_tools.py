"""The MCP tools a run may call, for its engine (RunHooks.tool_schemas and tool_run, answered by the run's
recorder): those its config's `allowed_tools` names (`<server>__<tool>` or `<server>__*`) that its owner may call
(their own servers and the shared ones, switched on), each call through tools.services.mcp_server_tool_run."""
from __future__ import annotations

from collections.abc import Sequence

from tools.selectors import ToolUnavailable, mcp_secrets, mcp_tool_get, secrets_redacted, tool_list
from tools.services import mcp_server_tool_run
from workflows.engine.hooks import ToolOutcome
from workflows.engine.tools import tool_allowed


class RunTools:
    def __init__(self, execution):
        self.execution = execution
        self._schemas: dict[tuple[str, ...], list[dict]] = {}  # read once per run for an allow-list
        self._secrets: dict[str, list[str]] = {}  # per server: read once per run

    def schemas(self, patterns: Sequence[str]) -> list[dict]:
        """The allowed MCP tools the owner may call now, as OpenAI function schemas (what a model is bound with)."""
        key = tuple(patterns)
        if key not in self._schemas:
            self._schemas[key] = [
                {"type": "function", "function": {"name": tool["name"], "description": tool["description"],
                                                  "parameters": tool["input_schema"]}}
                for tool in tool_list(user=self.execution.owner)
                if tool["server"] is not None and tool["enabled"] and tool_allowed(tool["name"], key)]
        return self._schemas[key]

    def redacted(self, value, *, server_id: str | None):
        """`value` (a call's arguments, result or error) without the secrets registered for the server (its header
        values, the run owner's own credentials): what a ToolCall row and the audit keep."""
        if server_id is None:
            return value
        key = str(server_id)
        if key not in self._secrets:
            self._secrets[key] = mcp_secrets(server_id=server_id, user=self.execution.owner)
        return secrets_redacted(value, self._secrets[key])

    def run(self, name: str, arguments: dict, *, timeout_s: float) -> ToolOutcome:
        """Call the MCP tool `name` as the run's owner; whatever happens, an outcome the model is told."""
        user = self.execution.owner
        try:
            server, tool = mcp_tool_get(user=user, name=name)  # once, for the call and its row
            result = mcp_server_tool_run(server=server, user=user, tool=tool, arguments=arguments,
                                         timeout_s=timeout_s)
        except ToolUnavailable as exc:
            return ToolOutcome(ok=False, text="", error=str(exc))
        return ToolOutcome(ok=result.ok, text=result.text, error=result.error, server_id=str(server.pk))
