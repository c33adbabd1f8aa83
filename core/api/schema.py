"""OpenAPI post-processing: every operation documents the one error shape for the errors any endpoint can
answer, so clients (and the schema fuzzing in tests) can rely on the schema for failures too."""
from __future__ import annotations

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


def error_responses_add(result: dict, generator, request, public) -> dict:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"], schemas["OpenAIError"] = ERROR_SCHEMA, OPENAI_ERROR_SCHEMA
    for path, item in result.get("paths", {}).items():
        name = "OpenAIError" if path.startswith(GATEWAY_PREFIX) else "Error"
        reference = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
        for operation in item.values():
            for status, description in ERRORS.items():
                if path in PUBLIC and status == "401":
                    continue
                operation["responses"].setdefault(status, {"description": description, "content": reference})
    return result
