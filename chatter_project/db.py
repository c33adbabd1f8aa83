"""Database plumbing: Django's connection pool (forks, dead connections) and transactions PostgreSQL rolls back.

django-q2 forks its worker processes. A pool carried across a fork would hand the child the parent's sockets and
no threads to tend them; so every pool is closed before a fork (its connections closed cleanly, in the parent) and
each process makes its own on first use, which Django does by itself.

**Lock order.** Every write path that locks rows takes them in this order, skipping those it does not need and
never going back up, so no two transactions ever wait on each other in a cycle:

1. the run's own row (`WorkflowExecution`: its terminal write, a pause, a cancel, the sweep, a re-pricing; a new
   run's row is inserted, so nobody else can wait for it yet);
2. the conversation (`Conversation`: a message's totals and sequence, `conversations.services`);
3. the owner's row (`auth_user`, FOR NO KEY UPDATE: run creation, so one user's runs count each other's; taken
   only there, and never by a lock on a run's row, which would also block every insert referencing the user);
4. budget periods (`BudgetPeriod`, by budget id: reservations, top-ups, settlements);
5. aggregates: template analytics, then usage rollups (by key);
6. the audit chain's head (an advisory lock, last: `audit.services`).

So run creation is conversation → owner → budget periods → (the run inserted) → audit; a run's ending is run →
conversation → budget periods → aggregates → audit; a cancel or the sweep locks the run (and only the run: FOR
UPDATE OF its own table) before what its ending locks.

**Deadlocks.** PostgreSQL may still roll a transaction back as a deadlock victim (a lock order can be broken by
statements we do not write, e.g. foreign-key checks) or as a serialization failure (REPEATABLE READ readers):
nothing of it was written, so `retried_on_conflict` runs it again, a bounded number of times, at its outermost
transaction's boundary, and answers 503 `database_conflict` (try again) rather than a 500 if it never gets
through."""
from __future__ import annotations

import functools
import logging
import os
import random
import select
import time
from typing import Callable, TypeVar

from django.db import OperationalError, connection, connections

from chatter_project.errors import Unavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATEs of a transaction PostgreSQL rolled back for a passing conflict with another one.
CONFLICT_SQLSTATES = {"40P01": "deadlock", "40001": "serialization failure"}
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF_S = 0.02  # the first pause before trying again (random up to it, then doubling)


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


def pooled_connection_check(conn) -> None:
    """psycopg_pool's `check` (Django's pool OPTIONS): never hand out a connection the server has closed (it was
    restarted, or ended the session). An idle connection has nothing to read, so polling its socket costs no round
    trip; one the server closed is readable (its last words, then end of file), and only then is it asked (psycopg_pool's
    own check), which raises for a dead one: the pool then discards it and gives another. The other idle
    connections were most likely closed by the same restart, so they are checked now too (the pool's own
    `check()`): psycopg_pool pauses, growing pauses, between one dead connection and the next it hands out."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if not poller.poll(0):
        return
    from psycopg_pool import ConnectionPool  # only PostgreSQL installations have a pool

    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        for alias in connections:
            pool = getattr(connections[alias], "pool", None)
            if pool is not None:
                pool.check()
        raise


def _conflict(exc: OperationalError) -> str | None:
    """What kind of conflict rolled the transaction back, or None for any other database error."""
    return CONFLICT_SQLSTATES.get(getattr(exc.__cause__, "sqlstate", None))


def retried_on_conflict(write: Callable[..., T]) -> Callable[..., T]:
    """Decorate a function whose work is one transaction: when PostgreSQL rolls it back as a deadlock victim or a
    serialization failure, it is called again (CONFLICT_ATTEMPTS times at most, after a short random pause), and
    then refused as Unavailable (503 `database_conflict`), never a 500. Only a transaction's outermost caller can
    try it again: called inside a transaction, it runs once and the conflict goes up to whoever opened it."""

    @functools.wraps(write)
    def attempts(*args, **kwargs) -> T:
        if connection.in_atomic_block:
            return write(*args, **kwargs)
        attempt = 1
        while True:
            try:
                return write(*args, **kwargs)
            except OperationalError as exc:
                kind = _conflict(exc)
                if kind is None:
                    raise
                if attempt == CONFLICT_ATTEMPTS:
                    logger.warning("%s: %s %d times, refused", write.__qualname__, kind, attempt)
                    raise Unavailable(f"the database rolled this back ({kind}) {attempt} times; try again",
                                      code="database_conflict") from exc
                logger.info("%s: %s, trying again (attempt %d)", write.__qualname__, kind, attempt)
            time.sleep(random.uniform(0, CONFLICT_BACKOFF_S * 2 ** (attempt - 1)))
            attempt += 1

    return attempts
