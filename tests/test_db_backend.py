"""config.db.postgresql: a reused connection is health-checked after it sat idle, not on
every request, and a connection the database dropped is replaced."""

import time

import pytest
from django.db import OperationalError, connection, connections
from django.utils import timezone

from config.db.postgresql.base import DatabaseWrapper

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


def test_a_connection_dropped_within_the_grace_fails_one_statement_then_is_replaced(counted):
    """The price of the grace: a connection cut less than a second after its last use fails
    the statement that finds it cut; the error marks it, and the next request gets a new
    one."""
    conn = counted()
    pid = backend_pid(conn)
    kill(pid)
    request_boundary(conn)
    with pytest.raises(OperationalError):
        backend_pid(conn)
    request_boundary(conn)
    assert backend_pid(conn) != pid


def test_a_server_binding_cursor_sends_parameters_apart_and_is_seen_like_any_other():
    """server_binding_cursor: parameters go beside the statement ($1, not quoted into the
    text), logged and wrapped as Django's own cursors are."""
    from django.test.utils import CaptureQueriesContext

    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    sql = "SELECT %s::text || 'x', %s::bigint IS NULL, %s::timestamptz"
    stamp = timezone.now()
    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(wrapper):
        for _ in range(6):
            with connection.server_binding_cursor() as cursor:
                cursor.execute(sql, ["it's", None, stamp])
                assert cursor.fetchone() == ("it'sx", True, stamp)
                assert b"$1" in cursor.cursor._query.query
    assert seen == [sql] * 6 and len(captured.captured_queries) == 6
    with connection.cursor() as cursor:
        # Nothing prepared on the server: Django keeps psycopg's preparation off, for poolers.
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 0
