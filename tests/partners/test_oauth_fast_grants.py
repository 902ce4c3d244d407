"""The fast path for client credentials and refresh grants (partners/oauth/grants.py) gives
the answer DOT's path gives.

Every case is played twice from the same starting state, once on each path
(OAUTH_FAST_TOKEN_GRANTS on and off), and the two answers are compared after the values that
must differ (token identifiers, times, client ids) are checked and set aside: status,
headers, error bodies, token claims and the rows left behind must be the same. Each case also
says which path answers it: the fast one for ordinary successes, DOT's for everything else."""

import base64
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from jwcrypto import jws
from oauth2_provider.models import (
    get_access_token_model,
    get_id_token_model,
    get_refresh_token_model,
)

from accounts.models import AuditEvent
from partners.models import Application, AuthorizationCode, Consent, Partner
from partners.oauth import grants, keys, ratelimit
from partners.oauth.services import token_checksum
from partners.oauth.tokens import client_credentials_claims
from tests.factories import UserFactory
from tests.partners.wsgi_client import LaneClient

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
IDToken = get_id_token_model()

COMPARED_HEADERS = (
    "Content-Type",
    "Cache-Control",
    "Pragma",
    "WWW-Authenticate",
    "Retry-After",
    "Access-Control-Allow-Origin",
)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@dataclass
class Setup:
    """One case's starting state and request."""

    app: Application
    secret: str
    user: Any = None
    refresh_token: str = ""
    form: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/o/token/"


def jwt_parts(token: str) -> tuple[dict, dict]:
    """Header and claims of one of our JWTs, after checking its signature against our
    published keys."""
    parsed = jws.JWS()
    parsed.deserialize(token)
    header = parsed.jose_header
    key = keys.verification_jwk(header["kid"])
    assert key is not None
    parsed.verify(key)
    return header, json.loads(parsed.payload)


def at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def normalized_claims(claims: dict, setup: Setup, access_token: str | None) -> dict:
    """Claims with the values that must differ between two runs checked and replaced."""
    now = time.time()
    out = dict(claims)
    assert abs(out.pop("iat") - now) < 30
    # exp and iat are two readings of the clock on both paths (as in DOT's ID tokens): a
    # second may tick between them, so the lifetime is compared in whole minutes.
    lifetime = out.pop("exp") - claims["iat"]
    out["lifetime minutes"] = round(lifetime / 60)
    assert abs(lifetime - 60 * out["lifetime minutes"]) <= 1, lifetime
    if "nbf" in out:
        assert out.pop("nbf") == claims["iat"]
    jti = out.pop("jti")
    assert re.fullmatch(r"[0-9a-f]{32}|[0-9a-f-]{36}", jti)
    out["jti"] = "uuid" if "-" in jti else "hex"
    if "at_hash" in out:
        assert access_token is not None and out.pop("at_hash") == at_hash(access_token)
        out["at_hash"] = "matches"
    replacements = {setup.app.client_id: "<client>"}
    if setup.user is not None:
        replacements[setup.user.public_id] = "<person>"
    for name in ("sub", "aud", "client_id"):
        if isinstance(out.get(name), list):
            out[name] = [replacements.get(v, v) for v in out[name]]
        elif name in out:
            out[name] = replacements.get(out[name], out[name])
    return out


def outcome(response, setup: Setup) -> dict:
    """What a client and the database see of one answer, comparable across runs."""
    seen: dict[str, Any] = {"status": response.status_code}
    seen["headers"] = {name: response.get(name) for name in COMPARED_HEADERS}
    body = json.loads(response.content)
    seen["keys"] = list(body)
    for name, value in body.items():
        if name in ("access_token", "id_token"):
            header, claims = jwt_parts(value)
            header.pop("kid")
            seen[name] = (header, normalized_claims(claims, setup, body.get("access_token")))
        elif name == "refresh_token":
            assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)
            assert value != setup.refresh_token
            seen[name] = "rotated"
        else:
            seen[name] = value
    app = setup.app
    presented_pk = (
        RefreshToken.objects.filter(token_checksum=token_checksum(setup.refresh_token))
        .values_list("pk", flat=True)
        .first()
    )
    seen["rows"] = {
        "access tokens": [
            (
                token.scope,
                "in clear" if token.token else "hashed",
                token.resource,
                "person" if token.user_id else None,
                "presented" if token.source_refresh_token_id == presented_pk else None,
            )
            for token in AccessToken.objects.filter(application=app).order_by("pk")
        ],
        "live refresh tokens": RefreshToken.objects.filter(
            application=app, revoked__isnull=True
        ).count(),
        "revoked refresh tokens": RefreshToken.objects.filter(
            application=app, revoked__isnull=False
        ).count(),
        "id tokens": list(IDToken.objects.filter(application=app).values_list("scope")),
        "consent used": list(
            Consent.objects.filter(application=app).values_list("last_used_at", flat=True)
        )
        != [None] * Consent.objects.filter(application=app).count(),
        "audit": sorted(AuditEvent.objects.filter(user=setup.user).values_list("action", flat=True))
        if setup.user is not None
        else [],
    }
    if "access_token" in body and jwt_parts(body["access_token"])[1].get("gty"):
        # A client credentials token is not stored; only its signature stands for it.
        assert not AccessToken.objects.filter(
            token_checksum=token_checksum(body["access_token"])
        ).exists()
        assert client_credentials_claims(body["access_token"]) is not None
        seen["stored"] = {"stored": False}
    elif "access_token" in body:
        stored = AccessToken.objects.get(token_checksum=token_checksum(body["access_token"]))
        assert stored.token == ""
        assert abs((stored.expires - timezone.now()).total_seconds() - body["expires_in"]) < 30
        seen["stored"] = {"id token row": stored.id_token_id is not None}
    if "refresh_token" in body:
        rotated = RefreshToken.objects.get(token_checksum=token_checksum(body["refresh_token"]))
        previous = RefreshToken.objects.get(token_checksum=token_checksum(setup.refresh_token))
        seen["stored"]["same family"] = rotated.token_family == previous.token_family
        seen["stored"]["points at the access token"] = (
            rotated.access_token.token_checksum == token_checksum(body["access_token"])
        )
    return seen


def play(build, monkeypatch, *, lane: bool = False) -> tuple[dict, bool]:
    """Build the case, send its request, and say what came back and which path answered.
    With ``lane``, the request goes through the WSGI application gunicorn serves, whose
    token lane must answer exactly what the token view answers (partners/oauth/lane.py)."""
    taken = []
    real = grants.token_answer

    def spy(**kwargs):
        answered = real(**kwargs)
        taken.append(answered is not None)
        return answered

    monkeypatch.setattr(grants, "token_answer", spy)
    cache.clear()
    # Each run starts from the same state: what one run wrote is rolled back.
    with transaction.atomic():
        setup = build()
        with CaptureQueriesContext(connection) as captured:
            if lane:
                through = LaneClient()
                response = through.post(setup.path, setup.form, headers=setup.headers)
                # The lane answers what the fast path answers, and hands Django the rest whole.
                assert through.django_bodies == ([] if any(taken) else [urlencode_form(setup)])
            else:
                extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in setup.headers.items()}
                response = Client().post(setup.path, setup.form, **extra)
        if any(taken):
            # One read: no deferred field of its lean rows was loaded afterwards.
            reads = [q for q in captured.captured_queries if q["sql"].startswith("SELECT")]
            assert len(reads) <= 1, reads
        seen = outcome(response, setup)
        transaction.set_rollback(True)
    monkeypatch.setattr(grants, "token_answer", real)
    return seen, any(taken)


def urlencode_form(setup: Setup) -> bytes:
    return urlencode(setup.form, doseq=True).encode()


def both_paths(build, monkeypatch) -> tuple[dict, bool]:
    """The case on DOT's path, on the fast path and through the token lane: the answers must
    be the same. Returns the answer and whether the fast path answered."""
    with override_settings(OAUTH_FAST_TOKEN_GRANTS=False):
        reference, fast_on_dot = play(build, monkeypatch)
    assert not fast_on_dot
    with override_settings(OAUTH_FAST_TOKEN_GRANTS=True):
        answer, fast = play(build, monkeypatch)
        through_lane, fast_in_lane = play(build, monkeypatch, lane=True)
    assert answer == reference
    assert through_lane == reference
    assert fast_in_lane is fast
    return answer, fast


# ---- client credentials ------------------------------------------------------------------


@pytest.fixture
def server_app(make_app):
    """build(**overrides) -> a Setup for a partner server's client credentials request."""

    def build(
        *,
        scopes: str = "settlement:read wallet:charge",
        grant_types: str = "client-credentials",
        form: dict | None = None,
        auth: str = "basic",
        secret: str | None = None,
        origin: str | None = None,
        **app_fields: Any,
    ) -> Setup:
        app, real_secret = make_app(
            f"Server {uuid.uuid4().hex[:6]}",
            allowed_scopes=scopes,
            allowed_grant_types=grant_types,
            **app_fields,
        )
        setup = Setup(app=app, secret=real_secret)
        setup.form = {"grant_type": "client_credentials", **(form or {})}
        presented = real_secret if secret is None else secret
        if auth == "basic":
            setup.headers["Authorization"] = basic(app.client_id, presented)
        elif auth == "basic, escaped":
            # The client form-encodes its id and secret before Basic (RFC 6749 §2.3.1); an
            # escaped plain character reads as the character itself.
            escaped = f"%{ord(presented[0]):02X}{presented[1:]}"
            setup.headers["Authorization"] = basic(app.client_id, escaped)
        elif auth == "body":
            setup.form.update(client_id=app.client_id, client_secret=presented)
        if origin is not None:
            setup.headers["Origin"] = origin
        return setup

    return build


CLIENT_CREDENTIALS_CASES = {
    # name: (overrides, fast path expected)
    "scope asked": ({"form": {"scope": "settlement:read"}}, True),
    "two scopes": ({"form": {"scope": "wallet:charge settlement:read"}}, True),
    "no scope: the defaults": ({}, True),
    "no scope, openid allowed": ({"scopes": "openid settlement:read"}, True),
    "secret in the body": ({"auth": "body", "form": {"scope": "settlement:read"}}, True),
    "escaped secret": ({"auth": "basic, escaped"}, True),
    "escaped wrong secret": ({"auth": "basic, escaped", "secret": "not-the-secret"}, False),
    "wrong secret": ({"secret": "not-the-secret"}, False),
    "wrong secret in the body": ({"auth": "body", "secret": "nope"}, False),
    "no client authentication": ({"auth": "none"}, False),
    "scope not allowed": ({"form": {"scope": "openid"}}, False),
    "unknown scope": ({"form": {"scope": "settlement:write"}}, False),
    "empty scope": ({"form": {"scope": ""}}, False),
    "two spaces in scope": ({"form": {"scope": "settlement:read  wallet:charge"}}, False),
    "grant not allowed": ({"grant_types": "authorization-code"}, False),
    "public client": ({"client_type": Application.CLIENT_PUBLIC}, False),
    "repeated scope parameter": ({"form": {"scope": ["settlement:read", "wallet:charge"]}}, False),
    "unexpected parameter": ({"form": {"audience": "x"}}, False),
    "RFC 8707 resource": ({"form": {"resource": "https://api.example.com/"}}, False),
    "CORS request (no CORS header for this grant)": (
        {"origin": "https://app.example.com", "allowed_origins": "https://app.example.com"},
        True,
    ),
}


@pytest.mark.parametrize("case", list(CLIENT_CREDENTIALS_CASES))
def test_client_credentials_answers_match(case, server_app, monkeypatch):
    overrides, expect_fast = CLIENT_CREDENTIALS_CASES[case]
    answer, fast = both_paths(lambda: server_app(**overrides), monkeypatch)
    assert fast is expect_fast, answer
    if expect_fast:
        assert answer["status"] == 200 and answer["access_token"][0]["typ"] == "at+jwt"


def test_client_credentials_failures_are_counted_once(server_app, monkeypatch, settings):
    """A wrong secret is counted by DOT's path alone (the fast path passed it on without
    counting), and a blocked client is refused with the right secret too."""
    settings.OAUTH_CLIENT_AUTH_FAILURE_LIMIT = 2
    setup = server_app()
    wrong = basic(setup.app.client_id, "wrong")
    for expected in (401, 401, 429):
        response = Client().post("/o/token/", setup.form, HTTP_AUTHORIZATION=wrong)
        assert response.status_code == expected
    response = Client().post(
        "/o/token/", setup.form, **{"HTTP_AUTHORIZATION": setup.headers["Authorization"]}
    )
    assert response.status_code == 429 and response.json()["error"] == "invalid_client"
    assert response["Retry-After"]


def test_suspended_partner_gets_nothing_on_either_path(server_app, monkeypatch):
    def build():
        setup = server_app()
        Partner.objects.filter(pk=setup.app.partner_id).update(status=Partner.Status.SUSPENDED)
        return setup

    answer, fast = both_paths(build, monkeypatch)
    assert not fast and answer["status"] == 401


# ---- refresh ------------------------------------------------------------------------------


@pytest.fixture
def signed_in_chain(make_app):
    """build(**overrides) -> a Setup holding a live refresh token of a person's sign-in, as a
    code grant leaves it: the code's record (auth_time, sid, authorization details), the
    access token and the refresh token of one family."""

    def build(
        *,
        scope: str = "openid profile email",
        app_scopes: str = "openid profile email phone wallet:charge",
        grant_types: str = "authorization-code refresh_token",
        form: dict | None = None,
        headers: dict | None = None,
        details: list | None = None,
        sid: str = "session-1",
        refresh_state: str = "live",
        auth: str = "basic",
        **app_fields: Any,
    ) -> Setup:
        app, secret = make_app(
            f"Web {uuid.uuid4().hex[:6]}",
            allowed_scopes=app_scopes,
            allowed_grant_types=grant_types,
            **app_fields,
        )
        user = UserFactory(display_name="Grace Hopper", email="grace@example.com")
        family = uuid.uuid4()
        AuthorizationCode.objects.create(
            code_checksum=token_checksum(secrets.token_urlsafe(32)),
            application=app,
            user=user,
            auth_time=1_700_000_000,
            sid=sid,
            authorization_details=details,
            redeemed_at=timezone.now(),
            token_family=family,
        )
        Consent.objects.create(user=user, application=app, scope=scope)
        access = AccessToken.objects.create(
            user=user,
            application=app,
            token=secrets.token_urlsafe(32),
            scope=scope,
            expires=timezone.now() + timedelta(hours=1),
        )
        raw = secrets.token_urlsafe(32)
        RefreshToken.objects.create(
            user=user, application=app, token=raw, access_token=access, token_family=family
        )
        if refresh_state == "revoked":
            RefreshToken.objects.filter(token_checksum=token_checksum(raw)).update(
                revoked=timezone.now() - timedelta(minutes=1)
            )
        elif refresh_state == "expired":
            AccessToken.objects.filter(pk=access.pk).update(
                expires=timezone.now() - timedelta(days=400)
            )
        setup = Setup(app=app, secret=secret, user=user, refresh_token=raw)
        setup.form = {"grant_type": "refresh_token", "refresh_token": raw}
        setup.headers = dict(headers or {})
        if auth == "basic":
            setup.headers["Authorization"] = basic(app.client_id, secret)
        elif auth == "client_id":  # a public client names itself (RFC 6749 §3.2.1)
            setup.form["client_id"] = app.client_id
        elif auth == "another app's client_id":
            other, _ = make_app(
                f"Other {uuid.uuid4().hex[:6]}",
                client_type=Application.CLIENT_PUBLIC,
                allowed_scopes=app_scopes,
                allowed_grant_types=grant_types,
            )
            setup.form["client_id"] = other.client_id
        setup.form.update(form or {})
        return setup

    return build


PUBLIC = Application.CLIENT_PUBLIC
APP_ORIGIN = "https://app.example.com"
REFRESH_CASES = {
    "openid profile email": ({}, True),
    "without openid: no ID token": ({"scope": "wallet:charge"}, True),
    "narrower scope": ({"form": {"scope": "openid email"}}, True),
    "no sid": ({"sid": ""}, True),
    "authorization details": (
        {
            "scope": "openid wallet:charge",
            "details": [{"type": "tokenpass_wallet", "monthly_limit": 5000}],
        },
        True,
    ),
    "wider scope": ({"form": {"scope": "openid phone"}}, False),
    "revoked: reuse": ({"refresh_state": "revoked"}, False),
    "expired": ({"refresh_state": "expired"}, False),
    "refresh not allowed": ({"grant_types": "authorization-code"}, False),
    "CORS request, origin not allowed": ({"headers": {"Origin": "https://app.example.com"}}, True),
    "CORS request, origin allowed": (
        {"allowed_origins": APP_ORIGIN, "headers": {"Origin": APP_ORIGIN}},
        True,
    ),
    "CORS request, another origin": (
        {"allowed_origins": APP_ORIGIN, "headers": {"Origin": "https://evil.example"}},
        True,
    ),
    "CORS request, plain http origin allowed": (
        {
            "allowed_origins": "http://app.example.com",
            "headers": {"Origin": "http://app.example.com"},
        },
        True,
    ),
    "no refresh token": ({"form": {"refresh_token": ""}}, False),
    "unknown refresh token": ({"form": {"refresh_token": "x" * 43}}, False),
    "repeated refresh_token parameter": (
        {"form": {"refresh_token": ["a" * 43, "b" * 43]}},
        False,
    ),
    "public client": ({"client_type": PUBLIC, "auth": "client_id"}, True),
    "public client, narrower scope": (
        {"client_type": PUBLIC, "auth": "client_id", "form": {"scope": "openid"}},
        True,
    ),
    "public client, another app's token": (
        {"client_type": PUBLIC, "auth": "another app's client_id"},
        False,
    ),
    "public client with a secret": (
        {"client_type": PUBLIC, "auth": "client_id", "form": {"client_secret": "x"}},
        False,
    ),
    "public client with Basic credentials": ({"client_type": PUBLIC}, False),
    "public client, CORS request": (
        {
            "client_type": PUBLIC,
            "auth": "client_id",
            "allowed_origins": APP_ORIGIN,
            "headers": {"Origin": APP_ORIGIN},
        },
        True,
    ),
    "public client, revoked: reuse": (
        {"client_type": PUBLIC, "auth": "client_id", "refresh_state": "revoked"},
        False,
    ),
    "confidential client without its secret": ({"auth": "client_id"}, False),
    "no client at all": ({"auth": "none"}, False),
}


@pytest.mark.parametrize("case", list(REFRESH_CASES))
def test_refresh_answers_match(case, signed_in_chain, monkeypatch):
    overrides, expect_fast = REFRESH_CASES[case]
    answer, fast = both_paths(lambda: signed_in_chain(**overrides), monkeypatch)
    assert fast is expect_fast, answer
    if expect_fast:
        assert answer["status"] == 200
        assert answer["rows"]["live refresh tokens"] == 1
        assert answer["rows"]["revoked refresh tokens"] == 1
        assert answer["rows"]["consent used"]
        # A browser app may read the answer only from an https origin it registered.
        origin = overrides.get("headers", {}).get("Origin")
        readable = origin == APP_ORIGIN and overrides.get("allowed_origins") == APP_ORIGIN
        assert answer["headers"]["Access-Control-Allow-Origin"] == (origin if readable else None)


def test_a_plain_http_origin_never_reads_the_answer(signed_in_chain, monkeypatch, settings):
    """Even where http origins may be registered (development), oauthlib sends no CORS
    header to one, and neither does the fast path."""
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "ALLOWED_SCHEMES": ["https", "http"]}
    origin = "http://app.example.com"
    answer, fast = both_paths(
        lambda: signed_in_chain(allowed_origins=origin, headers={"Origin": origin}), monkeypatch
    )
    assert fast and answer["status"] == 200
    assert answer["headers"]["Access-Control-Allow-Origin"] is None


def test_a_rate_limited_public_client_is_refused_on_both_paths(
    signed_in_chain, monkeypatch, settings
):
    """Failures counted for a client_id and address refuse its public refreshes too (DOT's
    authenticate_client_id checks the limit; the fast path passes the request on to it)."""
    settings.OAUTH_CLIENT_AUTH_FAILURE_LIMIT = 2

    def build():
        setup = signed_in_chain(client_type=Application.CLIENT_PUBLIC, auth="client_id")
        for _ in range(2):
            ratelimit.client_auth_failure_record(client_id=setup.app.client_id, ip="127.0.0.1")
        return setup

    answer, fast = both_paths(build, monkeypatch)
    assert not fast
    assert (answer["status"], answer["error"]) == (429, "invalid_client")
    assert answer["rows"]["live refresh tokens"] == 1


def test_refreshed_id_token_carries_the_sign_in(signed_in_chain, monkeypatch):
    answer, fast = both_paths(lambda: signed_in_chain(), monkeypatch)
    assert fast
    header, claims = answer["id_token"]
    assert header == {"alg": "RS256", "typ": "JWT"}
    assert claims["auth_time"] == 1_700_000_000 and claims["sid"] == "session-1"
    assert claims["sub"] == "<person>" and claims["aud"] == "<client>"
    assert claims["email"] == "grace@example.com" and claims["name"] == "Grace Hopper"
    assert claims["at_hash"] == "matches" and claims["jti"] == "uuid"


def test_refresh_of_another_apps_token_is_refused_on_both_paths(
    signed_in_chain, make_app, monkeypatch
):
    def build():
        setup = signed_in_chain()
        other, other_secret = make_app("Other", allowed_grant_types="refresh_token")
        setup.headers["Authorization"] = basic(other.client_id, other_secret)
        return setup

    answer, fast = both_paths(build, monkeypatch)
    assert not fast and answer["status"] == 400 and answer["error"] == "invalid_grant"


@pytest.mark.django_db(transaction=True)
def test_concurrent_rotations_of_one_token_give_one_winner_and_revoke_the_family(
    signed_in_chain,
):
    """Two requests present one refresh token at once (real threads, PostgreSQL): one gets
    new tokens; the other finds it rotated, is answered as a reuse, and the family dies."""
    setup = signed_in_chain()
    barrier = threading.Barrier(2)
    answers = []

    def present() -> None:
        try:
            barrier.wait(timeout=10)
            answers.append(
                Client().post(
                    "/o/token/",
                    setup.form,
                    HTTP_AUTHORIZATION=setup.headers["Authorization"],
                )
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=present) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 400], [a.content for a in answers]
    refused = [a for a in answers if a.status_code == 400]
    assert all(a.json()["error"] == "invalid_grant" for a in refused)
    assert not RefreshToken.objects.filter(application=setup.app, revoked__isnull=True).exists()
    assert AuditEvent.objects.filter(user=setup.user, action=AuditEvent.Action.TOKEN_REUSE).exists()


@pytest.mark.parametrize("case", ["openid profile email", "without openid: no ID token"])
def test_refresh_writes_one_statement_at_a_time_give_the_same_rows(
    case, signed_in_chain, monkeypatch
):
    """The writes as databases without data-modifying WITH queries run them (the SQLite of
    the demo), here on PostgreSQL: the same answer and rows as DOT's path."""
    from partners.oauth import services

    def stepwise(**kwargs):
        return services._refresh_token_rotate_stepwise(**kwargs)

    monkeypatch.setattr(grants, "refresh_token_rotate", stepwise)
    overrides, _ = REFRESH_CASES[case]
    answer, fast = both_paths(lambda: signed_in_chain(**overrides), monkeypatch)
    assert fast and answer["status"] == 200


@pytest.mark.parametrize("fast_path", [True, False])
def test_secrets_in_the_form_are_kept_out_of_error_reports(
    fast_path, signed_in_chain, monkeypatch, settings
):
    """Should a grant fail with a server error, Django's error report leaves out the client
    secret and the refresh token (and the Authorization header), on either path."""
    from django.views.debug import SafeExceptionReporterFilter

    settings.OAUTH_FAST_TOKEN_GRANTS = fast_path
    setup = signed_in_chain()
    setup.form["client_secret"] = "secret-in-the-body"
    reported = {}

    def fail(*args, **kwargs):
        raise RuntimeError("the database went away")

    def report(request, *args, **kwargs):
        reporter = SafeExceptionReporterFilter()
        reported["post"] = reporter.get_post_parameters(request)
        reported["meta"] = reporter.get_safe_request_meta(request)
        return fail()

    if fast_path:
        monkeypatch.setattr(grants, "token_response", report)
    else:
        from partners.oauth.views import TokenView

        monkeypatch.setattr(
            TokenView, "create_token_response", lambda self, request: report(request)
        )
    client = Client(raise_request_exception=False)
    response = client.post(
        "/o/token/", setup.form, HTTP_AUTHORIZATION=setup.headers["Authorization"]
    )
    assert response.status_code == 500
    post, meta = reported["post"], reported["meta"]
    assert post["refresh_token"] == post["client_secret"] == "********************"
    assert post["grant_type"] == "refresh_token"
    assert setup.headers["Authorization"] not in str(meta)
