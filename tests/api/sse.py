"""A small Server-Sent Events parser following the WHATWG spec, to check our frames as a browser reads them:
lines end in CRLF, LF or CR; a blank line dispatches; lines starting with ':' are comments; `field: value`
drops one leading space; `data` lines are joined by LF; a frame with no data is not dispatched."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Frame:
    id: str | None  # the id line of this frame (None: the frame had none)
    event: str
    data: str

    @property
    def envelope(self) -> dict:
        return json.loads(self.data)


class SSEParser:
    def __init__(self) -> None:
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed_line(self, line: str) -> Frame | None:
        if line == "":
            frame = Frame(self._id, self._event or "message", "\n".join(self._data)) if self._data else None
            self._id, self._event, self._data = None, "", []
            return frame
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value
        return None  # `retry` and unknown fields are ignored

    def feed_lines(self, lines: Iterable[str]) -> list[Frame]:
        return [frame for line in lines if (frame := self.feed_line(line)) is not None]


def parse_sse(text: str) -> list[Frame]:
    lines = re.split(r"\r\n|\r|\n", text)
    if lines and lines[-1] == "":
        lines.pop()  # the text ends with a line break, not with an unterminated line
    return SSEParser().feed_lines(lines)

