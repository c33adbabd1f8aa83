"""The hot reads' memo (HotReads: its version in the shared cache, or in the database) and Redis cache plumbing
(CACHES; REDIS_URL in docs/operations/configuration.md#settings); the connection pool is core/redis_pool.py."""
from __future__ import annotations

import functools
import logging
import pickle
import secrets
import threading
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from time import sleep

from django.db import models

logger = logging.getLogger(__name__)


class HotReads:
    """What every gateway call and run reads and hardly ever changes (a key and its user, the key's limits, the
    prices, a run's template, whether any budget is active), kept per process for as long as a version every process
    reads stays the same. Any change to those rows names a new version (`changed`), so every process reads afresh at
    its next call: a revoked key is refused, a lowered limit holds, from the next call on. The version is kept:
    - in the cache, where every process shares it (Redis: `shared`), renewed once the change commits (reading the old
      rows under the new version would keep them); a read of it is a round trip to the cache;
    - else in the database (core.models.HotReadsVersion, one row), renewed in the changing transaction itself, so
      that every process sees the new version when, and only when, it sees the change (the version is random: one
      rolled back with its change never comes back); a read of it is one statement. (On PostgreSQL, writers of
      these rows, all rarely written, then take turns on that row until they commit.)

    The version is read once a scope: an HTTP request (Django's request_started to its request_finished, on every
    surface), or a run outside any request (`scope`): a call reads its key, its limits and its prices (and its
    limits again at its end) for one read of the version, not one each; a change holds from the next one on.

    While the shared cache cannot be reached, a change stays owed: its process announces it as soon as it can
    (`_announce_owed`, once a second), so a change made meanwhile (a key revoked while Redis hung) holds in every
    process once the cache answers again, even where it kept its data and the version they read."""

    VERSION_KEY = "chatter:hot-reads:version"
    OWED_RETRY_S = 1.0  # how often a change that could not be announced is announced again
    MAX_ENTRIES = 10_000  # past it, the process's memo starts over (keys are many; no bound would be a leak)

    def __init__(self):
        self._version = None
        self._values: dict = {}
        self._lock = threading.Lock()
        self._owed: threading.Thread | None = None  # announcing a change the shared cache could not take
        self._owed_count = 0  # changes it could not take, counted

    @staticmethod
    def shared() -> bool:
        """Whether the version is kept in the cache (one every process shares), else in the database."""
        from django.conf import settings

        backend = settings.CACHES["default"]["BACKEND"]
        return not backend.endswith(("LocMemCache", "DummyCache"))

    def get(self, item, load, *, related: tuple[str, ...] = (), thaw: bool = True):
        """`item`'s value (any hashable name of it), from this process's memo while the version holds, else
        `load()`; a value of None is not kept (an unknown key would otherwise fill the memo).

        The memo keeps rows frozen (`Row`: a model instance, with the rows `related` names read with it; a list of
        them as a tuple): each caller gets instances of its own (`thaw`, the default), so what one request changes
        on its key or user no other request reads. `thaw=False`: the frozen rows themselves (read only), for a
        caller that picks one of many and thaws only that one."""
        try:
            version = self._version_now()
        except Exception:  # noqa: BLE001 - the shared cache unreachable: read the rows, as without a memo
            if not self.shared():
                raise
            logger.warning("hot reads: the shared cache failed; reading from the database", exc_info=True)
            version = None
        if version is None:  # (no version to keep the value under)
            value = load()
            return value if thaw else frozen(value, related)
        with self._lock:
            if version != self._version or len(self._values) >= self.MAX_ENTRIES:
                self._version, self._values = version, {}
            found = self._values.get(item, _MISSING)
        if found is _MISSING:
            found = frozen(load(), related)
            if found is not None:
                with self._lock:
                    if self._version == version:
                        self._values[item] = found
        return thawed(found) if thaw else found

    def _version_now(self):
        """The version: the scope's, once read (see the class), else read now."""
        scope = _scope.get()
        if scope is not None and scope.version is not None:
            return scope.version
        version = self.version()
        if scope is not None:
            scope.version = version
        return version

    @staticmethod
    @contextmanager
    def scope():
        """A block that reads the version once, as a request does (a run outside any request: a worker's, a
        command's, one on the runner's threads); within a request or another scope, theirs."""
        if _scope.get() is not None:
            yield
            return
        token = _scope.set(_Scope())
        try:
            yield
        finally:
            _scope.reset(token)

    @staticmethod
    def request_began(**kwargs) -> None:
        """Django's request_started: the request reads the version once, at its first hot read."""
        _scope.set(_Scope())

    @staticmethod
    def request_ended(**kwargs) -> None:
        """Django's request_finished: what runs next, outside a request, reads the version at each hot read."""
        _scope.set(None)

    def changed(self, **kwargs) -> None:
        """A row the memo may hold changed (a signal receiver, or a caller that wrote without signals): this
        process's memo goes at once (its own transaction reads its change); every process's with the change's
        commit (in the database, a new version written in the changing transaction; in the shared cache, one
        announced once it commits: at once outside a transaction)."""
        from django.db import DEFAULT_DB_ALIAS, transaction

        using = kwargs.get("using") or DEFAULT_DB_ALIAS
        self.forget()
        if self.shared():
            transaction.on_commit(self.renew, using=using)
        else:
            self._store(using)

    def renew(self) -> None:
        """A new version, now: every process reads afresh at its next call (this one too). In the database, written
        in the caller's transaction, if it is in one."""
        from django.db import DEFAULT_DB_ALIAS

        self.forget()
        if not self.shared():
            self._store(DEFAULT_DB_ALIAS)
            return
        try:
            self.announce()
        except Exception:  # noqa: BLE001
            logger.error("hot reads: a change could not be announced through the shared cache; announcing it again "
                         "every %s s until it is", self.OWED_RETRY_S, exc_info=True)
            with self._lock:
                self._owed_count += 1
                if self._owed is None or not self._owed.is_alive():  # (a forked worker inherits none)
                    self._owed = threading.Thread(target=self._announce_owed, name="chatter-hot-reads-owed",
                                                  daemon=True)
                    self._owed.start()

    def _announce_owed(self) -> None:
        """Announce the changes `renew` could not, once the shared cache takes them (a thread of its own)."""
        while True:
            sleep(self.OWED_RETRY_S)
            with self._lock:
                owed = self._owed_count
            try:
                self.announce()
            except Exception:  # noqa: BLE001 - still unreachable: again in a moment
                continue
            with self._lock:
                if self._owed_count == owed:  # (else one more failed meanwhile: announce again)
                    self._owed = None
                    logger.warning("hot reads: the change owed has been announced through the shared cache")
                    return

    def forget(self) -> None:
        """This process's memo goes, and this scope reads the version again (other processes keep theirs)."""
        with self._lock:
            self._version, self._values = None, {}
        if (scope := _scope.get()) is not None:
            scope.version = None

    @staticmethod
    def _store(using: str) -> None:
        """A new version in the database's row (made if it is missing)."""
        from core.models import HotReadsVersion

        HotReadsVersion.objects.using(using).bulk_create(
            [HotReadsVersion(version=_new_version())], update_conflicts=True, unique_fields=["id"],
            update_fields=["version"])

    def announce(self) -> None:
        """A new shared version (renew's announcement, without forgetting this process's memo)."""
        client = _redis_client()
        if client is not None:
            client.set(self.VERSION_KEY, uuid.uuid4().hex)
        else:
            from django.core.cache import cache

            cache.set(self.VERSION_KEY, uuid.uuid4().hex, timeout=None)

    def version(self):
        """The version every process reads: in the shared cache, or in the database (None: its row is gone, and
        nothing is kept until a change or a migrate writes it again)."""
        if not self.shared():
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute(HOT_READS_VERSION)
                row = cursor.fetchone()
            return None if row is None else row[0]
        return self._cached_version()

    def _cached_version(self) -> str:
        """The shared cache's version (made if there is none: never set, or evicted). Where the cache is Redis it is
        read by the process's one Redis client: Django's RedisCache makes a client for every call, which cost 0.33
        ms of CPU a read against 0.13 (loaded; bench/RESULTS.md, "Issue 48, items 2 and 3"), and a run reads it for
        its key, its template, its prices and its budgets."""
        client = _redis_client()
        if client is not None:
            version = client.get(self.VERSION_KEY)
            if version is None:
                client.set(self.VERSION_KEY, uuid.uuid4().hex, nx=True)
                version = client.get(self.VERSION_KEY)
            return version.decode()
        from django.core.cache import cache

        version = cache.get(self.VERSION_KEY)
        if version is None:  # a version of its own, which no memo holds
            cache.add(self.VERSION_KEY, uuid.uuid4().hex, timeout=None)
            version = cache.get(self.VERSION_KEY)
        return version

    @staticmethod
    def version_row_ensure(*, using, apps=None, **kwargs) -> None:
        """post_migrate (after every migrate, and a flush's): the version's row, where it is missing."""
        if apps is None:  # (a flush sends the signal without the migration state: the models as they are)
            from django.apps import apps
        try:
            model = apps.get_model("core", "HotReadsVersion")
        except LookupError:  # (core's table not made yet: a migrate of other apps only)
            return
        model.objects.using(using).get_or_create(pk=1, defaults={"version": _new_version()})


# The database's version, read by every scope (a request, a run) that makes a hot read: SQL of its own because the
# queryset (filter(pk=1).values_list("version").first()) cost 420-500 us of CPU a read against 34 us on SQLite
# (loaded host, 2026-11-26; bench/RESULTS.md, B1). The table is core.models.HotReadsVersion's (its db_table).
HOT_READS_VERSION = "SELECT version FROM core_hot_reads_version WHERE id = 1"


class _Scope:
    """The version one scope (a request, a run) read (None: not yet)."""

    __slots__ = ("version",)

    def __init__(self) -> None:
        self.version = None


def _new_version() -> int:
    """A new random version for the database's row (63 bits: a signed bigint on both databases)."""
    return secrets.randbits(63)


_scope: ContextVar[_Scope | None] = ContextVar("hot_reads_scope", default=None)
hot_reads = HotReads()
_MISSING = object()


def _redis_client():
    """The process's Redis client for the cache's server when the cache is Django's RedisCache on one server (on
    the process's pool for its URL, as the run throttle's: core.redis_pool), else None."""
    from django.conf import settings

    cache = settings.CACHES["default"]
    location = cache.get("LOCATION")
    if not cache["BACKEND"].endswith(".RedisCache") or not isinstance(location, str):
        return None
    return _client_for(location)


@functools.lru_cache(maxsize=8)
def _client_for(url: str):
    import redis

    from core.redis_pool import SharedConnectionPool

    return redis.Redis(connection_pool=SharedConnectionPool.from_url(url, socket_connect_timeout=1,
                                                                     socket_timeout=1))


# Values a frozen row hands out as they are (no caller can change them in place); any other (a JSON field's list or
# dict) is kept as a _Copied, a copy of its own for each caller.
_IMMUTABLE = (str, int, float, bool, bytes, Decimal, datetime, date, time, timedelta, uuid.UUID, type(None))


class _Copied:
    """A mutable value of a frozen row, kept pickled (in this process's memory only): each read unpickles a copy of
    its own, 6 us for a template's graph and params where copy.deepcopy took 33 (bench/RESULTS.md, B1)."""

    __slots__ = ("pickled",)

    def __init__(self, value):
        self.pickled = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def copy(self):
        return pickle.loads(self.pickled)


class Row:
    """A model instance as read, frozen: what the hot reads' memo keeps, shared by a process's requests. Its fields
    (and the rows read with it, `related`) can be read, not written; `thaw()` makes a new instance of it, and of
    its related rows, for one caller to use and change as it likes (Model.from_db: about 5 us an instance)."""

    __slots__ = ("_model", "_db", "_names", "_values", "_related")

    def __init__(self, instance: models.Model, related: tuple[str, ...] = ()):
        deferred = instance.get_deferred_fields()  # (never read here: reading one would query)
        names = tuple(field.attname for field in instance._meta.concrete_fields if field.attname not in deferred)
        set_ = object.__setattr__
        set_(self, "_model", type(instance))
        set_(self, "_db", instance._state.db)
        set_(self, "_names", names)
        set_(self, "_values", tuple(value if isinstance(value, _IMMUTABLE) else _Copied(value)
                                    for value in (getattr(instance, name) for name in names)))
        set_(self, "_related", tuple((name, Row(getattr(instance, name))) for name in related))

    def __getattr__(self, name: str):
        for related, row in self._related:
            if related == name:
                return row
        try:
            value = self._values[self._names.index(name)]
        except ValueError:
            raise AttributeError(f"{self._model.__name__} row has no field {name!r} read") from None
        return value.copy() if type(value) is _Copied else value

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"a memoised {self._model.__name__} row is read only: thaw() it for an instance to change")

    def thaw(self) -> models.Model:
        instance = self._model.from_db(self._db, self._names, [
            value.copy() if type(value) is _Copied else value for value in self._values])
        for name, row in self._related:
            setattr(instance, name, row.thaw())
        return instance


def frozen(value, related: tuple[str, ...] = ()):
    """What the memo keeps of a loaded value: a model instance as a Row, a list of them as a tuple of Rows, any
    other value (None, a sentinel) as it is."""
    if isinstance(value, models.Model):
        return Row(value, related)
    if isinstance(value, (list, tuple)):
        return tuple(frozen(item, related) for item in value)
    return value


def thawed(value):
    """A frozen value as its caller's own: new instances of its rows."""
    if isinstance(value, Row):
        return value.thaw()
    if isinstance(value, tuple):
        return [thawed(item) for item in value]
    return value


class RenewsHotReads(models.QuerySet):
    """The queryset of a model whose rows the hot reads memoise (a key, its limits, a price): its writes that send no
    signal (`update`, `bulk_create`, `bulk_update`) renew the memo as a save or delete does (through their signals'
    receivers), so no bare update of such rows leaves a process reading the old ones. `unread`: fields no memo
    reads; an update of only those renews nothing (a key's last use, written once a minute)."""

    unread: frozenset[str] = frozenset()

    def update(self, **kwargs) -> int:
        count = super().update(**kwargs)
        if count and set(kwargs) - self.unread:
            hot_reads.changed()
        return count

    def bulk_create(self, objs, *args, **kwargs):
        made = super().bulk_create(objs, *args, **kwargs)
        if made:
            hot_reads.changed()
        return made

    def bulk_update(self, objs, fields, *args, **kwargs) -> int:
        count = super().bulk_update(objs, fields, *args, **kwargs)
        if count and set(fields) - self.unread:
            hot_reads.changed()
        return count


def _connect_requests() -> None:
    from django.core.signals import request_finished, request_started

    request_started.connect(hot_reads.request_began, dispatch_uid="hot_reads_request_began")
    request_finished.connect(hot_reads.request_ended, dispatch_uid="hot_reads_request_ended")


_connect_requests()
