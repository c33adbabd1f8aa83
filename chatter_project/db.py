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


def connection_give_back() -> None:
    """A thread about to wait (a run before a model or tool call) gives its pooled connection back, so a waiting
    run holds none; it borrows one again at its next statement. Without a pool (SQLite) the connection stays."""
    from django.db import connection

    if connection.settings_dict.get("OPTIONS", {}).get("pool") and not connection.in_atomic_block:
        connection.close()
