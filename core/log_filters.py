"""Filters of the log (settings.LOGGING): what a library logs that quotes what it could not read, and a client's
bad input that Django logs as an error."""
from __future__ import annotations

import logging

import pydantic


def validation_kinds(exc: pydantic.ValidationError) -> str:
    """What a pydantic ValidationError found, by kind (`json_invalid, missing`), never the input it quotes."""
    kinds = dict.fromkeys(error["type"] for error in exc.errors(include_url=False, include_input=False))
    return ", ".join(kinds)


class UnreadNotQuoted(logging.Filter):
    """A record whose exception is a pydantic ValidationError (the MCP SDK's clients log one for each line a server
    sent that is no message of the protocol) keeps its message and says the error's kinds; its traceback, whose
    text quotes the line (a caller's tool arguments, a server's secret), is left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, pydantic.ValidationError):
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {validation_kinds(exc)})"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


class RefusalNotTraced(logging.Filter):
    """A request refused for what its client sent (core.request_text's NUL character, a SuspiciousOperation) is a
    warning of one line: Django logs every SuspiciousOperation on django.security.<its class> as an ERROR with its
    traceback, which reads as a bug of the server's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info, record.exc_text = None, None
        return True
