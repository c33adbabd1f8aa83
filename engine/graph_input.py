"""The graph as given (docs/usage.md#the-graph-format): pydantic models of the graph, a node and an edge, the lifting
of React-Flow's fields into the flat form, and pydantic's errors turned into our `{"path", "code", "message"}` items.

Nodes and edges are validated one by one, with the graph's `KnownNodes` as context, so that every problem of
every node and edge is reported at once.
"""
from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import ErrorDetails

from engine.node_configs import (
    NODE_TYPES,
    ConditionText,
    KnownNodes,
    custom_error,
)

MAX_LABEL_LENGTH = 255
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"

# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


class GraphInput(BaseModel):
    model_config = ConfigDict(strict=True)

    nodes: list[Any]  # each validated by a NodeInput, once the list is known to be of an allowed size
    edges: list[Any] = Field(default_factory=list)


def _known_type(node_type: str) -> str:
    if node_type not in NODE_TYPES:
        message = f"is {node_type[:120]!r}, which is not a node type; known types are {', '.join(NODE_TYPES)}"
        raise custom_error("unknown_type", message)
    return node_type


def _one_error_for_position(value: Any, handler: ValidatorFunctionWrapHandler) -> dict[str, float]:
    # One error for the position as a whole rather than one per coordinate.
    try:
        return handler(value)
    except ValidationError:
        raise custom_error("invalid_type", 'must be an object of numbers such as {"x": 0, "y": 0}') from None


ConfigT = TypeVar("ConfigT")


class NodeInput(BaseModel, Generic[ConfigT]):
    """A node after `flat_node`. `ConfigT` is its type's config model, or a plain dict while the type is wrong."""

    model_config = ConfigDict(strict=True)  # other keys (React-Flow's width, selected, …) are layout: ignored

    data: dict | None = None  # React-Flow's; what we use of it was lifted out by flat_node
    id: Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
    type: Annotated[str, AfterValidator(_known_type)]
    config: ConfigT = Field(default_factory=dict, validate_default=True)
    label: str | None = Field(default=None, max_length=MAX_LABEL_LENGTH)
    position: Annotated[dict[str, float], WrapValidator(_one_error_for_position)] | None = None


_NODE_MODELS: dict[str, type[NodeInput]] = {node_type: NodeInput[config] for node_type, config in NODE_TYPES.items()}
_NODE_OF_UNKNOWN_TYPE = NodeInput[dict]


def node_model_for(node_type: Any) -> type[NodeInput]:
    """The model for a node of this type; a node whose type is wrong has its config checked only to be an object."""
    return _NODE_MODELS.get(node_type, _NODE_OF_UNKNOWN_TYPE) if isinstance(node_type, str) else _NODE_OF_UNKNOWN_TYPE


def _edge_end(node_id: str, info: ValidationInfo, *, not_type: str, because: str) -> str:
    known: KnownNodes = info.context
    if node_id not in known.ids:
        raise custom_error("unknown_node", f"is {node_id[:120]!r}, which is not a node")
    if known.types.get(node_id) == not_type:
        raise custom_error("invalid_edge", f"is the {not_type} node {node_id!r}; {because}")
    return node_id


def _edge_source(node_id: str, info: ValidationInfo) -> str:
    return _edge_end(node_id, info, not_type="end", because="an end node has no outgoing edges")


def _edge_target(node_id: str, info: ValidationInfo) -> str:
    return _edge_end(node_id, info, not_type="start", because="a start node has no incoming edges")


class EdgeInput(BaseModel):
    """An edge after `flat_edge`."""

    model_config = ConfigDict(strict=True)

    data: dict | None = None
    source: Annotated[str, AfterValidator(_edge_source)]
    target: Annotated[str, AfterValidator(_edge_target)]
    id: str | None = None  # a client-side edge id, kept for round-trips
    condition: ConditionText | None = None
    branch: Literal["true", "false"] | None = None
    # taken together with the source's other parallel edges that hold (docs/usage.md#the-graph-format)
    parallel: bool = False

    @field_validator("branch")
    @classmethod
    def branch_leaves_a_conditional_node(cls, branch: str, info: ValidationInfo) -> str:
        source = info.data.get("source")  # absent when the source has an error of its own
        if source is not None and info.context.types.get(source) != "conditional":
            message = f"is {branch!r}, but its source {source!r} is not a conditional node"
            raise custom_error("invalid_branch", message)
        return branch


# ---------------------------------------------------------------------------------------------------------------
# The flat form of React-Flow input, and what the nodes say they are
# ---------------------------------------------------------------------------------------------------------------


def _without_nulls(item: dict) -> dict:
    # null stands for "not given" everywhere in a node or an edge (an absent id is `required`, not a bad type).
    return {key: value for key, value in item.items() if value is not None}


def flat_node(item: Any) -> Any:
    """React-Flow keeps our type, config and label under `data` (its own `type` names a renderer)."""
    if not isinstance(item, dict):
        return item
    data = item["data"] if isinstance(item.get("data"), dict) else {}
    node = dict(item)
    if "nodeType" in data:
        node["type"] = data["nodeType"]
    node.update({key: data[key] for key in ("config", "label") if key in data and key not in item})
    return _without_nulls(node)


def flat_edge(item: Any) -> Any:
    """React-Flow keeps the condition under `data` and a conditional node's branch in `sourceHandle`."""
    if not isinstance(item, dict):
        return item
    data = item["data"] if isinstance(item.get("data"), dict) else {}
    edge = dict(item)
    if "condition" in data and "condition" not in item:
        edge["condition"] = data["condition"]
    if isinstance(edge.get("condition"), str) and not edge["condition"].strip():
        edge["condition"] = None  # an emptied condition box in an editor means "always"
    if isinstance(edge.get("branch"), bool):
        edge["branch"] = "true" if edge["branch"] else "false"
    elif edge.get("branch") is None and item.get("sourceHandle") in ("true", "false"):
        edge["branch"] = item["sourceHandle"]  # React-Flow's other handle ids ("bottom", …) are layout only
    return _without_nulls(edge)


def known_nodes(flat_nodes: list) -> KnownNodes:
    claims = [(item.get("id"), item.get("type")) for item in flat_nodes if isinstance(item, dict)]
    return KnownNodes(
        ids=frozenset(node_id for node_id, _ in claims if isinstance(node_id, str)),
        types={
            node_id: node_type
            for node_id, node_type in claims
            if isinstance(node_id, str) and isinstance(node_type, str) and node_type in NODE_TYPES
        },
    )


# ---------------------------------------------------------------------------------------------------------------
# pydantic's errors as ours
# ---------------------------------------------------------------------------------------------------------------

# pydantic's error type → our code and what is wrong. Our own checks raise errors whose type is our code.
_PYDANTIC_ERRORS: dict[str, tuple[str, str]] = {
    "missing": ("required", "must be given"),
    "extra_forbidden": ("unknown_key", "is unknown; allowed: {allowed}"),
    "invalid_key": ("unknown_key", "is unknown; allowed: {allowed}"),
    "greater_than_equal": ("out_of_range", "must be at least {ge:g}, not {input}"),
    "less_than_equal": ("out_of_range", "must be at most {le:g}, not {input}"),
    "finite_number": ("out_of_range", "must be a finite number, not {input}"),
    "string_too_short": ("out_of_range", "must have at least {min_length} characters"),
    "string_too_long": ("out_of_range", "must have at most {max_length} characters"),
    "literal_error": ("invalid_choice", "must be {expected}, not {input}"),
    "string_pattern_mismatch": (
        "invalid_id",
        "must start with a letter or digit and contain at most 100 letters, digits, '_', '.', ':' or '-'",
    ),
    "string_type": ("invalid_type", "must be a string, not {json_type}"),
    "int_type": ("invalid_type", "must be an integer, not {json_type}"),
    "float_type": ("invalid_type", "must be a number, not {json_type}"),
    "bool_type": ("invalid_type", "must be a boolean, not {json_type}"),
    "dict_type": ("invalid_type", "must be an object, not {json_type}"),
    "model_type": ("invalid_type", "must be an object, not {json_type}"),
    "list_type": ("invalid_type", "must be a list, not {json_type}"),
}
_OUR_CODES = frozenset(
    {"unknown_type", "unknown_node", "invalid_edge", "invalid_branch", "bad_condition", "invalid_type", "out_of_range",
     "unknown_graph", "unsupported_factory"}
)


def error_item(path: str, code: str, message: str) -> dict:
    return {"path": path, "code": code, "message": message}


def errors_from(exc: ValidationError, *, path: str, name: str, node_type: Any = None) -> list[dict]:
    """Our error items for a failed validation of `name` ("node 'llm'", "edge 3") found at `path`."""
    config_model = NODE_TYPES.get(node_type) if isinstance(node_type, str) else None
    allowed_keys = ", ".join(config_model.model_fields) if config_model else ""  # said of an unknown key
    errors = []
    for detail in exc.errors(include_url=False):
        code, problem = _code_and_problem(detail, allowed_keys or "none")
        where = ".".join(str(part) for part in (path, *detail["loc"]) if part != "")
        errors.append(error_item(where, code, f"{_subject(detail['loc'], name)} {problem}"))
    return errors


def _code_and_problem(detail: ErrorDetails, allowed_keys: str) -> tuple[str, str]:
    kind, value = detail["type"], detail["input"]
    if kind in _OUR_CODES:
        return kind, detail["msg"]
    if kind == "literal_error" and not isinstance(value, str):
        kind = "string_type"  # every choice is a string, so another JSON type is a wrong type, as elsewhere
    code, template = _PYDANTIC_ERRORS.get(kind, ("invalid_type", "is not valid: {msg}"))
    facts = {**detail.get("ctx", {}), "msg": detail["msg"], "allowed": allowed_keys}
    return code, template.format(**facts, input=_shown(value), json_type=_json_type(value))


def _subject(loc: tuple[int | str, ...], name: str) -> str:
    """What an error is about, in words: "node 'llm'", "the source of edge 3", "config key 'model' of node 'x'"."""
    if not loc:
        return name
    if loc[0] == "config" and len(loc) > 1:
        return f"config key {str(loc[1])[:120]!r} of {name}"
    return f"the {loc[0]} of {name}"


def _json_type(value: Any) -> str:
    kinds = ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (list, "a list"), (dict, "an object"))
    return "null" if value is None else next((name for kind, name in kinds if isinstance(value, kind)), "a value")


def _shown(value: Any) -> str:
    """A value for a message: short, and never the repr of a container (which may be huge or deeply nested)."""
    if isinstance(value, str):
        return repr(value[:120])
    return str(value) if isinstance(value, (int, float)) else _json_type(value)
