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
before."""

import time
from typing import Any

from django.db.backends.postgresql import base
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.db.backends.utils import CursorWrapper
from psycopg.pq import Format

DEFAULT_GRACE_SECONDS = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    # Set by Django's BaseDatabaseWrapper (not in its type stubs).
    health_check_enabled: bool
    health_check_done: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grace_seconds = float(
            self.settings_dict.get("HEALTH_CHECK_GRACE_SECONDS", DEFAULT_GRACE_SECONDS)
        )
        self.cursor_opened_at: float | None = None

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
        was 6 % of the grant's instructions outside the RSA signatures. Nothing is prepared
        on the server (Django turns psycopg's prepared statements off, for connection
        poolers). Wrapped as Django wraps its own cursors, so execute wrappers, transactions
        and query logging see it."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            cursor = base.ServerBindingCursor(self.connection)  # type: ignore[attr-defined]
            # As Django's create_cursor: the connection's time zone for timestamps read.
            oid = base.TIMESTAMPTZ_OID  # type: ignore[attr-defined]
            tzloader = self.connection.adapters.get_loader(oid, Format.TEXT)
            if self.timezone != tzloader.timezone:
                register_tzloader(self.timezone, cursor)
        wrapped: CursorWrapper = self._prepare_cursor(cursor)  # type: ignore[attr-defined]
        return wrapped
