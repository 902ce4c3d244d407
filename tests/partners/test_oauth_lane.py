"""The token lane (partners/oauth/lane.py): ordinary token grants answered in front of
Django's request handling, with what Django would have done around them, and every other
request handed to Django whole.

tests/partners/test_oauth_fast_grants.py plays each of its grant cases through the lane too;
these tests cover what the lane adds: headers, hosts, HTTPS, form parsing, signals, server
errors, and gunicorn serving config.wsgi."""

import base64
import io
import json
import logging
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.http import UnreadablePostError
from django.test import override_settings
from django.views.debug import SafeExceptionReporterFilter

from partners.oauth import grants
from partners.oauth.lane import TokenLane
from partners.oauth.tokens import client_credentials_claims
from tests import gunicorn_server
from tests.partners import wsgi_client
from tests.partners.wsgi_client import LaneClient

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
# What production sets (config/settings/production.py), for the header comparisons.
PRODUCTION_SECURITY = {
    "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
    "SECURE_SSL_REDIRECT": True,
    "SECURE_HSTS_SECONDS": 31536000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_HSTS_PRELOAD": True,
    "X_FRAME_OPTIONS": "DENY",
}
HTTPS = {"X-Forwarded-Proto": "https"}


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.fixture
def server(make_app):
    """A partner server's app and the headers of its client credentials requests."""
    app, secret = make_app(
        "Partner server",
        allowed_grant_types="client-credentials",
        allowed_scopes="settlement:read",
    )
    return app, {"Authorization": basic(app.client_id, secret)}


GRANT = {"grant_type": "client_credentials", "scope": "settlement:read"}
GRANT_BODY = urlencode(GRANT).encode()


def test_gunicorn_serves_the_lane_in_front_of_django():
    from config import wsgi

    assert isinstance(wsgi.application, TokenLane)
    assert wsgi.application.django is wsgi.django_application
    assert wsgi.application.token_path() == "/o/token/"


@pytest.mark.parametrize(
    "security",
    [
        pytest.param({}, id="test settings, plain HTTP"),
        pytest.param(PRODUCTION_SECURITY, id="production security settings, HTTPS"),
    ],
)
def test_the_lane_answers_with_the_headers_django_gives(server, security):
    _app, headers = server
    with override_settings(**security):
        lane = LaneClient()
        answered = lane.post("/o/token/", GRANT, headers={**headers, **HTTPS})
        assert lane.django_bodies == []
        # The same grant through Django's handler (whose token view answers it the same way).
        environ = lane.environ("/o/token/", urlencode(GRANT).encode(), headers={**headers, **HTTPS})
        django_answer = LaneClient()
        django_answer.application = WSGIHandler()  # type: ignore[assignment]
        reference = django_answer.send(environ)
    assert answered.status_code == reference.status_code == 200
    assert client_credentials_claims(json.loads(answered.content)["access_token"]) is not None
    ours, theirs = dict(answered.items()), dict(reference.items())
    assert ours.pop("Content-Length") == str(len(answered.content))
    assert theirs.pop("Content-Length") == str(len(reference.content))
    assert ours == theirs
    if security:
        assert ours["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert ours["Cache-Control"] == "no-store" and ours["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    "case, options, settings_override, status",
    [
        ("wrong secret", {"secret": "wrong"}, {}, 401),
        ("a query string", {"query": "x=1"}, {}, None),
        ("GET", {"method": "GET"}, {}, 405),
        ("another endpoint", {"path": "/o/introspect/"}, {}, None),
        ("a JSON body", {"content_type": "application/json"}, {}, None),
        (
            "a Latin-1 form",
            {"content_type": "application/x-www-form-urlencoded; charset=latin-1"},
            {},
            None,
        ),
        ("a repeated parameter", {"body": urlencode(GRANT) + "&scope=settlement:read"}, {}, None),
        ("an oversized parameter", {"body": urlencode({**GRANT, "scope": "s" * 5000})}, {}, 400),
        ("a NUL byte", {"body": urlencode(GRANT) + "&x=%00"}, {}, 400),
        (
            "a body that is not UTF-8",
            {"body": b"grant_type=client_credentials&scope=\xff"},
            {},
            None,
        ),
        ("no Content-Length", {"content_length": ""}, {}, None),
        ("a short body", {"content_length": "500"}, {}, None),
        ("a host Django refuses", {}, {"ALLOWED_HOSTS": ["tokenpass.example"]}, 400),
        ("plain HTTP where HTTPS is required", {"https": False}, PRODUCTION_SECURITY, 301),
        ("more fields than Django takes", {"body": urlencode(GRANT) + "&" * 1000}, {}, 400),
        ("a body over Django's size limit", {}, {"DATA_UPLOAD_MAX_MEMORY_SIZE": 20}, 400),
        (
            "the token endpoint outside the OAuth endpoints' chain",
            {},
            {"OAUTH_ENDPOINT_PREFIXES": ["/o/introspect/", "/o/revoke_token/"]},
            200,
        ),
        ("the fast grants off", {}, {"OAUTH_FAST_TOKEN_GRANTS": False}, 200),
        (
            "a changed middleware chain",
            {},
            {"OAUTH_ENDPOINT_MIDDLEWARE": ["django.middleware.security.SecurityMiddleware"]},
            200,
        ),
    ],
)
def test_everything_else_is_handed_to_django_whole(
    case, options, settings_override, status, server
):
    app, headers = server
    options = dict(options)
    if "secret" in options:
        headers = {"Authorization": basic(app.client_id, options.pop("secret"))}
    path = options.pop("path", "/o/token/")
    body = options.pop("body", urlencode(GRANT))
    body = body.encode() if isinstance(body, str) else body
    https = options.pop("https", True)
    with override_settings(**settings_override):
        lane = LaneClient()
        environ = lane.environ(
            path, body, headers={**headers, **(HTTPS if https else {})}, **options
        )
        response = lane.send(environ)
    assert lane.django_bodies == [body], case
    if status is not None:
        assert response.status_code == status, response.content
    assert response.status_code < 500


def test_django_gets_a_refused_grant_with_its_body_and_counts_it(server, settings):
    """A wrong secret reaches DOT's path with the body the lane read: it is answered and
    counted there, and the count then refuses the right secret too."""
    app, headers = server
    settings.OAUTH_CLIENT_AUTH_FAILURE_LIMIT = 2
    lane = LaneClient()
    wrong = {"Authorization": basic(app.client_id, "wrong")}
    assert [lane.post("/o/token/", GRANT, headers=wrong).status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]
    refused = lane.post("/o/token/", GRANT, headers=headers)
    assert refused.status_code == 429 and json.loads(refused.content)["error"] == "invalid_client"
    assert len(lane.django_bodies) == 4


def test_a_lane_answer_closes_old_database_connections(server, monkeypatch):
    """What request_started and request_finished do around every request Django handles:
    while only Django's own receivers listen, the lane does their database part directly
    (close a connection that is broken or past CONN_MAX_AGE, before and after)."""
    _app, headers = server
    lane = LaneClient()
    closed = []
    sent = []
    monkeypatch.setattr(signals.request_started, "send", lambda **kwargs: sent.append(kwargs))
    monkeypatch.setattr(signals.request_finished, "send", lambda **kwargs: sent.append(kwargs))
    # The test client's stand-in for close_old_connections (see connections_kept).
    monkeypatch.setattr(wsgi_client, "_kept", lambda opened=None: closed.append(opened) or [])
    assert lane.send(lane.environ("/o/token/", GRANT_BODY, headers=headers)).status_code == 200
    assert lane.django_bodies == []
    # Before and after; at the end the connections found at the start, unless they were not
    # every database's (none here, as the stand-in found none).
    assert closed == [None, None] and sent == []


class _Connections:
    """Stands in for django.db.connections: ``open`` are the connections this thread has,
    ``aliases`` the databases configured."""

    def __init__(self, aliases: list[str], open_: list) -> None:
        self.settings = {alias: {} for alias in aliases}
        self.open = open_
        self.listed = 0

    def all(self, initialized_only: bool = False) -> list:
        assert initialized_only
        self.listed += 1
        return list(self.open)


class _Connection:
    def __init__(self) -> None:
        self.checked = 0

    def close_if_unusable_or_obsolete(self) -> None:
        self.checked += 1


def test_the_lane_checks_connections_before_and_after_listing_them_once(monkeypatch):
    from partners.oauth import lane

    default = _Connection()
    fake = _Connections(["default"], [default])
    monkeypatch.setattr(lane, "connections", fake)
    opened = lane._request_started({})
    lane._request_finished(opened)
    # Every database's connection was open at the start: the same ones are checked at the
    # end, without listing them again.
    assert default.checked == 2 and fake.listed == 1

    # A connection opened during the request (none was at the start) is checked at its end.
    fake.open = []
    opened = lane._request_started({})
    fake.open = [default]
    lane._request_finished(opened)
    assert default.checked == 3 and fake.listed == 3

    # With two databases and one open at the start, the end lists them again.
    other = _Connection()
    fake = _Connections(["default", "other"], [default])
    monkeypatch.setattr(lane, "connections", fake)
    opened = lane._request_started({})
    fake.open = [default, other]
    lane._request_finished(opened)
    assert (default.checked, other.checked, fake.listed) == (5, 1, 2)


def test_a_lane_answer_sends_the_request_signals_to_other_receivers(server):
    """A receiver other than Django's own gets request_started (with the environ) and
    request_finished, as from Django's handler."""
    _app, headers = server
    seen = []

    def started(**kwargs):
        seen.append(("started", "environ" in kwargs))

    def finished(**kwargs):
        seen.append(("finished", None))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        lane = LaneClient()
        assert lane.post("/o/token/", GRANT, headers=headers).status_code == 200
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert lane.django_bodies == []
    assert seen == [("started", True), ("finished", None)]


def test_a_server_error_in_the_lane_is_djangos_500(server, monkeypatch, caplog):
    """An unexpected exception gets Django's handler500, its django.request log record and
    its got_request_exception signal, with the secrets kept out of error reports."""
    _app, headers = server

    def fail(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(grants, "token_answer", fail)
    reported = {}

    def report(sender, request, **kwargs):
        reporter = SafeExceptionReporterFilter()
        reported["post"] = reporter.get_post_parameters(request)
        reported["meta"] = reporter.get_safe_request_meta(request)

    finished = []

    def count(**kwargs):
        finished.append(kwargs)

    signals.got_request_exception.connect(report)
    signals.request_finished.connect(count)
    try:
        with override_settings(**PRODUCTION_SECURITY):
            lane = LaneClient()
            form = {**GRANT, "client_secret": "secret-in-the-body"}
            with caplog.at_level(logging.ERROR, logger="django.request"):
                response = lane.post("/o/token/", form, headers={**headers, **HTTPS})
    finally:
        signals.got_request_exception.disconnect(report)
        signals.request_finished.disconnect(count)
    assert response.status_code == 500
    # The headers the middleware chain gives Django's 500 too.
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Content-Length"] == str(len(response.content))
    assert lane.django_bodies == []
    assert reported["post"]["client_secret"] == "********************"
    assert reported["post"]["grant_type"] == "client_credentials"
    assert headers["Authorization"] not in str(reported["meta"])
    assert any("the database went away" in str(r.exc_info[1]) for r in caplog.records)
    # request_finished once, when the server closed the response (as Django's handler does).
    assert [kwargs["sender"] for kwargs in finished] == [TokenLane]


class _CutOff(io.RawIOBase):
    """A request body whose client went away after a few bytes, as gunicorn reports it (its
    NoMoreData is an OSError)."""

    def __init__(self, head: bytes) -> None:
        super().__init__()
        self.head = head

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.head:
            size = min(len(buffer), len(self.head))
            buffer[:size], self.head = self.head[:size], self.head[size:]
            return size
        raise OSError("the client went away")


def test_a_body_cut_off_midway_is_djangos_unreadable_post(server, caplog):
    """A client that disconnects in the middle of its body gets what Django's handler gives
    it (UnreadablePostError: got_request_exception, the django.request record and a 500),
    not an exception escaping to the server."""
    _app, headers = server
    lane = LaneClient()
    body = urlencode(GRANT).encode()
    environ = lane.environ("/o/token/", body, headers=headers)
    environ["wsgi.input"] = io.BufferedReader(_CutOff(body[:10]))
    raised = []

    def report(sender, request, **kwargs):
        raised.append(sys.exc_info()[1])

    signals.got_request_exception.connect(report)
    try:
        with caplog.at_level(logging.ERROR, logger="django.request"):
            response = lane.send(environ)
    finally:
        signals.got_request_exception.disconnect(report)
    assert response.status_code == 500
    assert [type(error) for error in raised] == [UnreadablePostError]
    assert any(r.name == "django.request" for r in caplog.records)


@pytest.mark.django_db(transaction=True)
def test_gunicorn_answers_through_the_lane_with_productions_headers(make_app, tmp_path):
    """config.wsgi under gunicorn with the production settings: a client credentials grant
    over HTTPS (behind the TLS proxy) is answered by the lane with the headers Django's
    answers carry, plain HTTP is redirected, a wrong secret is refused by DOT's path, and
    the token opens the settlement API."""
    app, secret = make_app(
        "Partner server",
        allowed_grant_types="client-credentials",
        allowed_scopes="settlement:read",
    )
    with gunicorn_server.serve() as served:

        def post(headers: dict[str, str]):
            conn = served.connection()
            conn.request(
                "POST",
                "/o/token/",
                body=urlencode(GRANT),
                headers={
                    "Host": "tokenpass.example",
                    "Content-Type": "application/x-www-form-urlencoded",
                    **headers,
                },
            )
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()

        status, granted_headers, body = post(
            {"Authorization": basic(app.client_id, secret), **HTTPS}
        )
        assert status == 200, body
        token = json.loads(body)["access_token"]
        assert client_credentials_claims(token) is not None
        status, refused_headers, body = post(
            {"Authorization": basic(app.client_id, "wrong"), **HTTPS}
        )
        assert status == 401 and json.loads(body)["error"] == "invalid_client"
        security = (
            "Strict-Transport-Security",
            "X-Content-Type-Options",
            "Referrer-Policy",
            "Cross-Origin-Opener-Policy",
            "X-Frame-Options",
        )
        assert [granted_headers.get(h) for h in security] == [
            refused_headers.get(h) for h in security
        ]
        assert granted_headers["Strict-Transport-Security"].startswith("max-age=31536000")
        status, redirected, _ = post({"Authorization": basic(app.client_id, secret)})
        assert status == 301
        assert redirected["Location"] == "https://tokenpass.example/o/token/"
        conn = served.connection()
        conn.request(
            "GET",
            "/api/settlement/statements/",
            headers={"Host": "tokenpass.example", "Authorization": f"Bearer {token}", **HTTPS},
        )
        assert conn.getresponse().status == 200
