"""The OpenAPI document: every operation tagged with its area (ChatterAutoSchema), /langgraph/'s documented as
LangGraph's (AgentServerSchema), and the post-processing by which every operation documents its surface's error
shape for the errors any endpoint can answer, so clients (and the schema fuzzing in tests) can rely on the schema
for failures too."""
from __future__ import annotations

import inspect

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from pydantic.json_schema import GenerateJsonSchema, model_json_schema

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "description": "field errors, limits or other specifics; empty when there are none",
                    "items": {
                        "type": "object",
                        "required": ["path", "code", "message"],
                        "properties": {
                            "path": {"type": "string",
                                     "description": "where in the input, e.g. config.temperature; empty for the "
                                                    "request as a whole"},
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}
ERRORS = {
    "400": "invalid input: nothing was written",
    "401": "not authenticated",
    "403": "not allowed (e.g. a built-in template, a staff-only endpoint)",
    "404": "not found, or not the caller's",
    "405": "method not allowed",
    "406": "cannot render the requested media type",
    "409": "conflict with the object's state",
    "413": "request body too large",
    "415": "unsupported request media type",
    "429": "throttled, or too many runs at once",
    "503": "busy or a dependency is down: nothing was done, try again",
}
PUBLIC = {"/api/v1/health/", "/api/v1/auth/token/"}
# The OpenAI-compatible gateway (/v1/) answers errors the way OpenAI's clients read them.
OPENAI_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code", "param"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "string", "nullable": True},
                "param": {"type": "string", "nullable": True, "description": "the first field at fault"},
            },
        }
    },
}
GATEWAY_PREFIX = "/v1/"
LANGGRAPH_PREFIX = "/langgraph/"
# LangGraph's server answers errors as {"detail": …}: a message, or (422) the validation errors.
LANGGRAPH_ERROR_SCHEMA = {"type": "object", "required": ["detail"], "properties": {"detail": {}}}
LANGGRAPH_ERRORS = {**{status: description for status, description in ERRORS.items() if status != "400"},
                    "422": "invalid input: nothing was written"}


def error_responses_add(result: dict, generator, request, public) -> dict:
    result["tags"] = TAGS  # the areas, in their order, each with its description
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"], schemas["OpenAIError"] = ERROR_SCHEMA, OPENAI_ERROR_SCHEMA
    schemas["LangGraphError"] = LANGGRAPH_ERROR_SCHEMA
    for path, item in result.get("paths", {}).items():
        name, errors = "Error", ERRORS
        if path.startswith(GATEWAY_PREFIX):
            name = "OpenAIError"
        elif path.startswith(LANGGRAPH_PREFIX):
            name, errors = "LangGraphError", LANGGRAPH_ERRORS
        reference = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
        for operation in item.values():
            for status, description in errors.items():
                if path in PUBLIC and status == "401":
                    continue
                operation["responses"].setdefault(status, {"description": description, "content": reference})
    return result


# --- areas: one tag per operation -------------------------------------------------------------------------------
# The documentation's areas, in the order the docs page lists them, each with what it holds.
AREAS = {
    "chat": "A chat turn: one message in, the reply out (a run of the universal chat template).",
    "conversations": "Conversations, their messages and checkpoints.",
    "workflows": "Templates, definitions (graphs) and schedules.",
    "runs": "Runs (executions): start, read, cancel, resume; their events and checkpoints.",
    "tools": "Tools and MCP servers.",
    "knowledge": "Collections of documents searched by meaning (and the documents the retrieval nodes search).",
    "prompts": "Prompts, their versions and labels.",
    "datasets": "Datasets and their items.",
    "experiments": "Experiments over datasets, and scores.",
    "analytics": "Usage and cost, template and prompt analytics, model prices, health.",
    "keys": "API keys, their limits, and tokens.",
    "budgets": "Budgets and their spend.",
    "audit": "The audit log and its verification.",
    "gateway": "The OpenAI-compatible gateway (/v1/): requests and answers in OpenAI's shape, as OpenAI's API "
               "reference gives them; errors as OpenAI's.",
    "Agent Server": "LangGraph's Agent Server API (/langgraph/): assistants, threads, runs, crons and the store, "
                    "in the shape LangGraph's SDKs send and read (its API reference); errors as `{\"detail\": …}`.",
}
# An /api/v1/ path's first segment: its area.
API_AREAS = {
    "chat": "chat", "conversations": "conversations", "workflows": "workflows", "schedules": "workflows",
    "executions": "runs", "tools": "tools", "documents": "knowledge", "collections": "knowledge", "prompts": "prompts", "datasets": "datasets",
    "experiments": "experiments", "scores": "experiments", "analytics": "analytics", "pricing": "analytics",
    "health": "analytics", "keys": "keys", "auth": "keys", "budgets": "budgets", "audit": "audit",
}
SURFACE_AREAS = {"/v1/": "gateway", "/langgraph/": "Agent Server"}
API_PREFIX = "/api/v1/"
OPENAI_REFERENCE = "https://platform.openai.com/docs/api-reference"
LANGGRAPH_REFERENCE = "https://langchain-ai.github.io/langgraph/cloud/reference/api/api_ref.html"
TAGS = [{"name": name, "description": description} for name, description in AREAS.items()]
for tag, url in (("gateway", OPENAI_REFERENCE), ("Agent Server", LANGGRAPH_REFERENCE)):
    next(entry for entry in TAGS if entry["name"] == tag)["externalDocs"] = {"url": url}


def path_area(path: str) -> str | None:
    """The area of an operation's path, None for one no area names (the schema's tests refuse it)."""
    if path.startswith(API_PREFIX):
        return API_AREAS.get(path.removeprefix(API_PREFIX).split("/", 1)[0])
    return next((area for prefix, area in SURFACE_AREAS.items() if path.startswith(prefix)), None)


class ChatterAutoSchema(AutoSchema):
    """The project's operations, each tagged with its area (path_area)."""

    def get_tags(self) -> list[str]:
        area = path_area(self.path)
        return [area] if area else []


class AgentServerSchema(ChatterAutoSchema):
    """/langgraph/'s operations: LangGraph's API, whose bodies are validated by its views' pydantic models and
    documented by LangGraph's API reference: here each is a JSON object in and out."""

    def get_request_serializer(self):
        return OpenApiTypes.OBJECT if self.method in ("POST", "PUT", "PATCH") else None

    def get_response_serializers(self):
        return {200: OpenApiResponse(OpenApiTypes.OBJECT, description="as LangGraph's Agent Server answers "
                                                                      "(its API reference)")}

    def get_operation_id(self) -> str:
        """From the whole path (drf-spectacular's default drops its last parameter: /runs and /runs/{run_id}
        collide)."""
        words = [word.strip("{}").replace("-", "_") for word in self.path.split("/") if word]
        return "_".join([*words, self.method.lower()])

    def get_description(self) -> str:
        """The handler's or its own view's docstring (not one a base view class gives every route), else which
        operation of LangGraph's API it is."""
        handler = getattr(self.view, self.method.lower(), None)
        own = inspect.getdoc(handler) if handler is not None else None
        own = own or type(self.view).__dict__.get("__doc__")
        reference = f"LangGraph's `{self.method} {self.path.removeprefix('/langgraph')}`."
        return f"{inspect.cleandoc(own)}\n\n{reference}" if own else reference


class OpenAPI30JsonSchema(GenerateJsonSchema):
    """pydantic's JSON Schema in OpenAPI 3.0's dialect: a value that may be null is `nullable`, not `anyOf` with
    {"type": "null"}, and one value allowed is an enum of one, not a `const` (OpenAPI 3.0 has neither)."""

    def literal_schema(self, schema) -> dict:
        generated = super().literal_schema(schema)
        if "const" in generated:
            generated["enum"] = [generated.pop("const")]
        return generated

    def nullable_schema(self, schema) -> dict:
        inner = self.generate_inner(schema["schema"])
        if "$ref" in inner:
            return {"allOf": [inner], "nullable": True}
        return {**inner, "nullable": True}


class PydanticRequestSchema(OpenApiSerializerExtension):
    """A request validated by a pydantic model (gateway.chat_request) documented by that model, in OpenAPI 3.0's
    dialect (drf-spectacular's own pydantic extension writes 3.1's null types); its nested models as components."""

    target_class = "pydantic.BaseModel"
    match_subclasses = True
    priority = 1  # over drf-spectacular's contrib extension

    def get_name(self, auto_schema, direction):
        return self.target.__name__

    def map_serializer(self, auto_schema, direction):
        schema = model_json_schema(self.target, ref_template="#/components/schemas/{model}",
                                   schema_generator=OpenAPI30JsonSchema, mode="validation")
        for name, nested in schema.pop("$defs", {}).items():
            auto_schema.registry.register_on_missing(ResolvedComponent(
                name=name, type=ResolvedComponent.SCHEMA, object=name, schema=nested))
        return schema
