"""JSON Schemas a user gives (a `human_input` node's answer schema, an experiment's `json_schema` evaluator): a
`$ref` may point only inside its own schema (`#`, `#/$defs/x`, `#anchor`), and applying one never reads anything.

jsonschema follows any other ref by fetching its URL (from the server's own network: a user could have it call
hosts only the server reaches), so such a ref is refused when the schema is saved (`outside_refs`) and, for a
schema stored before that, is unresolvable when it is applied (`schema_validator`), never a fetch.
"""
from __future__ import annotations

REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


def outside_refs(schema) -> list[str]:
    """Every ref of the schema that is not a local pointer (`#…`), in the order met. Every value of the schema is
    read (a `const` holding {"$ref": URL} is taken as a ref too: refused, never fetched), without recursion."""
    found, stack = [], [schema]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            found += [current[key] for key in REF_KEYWORDS
                      if isinstance(current.get(key), str) and not current[key].startswith("#")]
            stack.extend(reversed(list(current.values())))
        elif isinstance(current, list):
            stack.extend(reversed(current))
    return found


def _refuse(uri: str):
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)


def schema_validator(schema, *, draft=None):
    """A jsonschema validator of `schema` (of `draft`, else the draft its `$schema` names) whose refs resolve within
    the schema only: iterating its errors raises `referencing.exceptions.Unresolvable` on any other ref."""
    from jsonschema.validators import validator_for
    from referencing import Registry

    return (draft or validator_for(schema))(schema, registry=Registry(retrieve=_refuse))
