"""The edge/node condition language (docs/usage.md#conditions), parsed into an AST (never `eval`).

Grammar (precedence: not > and > or)::

    condition  := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | primary
    primary    := "(" or_expr ")" | atom
    atom       := "has_tool_calls" | "no_tool_calls" | "has_errors"
                | "tool_calls" OP value
                | "variable" NAME OP value
                | "message" "contains" STRING
                | "loop" NODE_ID "continue"
    value      := INT | FLOAT | STRING | "true" | "false" | "null" | "config."KEY | "var."NAME
    OP         := "==" | "!=" | "<" | "<=" | ">" | ">="

Keywords are lowercase and case-sensitive. A variable NAME is a bare word or a double-quoted string
(variable names may contain any character). Strings support the escapes \\" and \\\\ only.
"""
from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

MAX_CONDITION_LENGTH = 1000
MAX_NESTING_DEPTH = 32

COMPARISON_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")  # two-char operators first: longest match wins

_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

# A bare word: keywords, node ids, variable names, references and unsigned numbers.
# Its characters are those of a node id (see graph_input.NODE_ID_PATTERN).
_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")


class ConditionError(ValueError):
    """A condition that does not parse. `position` is the character offset of the problem, if known."""

    def __init__(self, message: str, position: int | None = None):
        super().__init__(message if position is None else f"{message} (at character {position})")
        self.message = message
        self.position = position


@dataclass(frozen=True)
class ConditionContext:
    """What a condition can see of a run. Defaults describe an empty, error-free run."""

    pending_tool_calls: int = 0  # tool calls requested by the last AI message
    has_errors: bool = False
    tool_calls: int = 0  # tool calls executed so far in the run
    variables: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    last_message: str = ""
    loop_continue: Callable[[str], bool] = lambda node_id: False


# ---------------------------------------------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    value: Any

    def resolve(self, ctx: ConditionContext) -> Any:
        return self.value


@dataclass(frozen=True)
class ConfigRef:
    key: str

    def resolve(self, ctx: ConditionContext) -> Any:
        return ctx.config.get(self.key)


@dataclass(frozen=True)
class VariableRef:
    name: str

    def resolve(self, ctx: ConditionContext) -> Any:
        return ctx.variables.get(self.name)


Value = Union[Literal, ConfigRef, VariableRef]


@dataclass(frozen=True)
class HasToolCalls:
    def evaluate(self, ctx: ConditionContext) -> bool:
        return ctx.pending_tool_calls > 0


@dataclass(frozen=True)
class NoToolCalls:
    def evaluate(self, ctx: ConditionContext) -> bool:
        return not ctx.pending_tool_calls > 0


@dataclass(frozen=True)
class HasErrors:
    def evaluate(self, ctx: ConditionContext) -> bool:
        return bool(ctx.has_errors)


@dataclass(frozen=True)
class ToolCallsCompare:
    op: str
    right: Value

    def evaluate(self, ctx: ConditionContext) -> bool:
        return compare_values(ctx.tool_calls, self.op, self.right.resolve(ctx))


@dataclass(frozen=True)
class VariableCompare:
    name: str
    op: str
    right: Value

    def evaluate(self, ctx: ConditionContext) -> bool:
        return compare_values(ctx.variables.get(self.name), self.op, self.right.resolve(ctx))


@dataclass(frozen=True)
class MessageContains:
    text: str

    def evaluate(self, ctx: ConditionContext) -> bool:
        return self.text.casefold() in (ctx.last_message or "").casefold()


@dataclass(frozen=True)
class LoopContinue:
    node_id: str

    def evaluate(self, ctx: ConditionContext) -> bool:
        return bool(ctx.loop_continue(self.node_id))


@dataclass(frozen=True)
class Not:
    operand: Expression

    def evaluate(self, ctx: ConditionContext) -> bool:
        return not self.operand.evaluate(ctx)


@dataclass(frozen=True)
class And:
    operands: tuple[Expression, ...]  # n-ary so long chains don't deepen the tree

    def evaluate(self, ctx: ConditionContext) -> bool:
        return all(operand.evaluate(ctx) for operand in self.operands)


@dataclass(frozen=True)
class Or:
    operands: tuple[Expression, ...]

    def evaluate(self, ctx: ConditionContext) -> bool:
        return any(operand.evaluate(ctx) for operand in self.operands)


Expression = Union[
    HasToolCalls, NoToolCalls, HasErrors, ToolCallsCompare, VariableCompare, MessageContains, LoopContinue, Not, And, Or
]


@dataclass(frozen=True)
class Condition:
    """A parsed condition: the AST root, plus the source text and the loop nodes it refers to."""

    text: str
    root: Expression
    loop_refs: frozenset[str]

    def evaluate(self, ctx: ConditionContext) -> bool:
        return bool(self.root.evaluate(ctx))


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python, but `true` is not a number in the condition language.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if _is_number(value):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def compare_values(left: Any, op: str, right: Any) -> bool:
    """Compare two values the way conditions do (docs/usage.md#the-graph-format).

    Numbers compare numerically and strings as strings; other values of the same kind (booleans, null, lists,
    objects) only support `==`/`!=`. Values of different kinds are never equal and never ordered.
    """
    same_kind = _kind(left) == _kind(right)
    if op == "==":
        return same_kind and left == right
    if op == "!=":
        return not (same_kind and left == right)
    if same_kind and (_is_number(left) or isinstance(left, str)):
        return _ORDERING[op](left, right)
    return False


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # "word" | "number" | "string" | "op" | "(" | ")" | "end"
    text: str  # the raw text, or the unescaped value for strings
    position: int

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the condition"
        if self.kind == "string":
            return "a string"
        return repr(self.text)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char.isspace():
            index += 1
        elif char in "()":
            tokens.append(Token(char, char, index))
            index += 1
        elif char == '"':
            value, index_after = _read_string(text, index)
            tokens.append(Token("string", value, index))
            index = index_after
        elif char in "=!<>":
            op = next((op for op in COMPARISON_OPERATORS if text.startswith(op, index)), None)
            if op is None:
                raise ConditionError(f"unknown operator {char!r}; use one of {', '.join(COMPARISON_OPERATORS)}", index)
            tokens.append(Token("op", op, index))
            index += len(op)
        elif char == "-" and (number := _NUMBER.match(text, index)):
            tokens.append(Token("number", number.group(), index))
            index = number.end()
        elif word := _WORD.match(text, index):
            kind = "number" if _NUMBER.fullmatch(word.group()) else "word"
            tokens.append(Token(kind, word.group(), index))
            index = word.end()
        else:
            raise ConditionError(f"unexpected character {char!r}", index)
    tokens.append(Token("end", "", length))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read a double-quoted string starting at `start`; return its value and the index after the closing quote."""
    chars: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return "".join(chars), index + 1
        if char == "\\":
            escaped = text[index + 1] if index + 1 < len(text) else ""
            if escaped not in ('"', "\\"):
                raise ConditionError('unknown escape in string; only \\" and \\\\ are allowed', index)
            chars.append(escaped)
            index += 2
        else:
            chars.append(char)
            index += 1
    raise ConditionError("unterminated string", start)


# ---------------------------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0
        self.loop_refs: set[str] = set()

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def at_word(self, word: str) -> bool:
        return self.current.kind == "word" and self.current.text == word

    def expect_word(self, word: str, after: str) -> None:
        if not self.at_word(word):
            found = self.current
            raise ConditionError(f"expected {word!r} after {after}, found {found.describe()}", found.position)
        self.advance()

    def enter(self, token: Token) -> None:
        # Bounded nesting keeps both parsing and evaluation far from Python's recursion limit.
        self.depth += 1
        if self.depth > MAX_NESTING_DEPTH:
            raise ConditionError(f"condition is nested more than {MAX_NESTING_DEPTH} levels deep", token.position)

    def parse(self) -> Expression:
        if self.current.kind == "end":
            raise ConditionError("condition is empty", 0)
        expression = self.parse_or()
        if self.current.kind != "end":
            raise ConditionError(
                f"unexpected {self.current.describe()}; expected 'and', 'or' or the end", self.current.position
            )
        return expression

    def parse_or(self) -> Expression:
        operands = [self.parse_and()]
        while self.at_word("or"):
            self.advance()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and(self) -> Expression:
        operands = [self.parse_not()]
        while self.at_word("and"):
            self.advance()
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def parse_not(self) -> Expression:
        if self.at_word("not"):
            token = self.advance()
            self.enter(token)
            operand = self.parse_not()
            self.depth -= 1
            return Not(operand)
        return self.parse_primary()

    def parse_primary(self) -> Expression:
        token = self.current
        if token.kind == "(":
            self.advance()
            self.enter(token)
            expression = self.parse_or()
            if self.current.kind != ")":
                raise ConditionError(
                    f"expected ')' to close the '(' at character {token.position}, found {self.current.describe()}",
                    self.current.position,
                )
            self.advance()
            self.depth -= 1
            return expression
        return self.parse_atom()

    def parse_atom(self) -> Expression:
        token = self.advance()
        if token.kind == "word":
            if token.text == "has_tool_calls":
                return HasToolCalls()
            if token.text == "no_tool_calls":
                return NoToolCalls()
            if token.text == "has_errors":
                return HasErrors()
            if token.text == "tool_calls":
                op = self.parse_operator("'tool_calls'")
                value_position = self.current.position
                right = self.parse_value(f"'tool_calls {op}'")
                if isinstance(right, Literal) and not _is_number(right.value):
                    message = "'tool_calls' can only be compared with a number or a reference"
                    raise ConditionError(message, value_position)
                return ToolCallsCompare(op, right)
            if token.text == "variable":
                name = self.parse_variable_name()
                op = self.parse_operator(f"'variable {name}'")
                return VariableCompare(name, op, self.parse_value(f"'variable {name} {op}'"))
            if token.text == "message":
                self.expect_word("contains", "'message'")
                text = self.advance()
                if text.kind != "string":
                    raise ConditionError(
                        f"expected a double-quoted string after 'message contains', found {text.describe()}",
                        text.position,
                    )
                return MessageContains(text.text)
            if token.text == "loop":
                node = self.advance()
                if node.kind not in ("word", "number") or not _NODE_ID.fullmatch(node.text):
                    raise ConditionError(f"expected a node id after 'loop', found {node.describe()}", node.position)
                self.expect_word("continue", f"'loop {node.text}'")
                self.loop_refs.add(node.text)
                return LoopContinue(node.text)
        raise ConditionError(
            f"expected a condition (has_tool_calls, no_tool_calls, has_errors, tool_calls, variable, message, loop, "
            f"'not' or '('), found {token.describe()}",
            token.position,
        )

    def parse_variable_name(self) -> str:
        token = self.advance()
        if token.kind == "string" and token.text:
            return token.text
        if token.kind == "word":
            return token.text
        raise ConditionError(f"expected a variable name after 'variable', found {token.describe()}", token.position)

    def parse_operator(self, after: str) -> str:
        token = self.advance()
        if token.kind != "op":
            raise ConditionError(
                f"expected a comparison ({' '.join(COMPARISON_OPERATORS)}) after {after}, found {token.describe()}",
                token.position,
            )
        return token.text

    def parse_value(self, after: str) -> Value:
        token = self.advance()
        if token.kind == "string":
            return Literal(token.text)
        if token.kind == "number":
            return Literal(float(token.text) if "." in token.text else int(token.text))
        if token.kind == "word":
            if token.text in ("true", "false", "null"):
                return Literal({"true": True, "false": False, "null": None}[token.text])
            for prefix, reference in (("config.", ConfigRef), ("var.", VariableRef)):
                if token.text.startswith(prefix):
                    name = token.text[len(prefix) :]
                    if not _WORD.fullmatch(name):
                        raise ConditionError(f"expected a name after {prefix!r}", token.position + len(prefix))
                    return reference(name)
        raise ConditionError(
            f"expected a value (a number, a double-quoted string, true, false, null, config.<key> or var.<name>) "
            f"after {after}, found {token.describe()}",
            token.position,
        )


def parse_condition(text: str) -> Condition:
    """Parse a condition; raise ConditionError saying what is wrong and where."""
    if not isinstance(text, str):
        raise ConditionError(f"a condition must be a string, not {_kind(text)}")
    if len(text) > MAX_CONDITION_LENGTH:
        raise ConditionError(f"condition is longer than {MAX_CONDITION_LENGTH} characters ({len(text)})")
    return _parse_cached(text)


# Conditions are immutable, so the engine can re-parse a node's condition on every pass for free.
@functools.lru_cache(maxsize=2048)
def _parse_cached(text: str) -> Condition:
    parser = _Parser(text)
    root = parser.parse()
    return Condition(text=text, root=root, loop_refs=frozenset(parser.loop_refs))
