"""The Python floor for bench/token: a bare WSGI token endpoint that does only the work any
Tokenpass token grant must do, with no framework around it. It answers the question the
Tokenpass figures alone cannot: how fast can a Python server under the same gunicorn settings
go at all, and so how much of the distance to oidc-provider is Django, DOT and oauthlib, and
how much is Python and gunicorn.

What one grant does here, as Tokenpass's does:

- client authentication with HTTP Basic: the client row read by client_id (one SELECT) and
  the secret checked against its keyed HMAC-SHA256 digest in constant time;
- client credentials: an RFC 9068 access token (the same claims, RS256 with a 2048-bit key),
  stored as a SHA-256 row so it could be revoked (one INSERT);
- refresh token: in one transaction, the presented token's row locked by its SHA-256 (a
  revoked one revokes its family and answers invalid_grant), revoked, and a new access token
  and a rotated refresh token stored (one multi-row INSERT); an access token and an ID token
  signed.

With ``FLOOR_STATELESS=1`` a client credentials grant does exactly what oidc-provider's does in
the benchmark, and no more: the client is read once per process and kept (oidc-provider's
clients are static configuration) and the signed access token is not stored. It answers the
question the other figures leave open: whether any Python server under gunicorn could match
oidc-provider's client credentials grant, given the same work.

What it leaves out, and Tokenpass does not: scopes and grant types per app, partner and review
status, rate limits on failed client authentication, consent and audit rows, error bodies for
every malformed request, the ID token row, the HTTPS and security headers. The floor is a lower
bound on cost, not a token server: it is never served outside this benchmark.

    gunicorn -c config/gunicorn.py --chdir bench/token floor:application   (FLOOR_DATABASE_URL)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import urllib.parse
import uuid
from typing import Any

import psycopg
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "https://127.0.0.1"
HASH_KEY = b"floor-client-secret-hash-key"
ACCESS_SECONDS = 3600

SCHEMA = """
CREATE TABLE floor_client (
    client_id text PRIMARY KEY,
    secret_digest text NOT NULL,
    scope text NOT NULL
);
CREATE TABLE floor_token (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    checksum text NOT NULL UNIQUE,
    client_id text NOT NULL,
    subject text NOT NULL,
    scope text NOT NULL,
    family uuid,
    expires timestamptz,
    revoked timestamptz
);
"""

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_local = threading.local()
# Client rows kept for the process's life (FLOOR_STATELESS), as static configuration is.
_clients: dict[str, tuple[str, str] | None] = {}


def stateless() -> bool:
    return os.environ.get("FLOOR_STATELESS") == "1"


def secret_digest(secret: str) -> str:
    return hmac.new(HASH_KEY, secret.encode(), hashlib.sha256).hexdigest()


def checksum(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def seed(*, dsn: str, client_id: str, secret: str, scope: str, chains: int) -> list[str]:
    """Create the floor's tables, its one client and one refresh token per chain."""
    tokens = [secrets.token_urlsafe(32) for _ in range(chains)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            "INSERT INTO floor_client VALUES (%s, %s, %s)",
            (client_id, secret_digest(secret), scope),
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO floor_token (kind, checksum, client_id, subject, scope, family) "
                "VALUES ('refresh', %s, %s, %s, %s, %s)",
                [
                    (checksum(t), client_id, f"user-{n}", scope, uuid.uuid4())
                    for n, t in enumerate(tokens)
                ],
            )
    return tokens


def _connection() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["FLOOR_DATABASE_URL"], autocommit=True)
        _local.conn = conn
    return conn


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(claims: dict[str, Any], typ: str) -> str:
    header = _b64(json.dumps({"alg": "RS256", "typ": typ, "kid": "floor"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    signature = _KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def _claims(*, client_id: str, subject: str, scope: str, now: int) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "sub": subject,
        "aud": client_id,
        "client_id": client_id,
        "scope": scope,
        "iat": now,
        "nbf": now,
        "exp": now + ACCESS_SECONDS,
        "jti": uuid.uuid4().hex,
    }


def _answer(start_response: Any, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]


def _client(conn: psycopg.Connection, authorization: str) -> tuple[str, str] | None:
    """(client_id, allowed scope) of the client HTTP Basic names, if its secret matches."""
    if not authorization.startswith("Basic "):
        return None
    try:
        pair = base64.b64decode(authorization[6:], validate=True).decode()
    except ValueError:
        return None
    client_id, _, secret = pair.partition(":")
    client_id, secret = urllib.parse.unquote(client_id), urllib.parse.unquote(secret)
    if stateless() and client_id in _clients:
        row = _clients[client_id]
    else:
        row = conn.execute(
            "SELECT secret_digest, scope FROM floor_client WHERE client_id = %s", (client_id,)
        ).fetchone()
        if stateless():
            _clients[client_id] = row
    if row is None or not hmac.compare_digest(row[0], secret_digest(secret)):
        return None
    return client_id, row[1]


def _client_credentials(conn: psycopg.Connection, client_id: str, scope: str) -> dict[str, Any]:
    access = _sign(
        _claims(client_id=client_id, subject=client_id, scope=scope, now=int(time.time())),
        "at+jwt",
    )
    if not stateless():
        conn.execute(
            "INSERT INTO floor_token (kind, checksum, client_id, subject, scope, expires) "
            "VALUES ('access', %s, %s, %s, %s, now() + make_interval(secs => %s))",
            (checksum(access), client_id, client_id, scope, ACCESS_SECONDS),
        )
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ACCESS_SECONDS,
        "scope": scope,
    }


def _refresh(conn: psycopg.Connection, client_id: str, presented: str) -> dict[str, Any] | None:
    with conn.transaction():
        row = conn.execute(
            "SELECT id, subject, scope, family, revoked FROM floor_token "
            "WHERE checksum = %s AND kind = 'refresh' AND client_id = %s FOR UPDATE",
            (checksum(presented), client_id),
        ).fetchone()
        if row is None:
            return None
        token_id, subject, scope, family, revoked = row
        if revoked is not None:
            conn.execute(
                "UPDATE floor_token SET revoked = now() WHERE family = %s AND revoked IS NULL",
                (family,),
            )
            return None
        now = int(time.time())
        access = _sign(
            _claims(client_id=client_id, subject=subject, scope=scope, now=now), "at+jwt"
        )
        id_token = _sign(
            {
                "iss": ISSUER,
                "sub": subject,
                "aud": client_id,
                "iat": now,
                "exp": now + ACCESS_SECONDS,
            },
            "JWT",
        )
        rotated = secrets.token_urlsafe(32)
        conn.execute("UPDATE floor_token SET revoked = now() WHERE id = %s", (token_id,))
        conn.execute(
            "INSERT INTO floor_token (kind, checksum, client_id, subject, scope, family, expires) "
            "VALUES ('access', %s, %s, %s, %s, NULL, now() + make_interval(secs => %s)), "
            "('refresh', %s, %s, %s, %s, %s, NULL)",
            (
                checksum(access),
                client_id,
                subject,
                scope,
                ACCESS_SECONDS,
                checksum(rotated),
                client_id,
                subject,
                scope,
                family,
            ),
        )
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ACCESS_SECONDS,
        "scope": scope,
        "refresh_token": rotated,
        "id_token": id_token,
    }


def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if environ["REQUEST_METHOD"] != "POST" or not 0 < length <= 4096:
        return _answer(start_response, "400 Bad Request", {"error": "invalid_request"})
    form = dict(urllib.parse.parse_qsl(environ["wsgi.input"].read(length).decode()))
    conn = _connection()
    client = _client(conn, environ.get("HTTP_AUTHORIZATION", ""))
    if client is None:
        return _answer(start_response, "401 Unauthorized", {"error": "invalid_client"})
    client_id, allowed = client
    grant = form.get("grant_type")
    if grant == "client_credentials":
        scope = form.get("scope", allowed)
        if not set(scope.split()) <= set(allowed.split()):
            return _answer(start_response, "400 Bad Request", {"error": "invalid_scope"})
        return _answer(start_response, "200 OK", _client_credentials(conn, client_id, scope))
    if grant == "refresh_token":
        body = _refresh(conn, client_id, form.get("refresh_token", ""))
        if body is None:
            return _answer(start_response, "400 Bad Request", {"error": "invalid_grant"})
        return _answer(start_response, "200 OK", body)
    return _answer(start_response, "400 Bad Request", {"error": "unsupported_grant_type"})
