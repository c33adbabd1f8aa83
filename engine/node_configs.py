"""The config of each node type (docs/usage.md#the-graph-format): one pydantic model per type, with its keys, defaults
and ranges.

Validation is strict (no "10" for 10, no 1 for true) and unknown keys are errors. A key whose default is None
is left out of the normalized config unless given: for those, absent or null means "use the run config".
Our own checks raise `PydanticCustomError` with one of our error codes as its type (graph_input.py turns
pydantic's errors into ours).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo
from pydantic_core import PydanticCustomError

from engine.conditions import ConditionError, parse_condition
from engine.json_schemas import outside_refs
from engine.settings import settings

MAX_VALUE_DEPTH = 32  # nesting of free-form JSON values (variable.value): deeper ones could exhaust the stack


def custom_error(code: str, message: str) -> PydanticCustomError:
    """An error of ours raised inside pydantic validation; the message is taken as it is, never formatted."""
    return PydanticCustomError(code, "{message}", {"message": message})


@dataclass(frozen=True)
class KnownNodes:
    """What the graph's nodes say they are, read before they are validated (the validation context).

    Edges and conditions are checked against every node that names itself, even one with problems of its own,
    so that every error shows at once.
    """

    ids: frozenset[str]
    types: Mapping[str, str]  # node id → type, for the nodes whose type is known


def _checked_condition(text: str, info: ValidationInfo) -> str:
    try:
        condition = parse_condition(text)
    except ConditionError as exc:
        raise custom_error("bad_condition", f"does not parse: {exc}") from None
    known = info.context
    if isinstance(known, KnownNodes):  # `loop X continue` must name a loop node of this graph
        problems = []
        for node_id in sorted(condition.loop_refs):
            node_type = known.types.get(node_id)
            if node_type != "loop":
                what = "is not a node" if node_type is None else f"is a {node_type} node, not a loop node"
                problems.append(f"'loop {node_id} continue', but {node_id!r} {what}")
        if problems:
            raise custom_error("bad_condition", "has " + "; and ".join(problems))
    return text


def _within_depth(value: Any) -> Any:
    """Counted without recursion: a hostile value could be nested deeper than Python's stack allows."""
    stack = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, (list, tuple, dict)):
            if depth == MAX_VALUE_DEPTH:
                raise custom_error("out_of_range", f"is nested more than {MAX_VALUE_DEPTH} levels deep")
            children = current.values() if isinstance(current, dict) else current
            stack.extend((child, depth + 1) for child in children)
    return value


# The text of a condition that parses and whose `loop X continue` atoms name loop nodes of the graph.
ConditionText = Annotated[str, AfterValidator(_checked_condition)]


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoConfig(NodeConfig):
    """start and end nodes take no config."""


class PromptRef(NodeConfig):
    """A stored prompt (prompts app), fetched when the node runs: a label move reaches the next run."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # absent: production
    version: int | None = Field(default=None, ge=1)

    def model_post_init(self, context: Any) -> None:
        if self.label is not None and self.version is not None:
            raise custom_error("out_of_range", "give label or version, not both")


class ModelConfig(NodeConfig):
    # Each key overrides the run config's key of the same name; none has a default of its own. `prompt` replaces
    # system_message; its version's config fills the keys the node leaves open.
    prompt: PromptRef | None = None
    system_message: str | None = Field(default=None, max_length=20000)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1, le=200000)
    provider: Literal["local", "openai", "anthropic"] | None = None
    model: str | None = Field(default=None, max_length=255)
    enable_tools: bool | None = None


class ToolsConfig(NodeConfig):
    max_tool_calls: int = Field(default=10, ge=1, le=100)
    tool_timeout_ms: int = Field(default=30000, ge=1, le=300000)


class MemoryConfig(NodeConfig):
    memory_window: int | None = Field(default=None, ge=1, le=1000)  # absent: the run config's (10)
    summarize: bool = False


FilterValue = str | int | float | bool


class RetrievalConfig(NodeConfig):
    max_documents: int | None = Field(default=None, ge=1, le=50)  # absent: the run config's (5)
    # Knowledge collections (ids or names, the run owner's or shared) searched instead of the owner's old documents.
    collections: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, min_length=1, max_length=20)
    k: int | None = Field(default=None, ge=1, le=100)  # absent: max_documents
    mode: Literal["hybrid", "vector", "keyword"] | None = None  # absent: hybrid
    score_threshold: float | None = None
    filters: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")], FilterValue] | None = None
    # A model with a rerank API (`provider/model` or a model name the gateway knows): the chunks found are reranked.
    rerank_model: str | None = Field(default=None, min_length=1, max_length=255)


class ConditionalConfig(NodeConfig):
    condition: ConditionText


class LoopConfig(NodeConfig):
    max_iterations: int = Field(default=10, ge=1, le=1000)
    condition: ConditionText | None = None


class VariableConfig(NodeConfig):
    operation: Literal["set", "get", "append", "increment", "decrement"] = "set"
    variable_name: str = Field(min_length=1, max_length=100)
    value: Annotated[Any, AfterValidator(_within_depth)] = None


class ErrorHandlerConfig(NodeConfig):
    retry_count: int = Field(default=3, ge=0, le=10)
    fallback_action: Literal["continue", "stop"] = "continue"


class DelayConfig(NodeConfig):
    duration_ms: int = Field(default=1000, ge=0, le=60000)
    delay_type: Literal["fixed", "random", "exponential"] = "fixed"


def _registered_graph(name: str) -> str:
    if name not in settings.graphs:
        raise custom_error("unknown_graph", f"no Python graph {name!r} is registered (CHATTER_GRAPHS)")
    from engine.graph_registry import factory_takes_runtime

    try:
        takes_runtime = factory_takes_runtime(name)
    except Exception:  # noqa: BLE001 - a module that cannot load here fails its run, named, when it runs
        takes_runtime = False
    if takes_runtime:
        raise custom_error("unsupported_factory", f"graph {name!r} is a factory that takes a runtime (LangGraph's "
                           "ServerRuntime), which Chatter cannot give it: langgraph-sdk has no public way to make "
                           "one. A factory may take the run's config")
    return name


class PythonGraphConfig(NodeConfig):
    """A Python graph of your own, registered by name in the CHATTER_GRAPHS file."""

    graph: Annotated[str, AfterValidator(_registered_graph)] = Field(min_length=1, max_length=100)


def _json_schema(value: dict) -> dict:
    from jsonschema import Draft202012Validator, SchemaError

    _within_depth(value)
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        raise custom_error("bad_schema", f"is not a JSON Schema: {exc.message}") from None
    refs = outside_refs(value)
    if refs:
        raise custom_error("bad_schema", f"$ref {refs[0]!r} points outside the schema: a ref may only be a local "
                                         "pointer (#...), nothing is fetched")
    return value


class HumanInputConfig(NodeConfig):
    """Ask a person and wait (LangGraph's interrupt): the run pauses `waiting` until its answer comes."""

    prompt: str = Field(min_length=1, max_length=4000)
    answer_schema: Annotated[dict, AfterValidator(_json_schema)] | None = Field(default=None, alias="schema")
    timeout_s: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)  # absent: it waits until answered
    on_timeout: Literal["fail", "cancel"] = "fail"
    variable: str | None = Field(default=None, min_length=1, max_length=100)  # where the answer goes (node id)


NODE_TYPES: dict[str, type[NodeConfig]] = {
    "start": NoConfig,
    "end": NoConfig,
    "model": ModelConfig,
    "embedding": NoConfig,
    "rerank": NoConfig,
    "tools": ToolsConfig,
    "memory": MemoryConfig,
    "retrieval": RetrievalConfig,
    "conditional": ConditionalConfig,
    "loop": LoopConfig,
    "variable": VariableConfig,
    "error_handler": ErrorHandlerConfig,
    "delay": DelayConfig,
    "python_graph": PythonGraphConfig,
    "human_input": HumanInputConfig,
}


def config_as_dict(config: NodeConfig) -> dict[str, Any]:
    """The given keys and the defaults that have a value (a key defaulting to None is left to the run config)."""
    given = {type(config).model_fields[name].alias or name for name in config.model_fields_set}
    return {
        key: value
        for key, value in config.model_dump(by_alias=True).items()
        if key in given or value is not None
    }
