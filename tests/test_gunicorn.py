"""``gunicorn -c config/gunicorn.py``: gevent's worker, whose requests wait for PostgreSQL
without holding up the others in the process, and whose database connections come from a
bounded pool rather than one for each client connection."""

import time
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from urllib.parse import urlencode

import psycopg
import pytest

from partners.models import Application
from tests import gunicorn_server
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

SERVER_NAME = "tokenpass-served"


def _server_connections() -> list[tuple[str, str | None]]:
    """(state, wait_event_type) of each database connection the server has open."""
    with psycopg.connect(gunicorn_server.database_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state, wait_event_type FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [SERVER_NAME],
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


def _get(conn: HTTPConnection, path: str) -> int:
    conn.request("GET", path, headers={"Host": gunicorn_server.HOST, "X-Forwarded-Proto": "https"})
    response = conn.getresponse()
    response.read()
    return response.status


def _unknown_client_grant(served: gunicorn_server.Served) -> int:
    conn = served.connection(timeout=30)
    conn.request(
        "POST",
        "/o/token/",
        body=urlencode(
            {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"}
        ),
        headers={
            "Host": gunicorn_server.HOST,
            "X-Forwarded-Proto": "https",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    response = conn.getresponse()
    response.read()
    return response.status


def test_a_request_waiting_for_the_database_holds_up_no_other_request_of_its_process():
    """One worker process, and one thread should the worker class be changed to threads: a
    grant waits on a lock another session holds on the applications table, and meanwhile the
    same process answers the readiness probe, which asks the database too. psycopg waits
    through gevent only when gevent patched ``select`` before psycopg was imported (as
    gunicorn's worker does before it loads the application; with ``--preload`` it would
    not)."""
    with (
        gunicorn_server.serve(GUNICORN_THREADS="1", PGAPPNAME=SERVER_NAME) as served,
        psycopg.connect(gunicorn_server.database_url()) as locker,
        ThreadPoolExecutor(1) as pool,
    ):
        locker.execute(f'LOCK TABLE "{Application._meta.db_table}" IN ACCESS EXCLUSIVE MODE')
        blocked = pool.submit(_unknown_client_grant, served)
        deadline = time.monotonic() + 10
        while ("active", "Lock") not in _server_connections():
            assert not blocked.done(), f"the grant did not wait on the lock: {blocked.result()}"
            assert time.monotonic() < deadline, "the grant never reached the database"
            time.sleep(0.05)
        assert _get(served.connection(), "/readyz") == 200
        assert not blocked.done()
        locker.rollback()
        assert blocked.result(timeout=30) == 401


def test_database_connections_stay_within_the_pool_whatever_the_client_connections():
    """Twenty client connections at once, each asking three times for the readiness probe
    (which runs a statement): the worker never holds more database connections than
    DATABASE_POOL_MAX_SIZE. A persistent connection per greenlet would hold one for each
    client connection."""
    with gunicorn_server.serve(DATABASE_POOL_MAX_SIZE="3", PGAPPNAME=SERVER_NAME) as served:

        def client(_: int) -> list[int]:
            conn = served.connection(timeout=30)
            statuses = [_get(conn, "/readyz") for _ in range(3)]
            conn.close()
            return statuses

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(client, range(20)))
        assert answers == [[200, 200, 200]] * 20
        assert 1 <= len(_server_connections()) <= 3


def test_a_password_login_through_gevents_worker():
    """The login view under gevent's worker: the password is verified in a native thread
    (accounts/hashers.py) and the browser gets its session."""
    user = UserFactory()
    with gunicorn_server.serve() as served:
        response = served.post_page_form(
            "/login/", {"username": user.phone, "password": DEFAULT_PASSWORD}
        )
        assert response.status == 302
        assert "sessionid=" in (response.getheader("Set-Cookie") or "")
