"""Database plumbing: Django's connection pool and forks.

django-q2 forks its worker processes. A pool carried across a fork would hand the child the parent's sockets and
no threads to tend them; so every pool is closed before a fork (its connections closed cleanly, in the parent) and
each process makes its own on first use, which Django does by itself."""
from __future__ import annotations

import os

from django.db import connections


def _pools_close() -> None:
    for alias in connections:
        wrapper = connections[alias]
        if getattr(wrapper, "pool", None) is not None:
            wrapper.close_pool()


def pools_close_before_fork() -> None:
    """Call once per process (at start-up)."""
    os.register_at_fork(before=_pools_close)


def connections_give_back() -> None:
    """A thread about to wait (a run before a model or tool call, a runner thread between runs) gives its pooled
    connections back, so a waiting thread holds none; it borrows again at its next statement. Without a pool
    (SQLite) a connection stays with its thread: opening one costs more than keeping it."""
    for wrapper in connections.all(initialized_only=True):
        if wrapper.settings_dict.get("OPTIONS", {}).get("pool") and not wrapper.in_atomic_block:
            wrapper.close()
