"""Django's PostgreSQL backend, with persistent connections health-checked only after they
have sat idle.

With CONN_HEALTH_CHECKS Django sends a SELECT 1 on a reused connection before the first
statement of every request, so that a connection the database or a proxy dropped while it
was idle fails the check rather than the request. That is one more round trip on every
request, and under load it is the most expensive statement of a token grant (bench/token):
about a third of a millisecond of CPU in the server process, for a connection that answered
a statement a few milliseconds before.

Here a connection that opened a cursor less than ``HEALTH_CHECK_GRACE_SECONDS`` ago (one
second unless the database settings say otherwise) is not checked again. Connections are
dropped after sitting idle (server or proxy idle timeouts, a database restart), which takes
longer than that; and a statement that did fail marks the connection, which Django then
checks at the end of the request whatever the grace. An idle connection is checked as
before.

Connections from Django's psycopg pool (``OPTIONS["pool"]``, DATABASE_POOL_MAX_SIZE in
docs/configuration.md) are checked alike: with CONN_HEALTH_CHECKS Django has the pool check
every connection it hands out, with a round trip; here a connection given back to the pool
less than the grace ago, by a request that met no database error, is handed out unchecked.

Statements sent through ``server_binding_cursor`` (the token endpoint's read and writes) are
prepared on the server the first time a connection sends them, and only parameters travel
after that. Django keeps psycopg's preparation off, for transaction-pooling proxies that do
not track prepared statements; but Django's own cursors bind on the client and are never
prepared, so turning it on here prepares just those statements. Parsing and planning them
was most of PostgreSQL's work in a refresh grant: about 1 ms of the database's CPU of 1.5 ms,
more than the grant's own Python (bench/README.md). ``OPTIONS["prepare_threshold"]`` set in
the database settings wins (None turns preparation off; DATABASE_PREPARED_STATEMENTS in
docs/configuration.md). With Django's ``server_side_binding`` option on as well, every
statement would be prepared.

Timestamps are parsed by psycopg's compiled loader when psycopg runs its C implementation
(psycopg-binary, as installed). Django registers a loader of its own that puts its time zone
on each value read, and it derives that loader from psycopg's pure-Python one, which parses
the text with a regular expression: in a refresh grant, which reads five timestamps, that was
5 % of the grant's instructions outside the RSA signatures. Here the compiled loader parses
and the value gets Django's time zone as before, so every value read is the one Django's
loader gives.
"""

import contextlib
import time
import weakref
from collections.abc import Callable
from datetime import datetime, tzinfo
from functools import lru_cache, partial
from typing import Any

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base, operations
from django.db.backends.postgresql.psycopg_any import get_adapters_template, register_tzloader
from django.db.backends.utils import CursorWrapper
from psycopg import Error as PsycopgError
from psycopg import abc
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import AdaptersMap, Loader
from psycopg.errors import FeatureNotSupported
from psycopg.pq import Format, TransactionStatus
from psycopg.types import datetime as datetime_types
from psycopg_pool import ConnectionPool

DEFAULT_GRACE_SECONDS = 1.0
# When each pooled connection was last given back to the pool by a request that met no error.
_GIVEN_BACK: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = weakref.WeakKeyDictionary()
# psycopg prepares a statement once it has run this many times on a connection: at once.
DEFAULT_PREPARE_THRESHOLD = 0


TIMESTAMPTZ_OID: int = base.TIMESTAMPTZ_OID  # type: ignore[attr-defined]


def _psycopg_tz_loader() -> type[abc.Loader]:
    """psycopg's own timestamptz loader: its compiled one when psycopg's C implementation is
    in use (an adapters map puts it in place of the Python class), else the Python one. Not
    taken from psycopg's global map, where other code may have registered a loader of its
    own (Django's loader replaces any such one too)."""
    adapters = AdaptersMap()
    adapters.register_loader(TIMESTAMPTZ_OID, datetime_types.TimestamptzLoader)
    loader = adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
    assert loader is not None
    return loader


PSYCOPG_TZ_LOADER = _psycopg_tz_loader()


def check_pooled(connection: psycopg.Connection[Any], *, grace_seconds: float) -> None:
    """The pool's check of a connection it hands out: none for one given back within
    ``grace_seconds`` by a request that met no database error."""
    given_back = _GIVEN_BACK.get(connection)
    if given_back is None or time.monotonic() - given_back >= grace_seconds:
        ConnectionPool.check_connection(connection)


class TzLoader(Loader):
    """Django's timestamptz loader (psycopg_any.BaseTzLoader: the value read, with
    ``timezone`` put on it), parsing with psycopg's own loader (see the module's
    docstring). Subclasses set ``timezone``, which Django's cursors compare with the
    connection's."""

    timezone: tzinfo | None = None

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._parse = PSYCOPG_TZ_LOADER(oid, context).load

    def load(self, data: Buffer) -> datetime:
        value: datetime = self._parse(data)
        return value.replace(tzinfo=self.timezone)


@lru_cache
def adapters_template(use_tz: bool, timezone: tzinfo | None) -> AdaptersMap:
    """Django's adapters for new connections (get_adapters_template), with TzLoader."""
    adapters = AdaptersMap(get_adapters_template(use_tz, timezone))
    loader = type("SpecificTzLoader", (TzLoader,), {"timezone": timezone, "__module__": __name__})
    adapters.register_loader(TIMESTAMPTZ_OID, loader)
    return adapters


class PreparingCursor(base.ServerBindingCursor):  # type: ignore[name-defined]
    """psycopg's server-binding cursor, whose statements psycopg prepares (see above)."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        try:
            return super().execute(query, params, **kwargs)
        except FeatureNotSupported:
            # "cached plan must not change result type": a migration run elsewhere changed a
            # column this prepared statement returns. PostgreSQL refuses the statement until
            # it is deallocated, and outside a transaction nothing would make psycopg forget
            # it (a ROLLBACK does): every later request on this connection would fail alike.
            # Closed, the connection is replaced when the request ends.
            self.connection.close()
            raise
        except PsycopgError:
            # psycopg prepares a statement before its first execution and forgets it when
            # that execution fails; PostgreSQL keeps it. In a transaction the ROLLBACK to come
            # deallocates everything; outside one, each such failure would leave a statement
            # behind for the connection's life. psycopg clears its own cache on seeing this.
            if self.connection.info.transaction_status == TransactionStatus.IDLE:
                with contextlib.suppress(PsycopgError):
                    self.connection.execute("DEALLOCATE ALL", prepare=False)
            raise


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(  # type: ignore[override]
        self, cursor: Any, sql: str, params: Any
    ) -> str | None:
        """The statement as logged (query logging, CaptureQueriesContext): psycopg keeps no
        text for a statement it executed as prepared, so it is composed from the parameters,
        as Django does for server-side binding. Other cursors' statements as Django logs
        them."""
        executed: str | None = super().last_executed_query(cursor, sql, params)
        if executed is None and sql is not None and isinstance(cursor, PreparingCursor):
            try:
                executed = self.compose_sql(sql, params)
            except PsycopgError:
                # Parameters the statement could not take either: it failed, and says why.
                return None
        return executed


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

    # Set by Django's BaseDatabaseWrapper (not in its type stubs).
    health_check_enabled: bool
    health_check_done: bool
    # Set by Django's PostgreSQL DatabaseWrapper (not in its type stubs).
    _connection_pools: dict[str, ConnectionPool]
    _configure_connection: Callable[[psycopg.Connection[Any]], Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grace_seconds = float(
            self.settings_dict.get("HEALTH_CHECK_GRACE_SECONDS", DEFAULT_GRACE_SECONDS)
        )
        self.cursor_opened_at: float | None = None

    def get_connection_params(self) -> dict[str, Any]:
        if self.alias in self._connection_pools and self.settings_dict["OPTIONS"].get("pool"):
            # Django's connect() asks for them on every request, and get_new_connection takes
            # the connection from the pool, which was built with them, and uses none.
            return {}
        params: dict[str, Any] = super().get_connection_params()
        params["context"] = adapters_template(settings.USE_TZ, self.timezone)
        if "prepare_threshold" not in self.settings_dict["OPTIONS"]:
            params["prepare_threshold"] = DEFAULT_PREPARE_THRESHOLD
        return params

    @property
    def pool(self) -> ConnectionPool | None:
        """Django's pool (base.DatabaseWrapper.pool, as Django 5.2 builds it), with our check
        in place of psycopg's check_connection (see the module's docstring)."""
        options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not options:
            return None
        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            kwargs = self.get_connection_params()
            # Django sets autocommit as configured once it has the connection.
            kwargs["autocommit"] = True
            pool = ConnectionPool(
                kwargs=kwargs,
                open=False,
                configure=self._configure_connection,
                check=(
                    partial(check_pooled, grace_seconds=self.grace_seconds)
                    if self.settings_dict["CONN_HEALTH_CHECKS"]
                    else None
                ),
                **({} if options is True else options),
            )
            # Threads that build a pool at once keep the first one set; none is open yet.
            self._connection_pools.setdefault(self.alias, pool)
        return self._connection_pools[self.alias]

    def _close(self) -> None:
        if self.pool is not None and self.connection is not None:
            if self.errors_occurred:
                _GIVEN_BACK.pop(self.connection, None)
            else:
                _GIVEN_BACK[self.connection] = time.monotonic()
        super()._close()  # type: ignore[misc]

    def _set_autocommit(self, autocommit: bool) -> None:
        # psycopg takes its connection lock and runs its wait loop even to set the value the
        # connection has; Django sets it on every connection it takes from the pool, which
        # are in autocommit.
        if self.connection.autocommit != autocommit:
            super()._set_autocommit(autocommit)  # type: ignore[misc]

    def close_if_health_check_failed(self) -> None:
        now = time.monotonic()
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and not self.errors_occurred
            and self.cursor_opened_at is not None
            and now - self.cursor_opened_at < self.grace_seconds
        ):
            self.health_check_done = True
        super().close_if_health_check_failed()
        self.cursor_opened_at = now

    def server_binding_cursor(self) -> CursorWrapper:
        """A cursor that sends its parameters apart from the statement text (PostgreSQL's
        extended protocol), where Django's cursors quote each parameter into the text in
        Python: for the refresh grant's one write, with some forty parameters, that quoting
        was 6 % of the grant's instructions outside the RSA signatures. Its statements are
        prepared on the server (see the module's docstring). Wrapped as Django wraps its own
        cursors, so execute wrappers, transactions and query logging see it."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            cursor = PreparingCursor(self.connection)
            # As Django's create_cursor: the connection's time zone for timestamps read.
            tzloader = self.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
            if self.timezone != tzloader.timezone:
                register_tzloader(self.timezone, cursor)
        wrapped: CursorWrapper = self._prepare_cursor(cursor)  # type: ignore[attr-defined]
        return wrapped
