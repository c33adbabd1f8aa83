"""`{{variable}}` in a prompt's text or messages, filled from a run's variables. A variable the run does not give
stays as written, so a missing one is visible in the prompt the model was sent."""
from __future__ import annotations

import json
import re
from typing import Any

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def prompt_variables(content: str | list[dict]) -> list[str]:
    """The variable names a version's content uses, in order of first use."""
    texts = [content] if isinstance(content, str) else [message["content"] for message in content]
    names: list[str] = []
    for text in texts:
        for name in VARIABLE.findall(text):
            if name not in names:
                names.append(name)
    return names


def prompt_compile(content: str | list[dict], variables: dict[str, Any]) -> list[dict]:
    """The messages to send ([{"role", "content"}]): a text prompt is one system message."""
    def fill(text: str) -> str:
        def value(match: re.Match) -> str:
            name = match.group(1)
            if name not in variables:
                return match.group(0)
            found = variables[name]
            return found if isinstance(found, str) else json.dumps(found, default=str)

        return VARIABLE.sub(value, text)

    if isinstance(content, str):
        return [{"role": "system", "content": fill(content)}]
    return [{"role": message["role"], "content": fill(message["content"])} for message in content]
