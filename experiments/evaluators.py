"""Evaluators that judge an output without a model: exact match, contains, regex, JSON-schema valid, numeric
tolerance. Each answers a boolean score. (The LLM judge runs a model: experiments.services.)"""
from __future__ import annotations

import json
import math
import re

from engine.json_schemas import schema_validator

NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
RULES = ("exact_match", "contains", "regex", "json_schema", "numeric")
LLM_JUDGE = "llm_judge"
KINDS = (*RULES, LLM_JUDGE)


def as_text(value) -> str:
    """An output or an expected output as text: a run's output (`{"content": …}`) is its content; other JSON is
    its serialization."""
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def first_number(text: str) -> float | None:
    found = NUMBER.search(text or "")
    return float(found.group()) if found else None


def rule_verdict(spec: dict, *, output: str, expected) -> bool:
    """A rule evaluator's verdict on one output (text) against the item's expected output; ValueError when it cannot
    judge (a schema whose $ref resolves to nothing)."""
    kind = spec["type"]
    if kind == "exact_match":
        return output.strip() == as_text(expected).strip()
    if kind == "contains":
        needle = spec.get("value") or as_text(expected)
        if spec.get("ignore_case"):
            return bool(needle) and needle.lower() in output.lower()
        return bool(needle) and needle in output
    if kind == "regex":
        return re.search(spec["pattern"], output) is not None
    if kind == "json_schema":
        import jsonschema  # here, not at every process start (0.1 s): only a json_schema evaluator needs it
        from referencing.exceptions import Unresolvable

        try:
            schema_validator(spec["schema"]).validate(json.loads(output))
        except (json.JSONDecodeError, jsonschema.ValidationError):
            return False
        except Unresolvable as exc:  # stored before outside refs were refused, or a pointer to nowhere
            raise ValueError(f"the schema has a $ref that cannot be resolved ({exc.ref})") from None
        return True
    if kind == "numeric":
        got = first_number(output)
        want = spec["expected"] if spec.get("expected") is not None else first_number(as_text(expected))
        return got is not None and want is not None and abs(got - float(want)) <= spec.get("tolerance", 0)
    raise ValueError(f"not a rule evaluator: {kind}")


def judge_verdict(text: str) -> float:
    """A judge's answer as a number: `{"score": x}`, or the first number it wrote. ValueError when there is none, or
    when it is not finite: NaN and ±Infinity (which Python's json reads, and 1e999 is) are no score, and no JSON
    column (SQLite's, PostgreSQL's) would store them."""
    try:
        answer = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        answer = None
    score = answer.get("score") if isinstance(answer, dict) else None
    if isinstance(score, (int, float)) and not isinstance(score, bool):
        number = float(score) if isinstance(score, float) or abs(score) < 10**308 else math.inf
    else:
        number = first_number(text)
    if number is None or not math.isfinite(number):
        raise ValueError("the judge answered no score")
    return number


JUDGE_MESSAGE = """Judge the output below.

Input:
{input}

Expected output:
{expected_output}

Output:
{output}

Answer with a score between 0 and 1 (1: the output is right), as {{"score": x}}."""


def judge_message(*, input, expected_output, output: str) -> str:
    return JUDGE_MESSAGE.format(input=as_text(input), expected_output=as_text(expected_output), output=output)
