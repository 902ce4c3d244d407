"""config.db.postgresql: a reused connection is health-checked after it sat idle, not on
every request, and a connection the database dropped is replaced."""

import contextlib
import os
import time
from datetime import UTC, datetime

import psycopg
import pytest
from django.db import (
    DataError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    connection,
    connections,
)
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.test import override_settings
from django.utils import timezone
from psycopg.pq import Format
from psycopg_pool import ConnectionPool

from config.db.postgresql.base import PSYCOPG_TZ_LOADER, TIMESTAMPTZ_OID, DatabaseWrapper, TzLoader

pytestmark = pytest.mark.django_db


def new_connection(**overrides):
    """A connection of its own (not the test's), with health checks on as in production."""
    settings_dict = {
        **connection.settings_dict,
        "CONN_MAX_AGE": 600,
        "CONN_HEALTH_CHECKS": True,
        **overrides,
    }
    return DatabaseWrapper(settings_dict, alias="default")


def request_boundary(conn) -> None:
    """What Django does to a persistent connection at the start and end of each request."""
    conn.close_if_unusable_or_obsolete()


def backend_pid(conn) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


@pytest.fixture
def counted(monkeypatch):
    """new_connection() whose SELECT 1 health checks are counted in .checks."""
    made = []

    def make(**overrides):
        conn = new_connection(**overrides)
        conn.checks = 0
        is_usable = conn.is_usable

        def counting() -> bool:
            conn.checks += 1
            return is_usable()

        monkeypatch.setattr(conn, "is_usable", counting)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.close()


def test_postgresql_urls_use_our_backend():
    assert isinstance(connections["default"], DatabaseWrapper)


def test_a_connection_in_use_is_not_checked_and_an_idle_one_is(counted):
    conn = counted()
    pid = backend_pid(conn)
    for _ in range(3):
        request_boundary(conn)
        assert backend_pid(conn) == pid
    assert conn.checks == 0
    conn.cursor_opened_at = time.monotonic() - 5  # five seconds idle
    request_boundary(conn)
    assert backend_pid(conn) == pid
    assert conn.checks == 1


def test_without_grace_every_request_is_checked_as_in_django(counted):
    conn = counted(HEALTH_CHECK_GRACE_SECONDS=0)
    backend_pid(conn)
    for _ in range(3):
        request_boundary(conn)
        backend_pid(conn)
    assert conn.checks == 3


def kill(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.2)


def test_a_connection_dropped_while_idle_is_replaced_without_an_error(counted):
    conn = counted()
    pid = backend_pid(conn)
    kill(pid)
    conn.cursor_opened_at = time.monotonic() - 5
    request_boundary(conn)
    assert backend_pid(conn) != pid
    assert conn.checks == 1


@pytest.mark.parametrize("kind", ["persistent", "pooled"])
def test_a_connection_dropped_within_the_grace_fails_one_statement_then_is_replaced(kind, request):
    """The price of the grace: a connection cut less than a second after its last use fails
    the statement that finds it cut; the error marks it, and the next request gets a new
    one (a pooled one is thrown away when given back)."""
    conn = request.getfixturevalue({"persistent": "counted", "pooled": "pooled"}[kind])()
    pid = backend_pid(conn)
    kill(pid)
    request_boundary(conn)
    with pytest.raises(OperationalError):
        backend_pid(conn)
    request_boundary(conn)
    assert backend_pid(conn) != pid


@pytest.fixture
def pooled(monkeypatch):
    """pooled() -> a connection of its own on a pool of one PostgreSQL connection (Django's
    pool, as DATABASE_POOL_MAX_SIZE sets it up), health checks on as in production; the pool's
    checks are counted in .checks."""
    made = []
    check_connection = ConnectionPool.check_connection

    def make(**overrides):
        conn = new_connection(
            CONN_MAX_AGE=0,
            OPTIONS={**connection.settings_dict["OPTIONS"], "pool": {"min_size": 1, "max_size": 1}},
            **overrides,
        )
        # A pool of its own: Django keeps one per alias, for the whole process.
        conn.alias = "pooled"
        conn.checks = 0

        def counting(pooled_connection) -> None:
            conn.checks += 1
            check_connection(pooled_connection)

        monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counting))
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.close()
        conn.close_pool()


def pooled_request(conn) -> int:
    """One request on a pooled connection: the backend it ran on. Django gives the connection
    back to the pool when the request ends."""
    request_boundary(conn)
    pid = backend_pid(conn)
    request_boundary(conn)
    assert conn.connection is None
    return pid


def test_a_pooled_connection_given_back_within_the_grace_is_not_checked_and_an_idle_one_is(
    pooled,
):
    conn = pooled(HEALTH_CHECK_GRACE_SECONDS=0.3)
    pid = pooled_request(conn)
    checks = conn.checks
    for _ in range(3):
        assert pooled_request(conn) == pid
    assert conn.checks == checks
    time.sleep(0.4)
    assert pooled_request(conn) == pid
    assert conn.checks == checks + 1


def test_a_pooled_connection_dropped_while_idle_is_replaced_without_an_error(pooled):
    conn = pooled(HEALTH_CHECK_GRACE_SECONDS=0.1)
    pid = pooled_request(conn)
    kill(pid)
    assert pooled_request(conn) != pid


def test_a_pooled_connection_closed_after_an_error_is_checked_when_next_handed_out(pooled):
    conn = pooled()
    pid = pooled_request(conn)
    checks = conn.checks
    with pytest.raises(ProgrammingError), conn.cursor() as cursor:
        cursor.execute("SELECT no_such_column")
    conn.close()
    assert pooled_request(conn) == pid
    assert conn.checks == checks + 1


def test_without_health_checks_the_pool_checks_nothing(pooled):
    conn = pooled(CONN_HEALTH_CHECKS=False, HEALTH_CHECK_GRACE_SECONDS=0)
    for _ in range(3):
        pooled_request(conn)
    assert conn.checks == 0


def test_a_pooled_connection_left_outside_autocommit_comes_back_in_autocommit(pooled):
    """Django sets autocommit on each connection it takes from the pool (only when it is not
    already on, config.db.postgresql): one that a request left in a transaction is handed out
    again in autocommit, with nothing of that transaction kept."""
    conn = pooled()
    request_boundary(conn)
    conn.set_autocommit(False)
    with conn.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE left_open (id int)")
    conn.close()
    request_boundary(conn)
    conn.ensure_connection()
    assert conn.get_autocommit() and conn.connection.autocommit
    with conn.cursor() as cursor:
        cursor.execute("SELECT to_regclass('pg_temp.left_open') IS NULL")
        assert cursor.fetchone()[0] is True
    request_boundary(conn)


def test_pooled_connections_read_timestamps_and_prepare_statements_as_others_do(pooled):
    conn = pooled()
    request_boundary(conn)
    with conn.server_binding_cursor() as cursor:
        for _ in range(2):
            cursor.execute("SELECT %s::timestamptz", ["2026-12-03 10:00:00+00"])
            assert cursor.fetchone()[0] == datetime(2026, 12, 3, 10, tzinfo=UTC)
    loader = conn.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
    assert issubclass(loader, TzLoader)
    assert prepared_statements(conn) == ["SELECT $1::timestamptz"]
    request_boundary(conn)


def prepared_statements(conn) -> list[str]:
    with conn.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements ORDER BY statement")
        return [row[0] for row in cursor.fetchall()]


def test_a_server_binding_cursor_sends_parameters_apart_and_is_seen_like_any_other():
    """server_binding_cursor: parameters go beside the statement ($1, not quoted into the
    text), logged and wrapped as Django's own cursors are; the statement is prepared on the
    server once and then only executed, and Django's own cursors prepare nothing."""
    from django.test.utils import CaptureQueriesContext

    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    sql = "SELECT %s::text || 'x', %s::bigint IS NULL, %s::timestamptz"
    stamp = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::text || 'y'", ["client side"])
    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(wrapper):
        for _ in range(6):
            with connection.server_binding_cursor() as cursor:
                cursor.execute(sql, ["it's", None, stamp])
                assert cursor.fetchone() == ("it'sx", True, stamp)
    assert seen == [sql] * 6 and len(captured.captured_queries) == 6
    # Logged with its parameters, though psycopg keeps no text for a prepared execution.
    assert all(
        query["sql"].startswith("SELECT 'it''s'::text || 'x', NULL::bigint IS NULL")
        for query in captured.captured_queries
    )
    # Prepared once, with the parameters as $n; the client-side statement is not there.
    assert prepared_statements(connection) == [
        "SELECT $1::text || 'x', $2::bigint IS NULL, $3::timestamptz"
    ]


def test_prepared_statements_can_be_turned_off_for_a_pooling_proxy():
    """OPTIONS["prepare_threshold"] = None (DATABASE_PREPARED_STATEMENTS=false): every
    statement is parsed anew, as behind a proxy that pools transactions must be."""
    conn = new_connection(
        OPTIONS={**connection.settings_dict["OPTIONS"], "prepare_threshold": None}
    )
    try:
        for _ in range(3):
            with conn.server_binding_cursor() as cursor:
                cursor.execute("SELECT %s::int + 1", [1])
                assert cursor.fetchone() == (2,)
        assert prepared_statements(conn) == []
    finally:
        conn.close()


def test_a_prepared_statement_survives_a_rollback_and_a_changed_table():
    """psycopg forgets its prepared statements after a ROLLBACK or an ALTER and prepares them
    again: a statement still answers after both, with the table's new shape."""
    conn = new_connection()
    try:
        with conn.cursor() as cursor:
            cursor.execute("CREATE TEMPORARY TABLE prepared_probe (id int, label text)")
            cursor.execute("INSERT INTO prepared_probe VALUES (1, 'one')")

        def label() -> str:
            with conn.server_binding_cursor() as cursor:
                cursor.execute("SELECT label FROM prepared_probe WHERE id = %s", [1])
                return cursor.fetchone()[0]

        assert label() == "one"
        conn.set_autocommit(False)
        with conn.cursor() as cursor:
            cursor.execute("UPDATE prepared_probe SET label = 'two'")
        conn.rollback()
        conn.set_autocommit(True)
        assert label() == "one"
        with conn.cursor() as cursor:
            cursor.execute("ALTER TABLE prepared_probe ALTER COLUMN label TYPE varchar(10)")
        assert label() == "one"
    finally:
        conn.close()


def test_a_statement_whose_result_another_process_changed_fails_one_request():
    """A migration run elsewhere changes the type of a column a prepared statement returns:
    PostgreSQL refuses that statement ("cached plan must not change result type") until it is
    deallocated. The request that finds it fails; the connection is replaced at the end of it,
    and the next request prepares the statement afresh."""
    conn, other = new_connection(), new_connection()
    table = f"prepared_shape_{os.getpid()}"
    try:
        with other.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {table} (id int, label varchar(10))")
            cursor.execute(f"INSERT INTO {table} VALUES (1, 'one')")

        def label() -> str:
            with conn.server_binding_cursor() as cursor:
                cursor.execute(f"SELECT label FROM {table} WHERE id = %s", [1])
                return cursor.fetchone()[0]

        assert label() == "one"
        request_boundary(conn)
        with other.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} ALTER COLUMN label TYPE varchar(20)")
        with pytest.raises(NotSupportedError):
            label()
        request_boundary(conn)
        assert label() == "one"
        request_boundary(conn)
        assert label() == "one"
    finally:
        with other.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()
        other.close()


def test_a_failed_statement_is_logged_as_django_logs_it():
    """Query logging composes a prepared statement's text from its parameters; a statement
    whose parameters did not fit fails with Django's own error, logged or not."""
    from django.test.utils import CaptureQueriesContext

    for logged in (False, True):
        with CaptureQueriesContext(connection) if logged else contextlib.nullcontext():
            with pytest.raises(ProgrammingError), connection.server_binding_cursor() as cursor:
                cursor.execute("SELECT %s, %s", [1])
            with pytest.raises(ProgrammingError), connection.cursor() as cursor:
                cursor.execute("SELECT %s, %s", [1])


TIMESTAMPS = (
    "2026-12-03 11:22:33.456789+05:30",
    "2026-12-03 11:22:33-08",
    "2026-03-29 01:30:00+00",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
)


def read_timestamps(
    conn, *, djangos_loader: bool = False, binding: bool = False, stamps=TIMESTAMPS
) -> list:
    """``stamps`` read on ``conn``, by our loader or by the one Django registers."""
    literals = ", ".join(f"'{stamp}'::timestamptz" for stamp in stamps)
    opened = conn.server_binding_cursor() if binding else conn.cursor()
    with opened as cursor:
        if djangos_loader:
            register_tzloader(conn.timezone, cursor.cursor)
        cursor.execute(f"SELECT {literals}")
        return list(cursor.fetchone())


def test_timestamps_are_parsed_by_psycopg_and_read_as_djangos_loader_reads_them():
    """Django's timestamptz loader parses in Python; ours hands the text to psycopg's
    compiled loader and then does what Django's does (its time zone on the value): the
    same values, with the same tzinfo, on Django's cursors and the server-binding one."""
    loader = connection.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
    assert issubclass(loader, TzLoader) and loader.timezone is connection.timezone
    parser = type(loader(TIMESTAMPTZ_OID, connection.connection)._parse.__self__)
    assert parser is PSYCOPG_TZ_LOADER
    # psycopg's compiled loader, unless psycopg runs its pure-Python implementation.
    python_loader = psycopg.types.datetime.TimestamptzLoader
    assert (parser is python_loader) == (psycopg.pq.__impl__ == "python")
    djangos = read_timestamps(connection, djangos_loader=True)
    assert djangos[0] == datetime(2026, 12, 3, 5, 52, 33, 456789, tzinfo=UTC)
    for binding in (False, True):
        ours = read_timestamps(connection, binding=binding)
        assert ours == djangos
        assert all(value.tzinfo is UTC for value in ours)


def test_timestamps_out_of_pythons_range_fail_as_with_djangos_loader():
    for literal in ("infinity", "10000-01-01 00:00:00+00", "0044-03-15 00:00:00+00 BC"):
        for djangos_loader in (False, True):
            with pytest.raises(DataError):
                read_timestamps(connection, djangos_loader=djangos_loader, stamps=(literal,))


def test_without_time_zone_support_timestamps_are_naive_in_the_connections_time_zone():
    """USE_TZ off: Django sets the session's time zone to TIME_ZONE and reads naive
    values; so does our loader."""
    with override_settings(USE_TZ=False, TIME_ZONE="Asia/Shanghai"):
        conn = new_connection()
        try:
            # The last one is past year 9999 in Shanghai: no loader reads it.
            ours = read_timestamps(conn, stamps=TIMESTAMPS[:-1])
            loader = conn.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
            assert issubclass(loader, TzLoader) and loader.timezone is None
            assert ours == read_timestamps(conn, djangos_loader=True, stamps=TIMESTAMPS[:-1])
            assert ours[0] == datetime(2026, 12, 3, 13, 52, 33, 456789)
        finally:
            conn.close()


def test_statements_that_fail_outside_a_transaction_leave_nothing_prepared_behind():
    """psycopg prepares a statement before its first execution and forgets it when that
    execution fails, but PostgreSQL keeps it: outside a transaction no ROLLBACK would clear
    it, and each failure would leave one more behind for the connection's life."""
    conn = new_connection()
    try:
        with conn.server_binding_cursor() as cursor:
            cursor.execute("SELECT %s::int + 1", [1])
        before = prepared_statements(conn)
        for _ in range(3):
            with pytest.raises(DataError), conn.server_binding_cursor() as cursor:
                cursor.execute("SELECT 1 / %s::int", [0])
        # The statements prepared before still answer (prepared again where needed).
        with conn.server_binding_cursor() as cursor:
            cursor.execute("SELECT %s::int + 1", [2])
            assert cursor.fetchone() == (3,)
        with conn.server_binding_cursor() as cursor:
            cursor.execute("SELECT 1 / %s::int", [1])
            assert cursor.fetchone() == (1,)
        assert prepared_statements(conn) == sorted([*before, "SELECT 1 / $1::int"])
    finally:
        conn.close()
