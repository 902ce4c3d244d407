"""bench/token/floor.py, the bare WSGI token endpoint the token benchmark sets beside
Tokenpass: its figures only mean something if it really authenticates the client, stores the
tokens and rotates refresh tokens with reuse detection, as Tokenpass's grants do."""

import base64
import io
import json
import os
import sys
import urllib.parse
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "token"))

import floor

SECRET = "floor-test-secret-0123456789"


@pytest.fixture
def floor_db(monkeypatch):
    db = settings.DATABASES["default"]
    server = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}"
    name = f"test_bench_floor_{os.getpid()}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    monkeypatch.setenv("FLOOR_DATABASE_URL", f"{server}/{name}")
    monkeypatch.setattr(floor, "_local", type(floor._local)())
    yield f"{server}/{name}"
    conn = getattr(floor._local, "conn", None)
    if conn is not None:
        conn.close()
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def post(form: dict[str, str], *, secret: str = SECRET) -> tuple[str, dict]:
    body = urllib.parse.urlencode(form).encode()
    basic = base64.b64encode(f"bench:{secret}".encode()).decode()
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Basic {basic}",
        "wsgi.input": io.BytesIO(body),
    }
    answered: list[str] = []
    chunks = floor.application(environ, lambda status, headers: answered.append(status))
    return answered[0], json.loads(b"".join(chunks))


def rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def test_floor_grants_client_credentials_only_to_the_right_secret_and_stores_the_token(floor_db):
    floor.seed(dsn=floor_db, client_id="bench", secret=SECRET, scope="settlement:read", chains=0)

    status, body = post({"grant_type": "client_credentials", "scope": "settlement:read"})
    assert status == "200 OK"
    header, claims, _ = body["access_token"].split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "=="))["typ"] == "at+jwt"
    assert json.loads(base64.urlsafe_b64decode(claims + "=="))["client_id"] == "bench"
    assert rows(floor_db, "SELECT kind, checksum FROM floor_token") == [
        ("access", floor.checksum(body["access_token"]))
    ]

    assert post({"grant_type": "client_credentials"}, secret="wrong")[0] == "401 Unauthorized"
    assert post({"grant_type": "client_credentials", "scope": "wallet:charge"})[1] == {
        "error": "invalid_scope"
    }
    assert len(rows(floor_db, "SELECT 1 FROM floor_token")) == 1


def test_floor_rotates_refresh_tokens_and_a_reused_one_revokes_the_family(floor_db):
    (first,) = floor.seed(
        dsn=floor_db, client_id="bench", secret=SECRET, scope="openid profile", chains=1
    )

    status, body = post({"grant_type": "refresh_token", "refresh_token": first})
    assert status == "200 OK"
    assert {"access_token", "id_token", "refresh_token"} <= set(body)
    second = body["refresh_token"]
    assert post({"grant_type": "refresh_token", "refresh_token": second})[0] == "200 OK"

    assert post({"grant_type": "refresh_token", "refresh_token": first})[1] == {
        "error": "invalid_grant"
    }
    live = rows(floor_db, "SELECT 1 FROM floor_token WHERE kind = 'refresh' AND revoked IS NULL")
    assert live == []


def test_the_stateless_floor_reads_the_client_once_and_stores_no_access_token(
    floor_db, monkeypatch
):
    """FLOOR_STATELESS does oidc-provider's client credentials work: still the secret check
    and the scopes, but the client kept after one read and the token not stored."""
    monkeypatch.setenv("FLOOR_STATELESS", "1")
    monkeypatch.setattr(floor, "_clients", {})
    floor.seed(dsn=floor_db, client_id="bench", secret=SECRET, scope="settlement:read", chains=0)

    assert post({"grant_type": "client_credentials"})[0] == "200 OK"
    with psycopg.connect(floor_db, autocommit=True) as conn:
        conn.execute("DELETE FROM floor_client")
    assert post({"grant_type": "client_credentials"})[0] == "200 OK"
    assert rows(floor_db, "SELECT 1 FROM floor_token") == []

    assert post({"grant_type": "client_credentials"}, secret="wrong")[0] == "401 Unauthorized"
    assert post({"grant_type": "client_credentials", "scope": "wallet:charge"})[1] == {
        "error": "invalid_scope"
    }
