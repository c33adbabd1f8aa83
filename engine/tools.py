"""Built-in tools. The calculator walks a parsed AST of plain arithmetic (never eval)."""
from __future__ import annotations

import ast
import operator
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool

MAX_EXPRESSION_LENGTH = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 10**100

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class ToolFailed(Exception):
    """A tool call failed; the message goes back to the model and into the ToolCall row."""


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolFailed("exponent too large")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolFailed("division by zero") from None
        if isinstance(result, complex) or abs(result) > MAX_MAGNITUDE:
            raise ToolFailed("result out of range")
        return result
    raise ToolFailed(f"unsupported expression element: {type(node).__name__}")


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression (+ - * / // % ** and parentheses)."""
    text = str(expression).replace("^", "**").replace("×", "*").replace("÷", "/").strip()
    if not text:
        raise ToolFailed("empty expression")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ToolFailed("expression too long")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        raise ToolFailed(f"not an arithmetic expression: {expression!r}") from None
    try:
        result = _evaluate(tree)
    except RecursionError:
        raise ToolFailed("expression too deeply nested") from None
    if isinstance(result, float) and result.is_integer():
        result = int(result)
    return str(round(result, 10) if isinstance(result, float) else result)


def current_time() -> str:
    """The current date and time in UTC, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _calculator_tool() -> StructuredTool:
    from langchain_core.tools import StructuredTool

    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression such as "12*7" or "(3 + 4) / 2"."""
        return calculate(expression)

    return StructuredTool.from_function(calculator)


def _current_time_tool() -> StructuredTool:
    from langchain_core.tools import StructuredTool

    def current_time_tool() -> str:
        """Return the current date and time (UTC, ISO 8601)."""
        return current_time()

    return StructuredTool.from_function(current_time_tool, name="current_time")


class _Tools(Mapping):
    """The tools by name, as LangChain tools. Names are known at once; the tools are made on first use,
    because LangChain's tool module takes about half a second to import and most commands never call one."""

    def __init__(self, makers: dict[str, Callable[[], StructuredTool]]) -> None:
        self._makers = makers
        self._tools: dict[str, StructuredTool] = {}

    def __getitem__(self, name: str) -> StructuredTool:
        if name not in self._tools:
            self._tools[name] = self._makers[name]()  # a KeyError for an unknown name, like a dict
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._makers

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)


TOOLS: Mapping[str, StructuredTool] = _Tools({"calculator": _calculator_tool, "current_time": _current_time_tool})
DEFAULT_TOOLS = ("calculator", "current_time")


def tool_run(name: str, arguments: dict) -> str:
    tool = TOOLS.get(name)
    if tool is None:
        raise ToolFailed(f"unknown tool {name!r}")
    if not isinstance(arguments, dict):
        raise ToolFailed("tool arguments must be an object")
    try:
        return str(tool.invoke(arguments))
    except ToolFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad argument set is the model's mistake, reported back to it
        raise ToolFailed(f"{type(exc).__name__}: {exc}") from None


ToolRunner = Callable[[str, dict], str]

# An MCP tool in an allow-list: `<server>__<tool>`, or `<server>__*` for every tool of the server. Which of them the
# run's user may call is known only when it runs (the app hands them to the engine through its hooks).
MCP_QUALIFIER = "__"
MCP_SERVER_METADATA = "chatter_mcp_server"  # an MCP tool's LangChain metadata: its server's id (tools.langchain)
MCP_SERVER_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?$")
# What a model may be offered as a function name (OpenAI's and Anthropic's rule). An MCP tool whose qualified name
# is not one (MCP allows tool names of 128 characters, and dots) is left out of its server's list at discovery, and
# an allow-list cannot name it.
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def tool_name_offerable(qualified: str) -> bool:
    """Whether the qualified name `<server>__<tool>` can be offered to a model as a function name: a tool's, so not
    empty after its server's `__` (`docs__` names no tool: it could be neither called nor allowed)."""
    return bool(FUNCTION_NAME.match(qualified)) and bool(qualified.partition(MCP_QUALIFIER)[2])


def tool_allowed(name: str, allowed: set[str] | list[str] | tuple[str, ...]) -> bool:
    """Whether an allow-list names this tool: itself, or (an MCP tool) its server's `<server>__*`."""
    if name in allowed:
        return True
    server, qualifier, tool = name.partition(MCP_QUALIFIER)
    return bool(qualifier and server and tool) and f"{server}{MCP_QUALIFIER}*" in allowed


def budget_refusal(budget: str, name: str) -> str:
    """What the model is told of a priced tool's call the run's hard budget could not cover (it was not made)."""
    return f"the run reached budget {budget}: the priced tool {name!r} was not called"


def allowed_tool_unknown(name: object) -> bool:
    """An allow-list entry that is neither a built-in tool nor an MCP tool's name or server pattern. An MCP tool's
    name is one a model can be offered (tool_name_offerable, what discovery keeps), whatever its tool starts with."""
    if not isinstance(name, str):
        return True
    if name in TOOLS:
        return False
    server, qualifier, tool = name.partition(MCP_QUALIFIER)
    return not (qualifier and tool and MCP_SERVER_PART.match(server) and (tool == "*" or tool_name_offerable(name)))
