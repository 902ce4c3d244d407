"""The token endpoint's ordinary successes, answered before Django's request handling.

A partner server asks for client credentials, and an app or AI terminal refreshes its
tokens, many times a second. partners.oauth.grants already does those grants' work without
DOT and oauthlib; what was left around it was Django's handling of the request (the request
object, the middleware chain, URL resolution, the view, the response object), which cost
more CPU than the grant itself under gunicorn (bench/README.md). This WSGI application sits
in front of Django's (config/wsgi.py) and answers a POST to the token endpoint itself when
grants.token_answer can: the same function, with the same answer, that the token view calls.

Like grants, it only ever says yes. Anything else goes to Django unchanged, the request body
handed on as it came, before anything was written: another path or method, a query string,
a body that is not a small UTF-8 form or is over Django's DATA_UPLOAD_MAX_* limits, a host
Django would refuse, plain HTTP where Django redirects to HTTPS, a parameter Django's view
would call too long or malformed, a repeated parameter, a body the client stopped sending,
and every request grants.token_answer does not answer (failed or rate-limited client
authentication, unusual parameters, unlive refresh tokens ...). So every error answer,
rate-limit count and audit row stays where it was.

What Django would have done around a success is done here too: ALLOWED_HOSTS, the HTTPS
redirect, the headers of the security and clickjacking middleware (the OAuth endpoints'
chain, OAUTH_ENDPOINT_MIDDLEWARE; the lane stands aside if that chain is changed or no
longer serves the token endpoint), the request_started and request_finished signals that
manage database connections, and an unexpected exception answered by Django's own 500
handling with its logging. The tests in tests/partners/test_oauth_lane.py hold the lane's
answers against Django's.

Only WSGI servers go through it (gunicorn, runserver); ASGI and the test client go to Django,
whose token view gives the same answer.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings
from django.core import signals
from django.core.cache import close_caches
from django.core.handlers.base import reset_urlconf
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.core.signals import setting_changed
from django.db import close_old_connections, connections, reset_queries
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port, validate_host
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import get_script_prefix, reverse

from partners.oauth import grants
from partners.oauth.views import FORM_CONTENT_TYPE, SECRET_TOKEN_PARAMETERS, oversized_among

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

# The chain the lane stands in for: what it does around a success is what these do.
MIRRORED_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.SourceLanguageMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)
# A token request is a few hundred bytes; anything much larger is for Django to judge.
MAX_BODY = 16 * 1024


class _Settings:
    """What the lane reads from settings on every request, read once (and again when a test
    changes a setting): the lane runs on every token request, and a settings read costs a
    lazy-object lookup."""

    def __init__(self) -> None:
        self.enabled = (
            settings.OAUTH_FAST_TOKEN_GRANTS
            and tuple(settings.OAUTH_ENDPOINT_MIDDLEWARE) == MIRRORED_MIDDLEWARE
            and settings.MIDDLEWARE[:1] == ["config.middleware.ApiRouterMiddleware"]
            and not settings.DISALLOWED_USER_AGENTS
            and not settings.PREPEND_WWW
            and bool(settings.ALLOWED_HOSTS)
        )
        # Django's own limits on a form (DATA_UPLOAD_MAX_*): a body over them is Django's to
        # refuse.
        self.max_body = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        self.max_fields = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        # The paths the OAuth endpoints' chain serves (ApiRouterMiddleware): the lane stands
        # in for that chain only.
        self.oauth_prefixes = tuple(settings.OAUTH_ENDPOINT_PREFIXES)
        self.allowed_hosts = list(settings.ALLOWED_HOSTS)
        # Each Host header seen, and whether it is allowed.
        self.hosts: dict[str, bool] = {}
        self.forwarded_host = settings.USE_X_FORWARDED_HOST
        self.proxy_ssl_header = settings.SECURE_PROXY_SSL_HEADER
        self.ssl_redirect = settings.SECURE_SSL_REDIRECT
        self.debug = settings.DEBUG
        self.plain_headers = _middleware_headers(secure=False)
        self.secure_headers = _middleware_headers(secure=True)


def _middleware_headers(*, secure: bool) -> list[tuple[str, str]]:
    """The headers the security and clickjacking middleware add to an answer over HTTPS
    (``secure``) or plain HTTP: asked of the middleware themselves, once."""
    response = HttpResponse()
    del response["Content-Type"]
    request = HttpRequest()
    request.is_secure = lambda: secure  # type: ignore[method-assign]
    for middleware in (SecurityMiddleware, XFrameOptionsMiddleware):
        middleware(lambda request: response).process_response(request, response)
    return list(response.items())


_settings: _Settings | None = None


def _current() -> _Settings:
    global _settings
    if _settings is None:
        _settings = _Settings()
    return _settings


def _forget_settings(**kwargs: Any) -> None:
    global _settings
    _settings = None


setting_changed.connect(_forget_settings, dispatch_uid="partners.oauth.lane")


class _Unreadable(io.RawIOBase):
    """A request body whose reading failed, for Django to read again and fail on alike."""

    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise self.error


class TokenLane:
    """A WSGI application: ordinary token grants answered here, everything else by
    ``django_application``."""

    def __init__(self, django_application: WSGIHandler) -> None:
        self.django = django_application
        self._path: str | None = None

    def token_path(self) -> str:
        """The token endpoint's PATH_INFO, as Django resolves it."""
        if self._path is None:
            url = reverse("oauth2_provider:token")
            self._path = "/" + url[len(get_script_prefix()) :]
        return self._path

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or environ.get("PATH_INFO") != self.token_path()
            or environ.get("QUERY_STRING")
        ):
            return self.django(environ, start_response)
        current = _current()
        if not current.enabled or not environ["PATH_INFO"].startswith(current.oauth_prefixes):
            return self.django(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return self.django(environ, start_response)
        if not 0 < length <= MAX_BODY or (
            current.max_body is not None and length > current.max_body
        ):
            return self.django(environ, start_response)
        try:
            body = environ["wsgi.input"].read(length)
        except OSError as exc:
            # The client went away in the middle of its body: Django's reading of it fails
            # alike (UnreadablePostError, with its 500 and its log record).
            environ["wsgi.input"] = _Unreadable(exc)
            return self.django(environ, start_response)
        # Whoever answers reads the body from here.
        environ["wsgi.input"] = io.BytesIO(body)
        if len(body) != length:
            return self.django(environ, start_response)
        secure = _secure(environ, current)
        if secure is None or not _host_allowed(environ, current):
            return self.django(environ, start_response)
        params = _form(environ, body, current)
        if params is None:
            return self.django(environ, start_response)
        opened = _request_started(environ)
        try:
            answer = grants.token_answer(
                params=params,
                authorization=environ.get("HTTP_AUTHORIZATION"),
                remote_addr=environ.get("REMOTE_ADDR"),
                origin=environ.get("HTTP_ORIGIN"),
            )
        except Exception as exc:
            return self._server_error(environ, start_response, exc, secure=secure)
        _request_finished(opened)
        if answer is None:
            environ["wsgi.input"].seek(0)
            return self.django(environ, start_response)
        data = answer.body.encode()
        headers = [
            ("Content-Type", "application/json"),
            *answer.headers,
            *(current.secure_headers if secure else current.plain_headers),
            ("Content-Length", str(len(data))),
        ]
        start_response("200 OK", headers)
        return [data]

    def _server_error(
        self, environ: Environ, start_response: StartResponse, exc: Exception, *, secure: bool
    ) -> Iterable[bytes]:
        """Django's answer to an unexpected exception: its got_request_exception signal,
        its django.request log record and handler500, with the headers the chain would add
        to it."""
        environ["wsgi.input"].seek(0)
        request = WSGIRequest(environ)
        # As the token view marks its requests: error reports leave these out.
        request.sensitive_post_parameters = SECRET_TOKEN_PARAMETERS  # type: ignore[attr-defined]
        response = response_for_exception(request, exc)
        current = _current()
        for name, value in current.secure_headers if secure else current.plain_headers:
            response.headers.setdefault(name, value)
        if not response.streaming and "Content-Length" not in response:
            response.headers["Content-Length"] = str(len(response.content))
        response._handler_class = self.__class__  # type: ignore[attr-defined]
        response._resource_closers.append(request.close)  # type: ignore[attr-defined]
        status = f"{response.status_code} {response.reason_phrase}"
        start_response(
            status,
            [
                *response.items(),
                *(("Set-Cookie", c.output(header="")) for c in response.cookies.values()),
            ],
        )
        # request_finished is sent when the server closes the response, as Django's is.
        return response


# Django's own receivers of the request signals: reset_queries and close_old_connections when
# a request starts, close_old_connections, close_caches and reset_urlconf when it ends.
_DJANGO_RECEIVERS = frozenset(
    id(receiver) for receiver in (reset_queries, close_old_connections, close_caches, reset_urlconf)
)


def _django_receivers_only(signal: Any) -> bool:
    # Each entry is ((receiver's id, sender's id), receiver, is_async).
    return all(entry[0][0] in _DJANGO_RECEIVERS for entry in signal.receivers)


def _request_started(environ: Environ) -> Sequence[BaseDatabaseWrapper] | None:
    """What request_started does around a request Django handles. While only Django's own
    receivers listen, their work is done directly: the signal's dispatch cost more than the
    rest of the lane (bench/README.md). What remains of it is closing a database connection
    that is broken or past CONN_MAX_AGE (and marking it for a health check); the lane changes
    no urlconf and uses no cache, and queries are only logged (reset_queries) under DEBUG.
    Returns the connections it looked at, for _request_finished, or None."""
    if not _django_receivers_only(signals.request_started):
        signals.request_started.send(sender=TokenLane, environ=environ)
        return None
    opened = _close_old_connections()
    if _current().debug:
        reset_queries()
    return opened


def _request_finished(opened: Sequence[BaseDatabaseWrapper] | None) -> None:
    """request_finished's part, as _request_started does request_started's. ``opened``: the
    connections the request started with. Where the thread had every database's connection
    then, the request cannot have opened another, and they are not listed again: the
    listing's thread-local lookups were 6 % of a client credentials grant's instructions
    outside RSA (bench/README.md)."""
    if not _django_receivers_only(signals.request_finished):
        signals.request_finished.send(sender=TokenLane)
        return
    if opened is not None and len(opened) == len(connections.settings):
        _close_old_connections(opened)
    else:
        _close_old_connections()


def _close_old_connections(
    opened: Sequence[BaseDatabaseWrapper] | None = None,
) -> Sequence[BaseDatabaseWrapper]:
    """django.db.close_old_connections, on ``opened`` or else on every connection this thread
    has open; returns the connections it looked at."""
    if opened is None:
        opened = connections.all(initialized_only=True)
    for connection in opened:
        connection.close_if_unusable_or_obsolete()
    return opened


def _secure(environ: Environ, current: _Settings) -> bool | None:
    """Whether the request came over HTTPS, as HttpRequest.is_secure decides; None if
    Django would redirect it to HTTPS instead."""
    scheme = environ.get("wsgi.url_scheme")
    if current.proxy_ssl_header:
        header, secure_value = current.proxy_ssl_header
        value = environ.get(header)
        if value is not None:
            scheme = "https" if value.split(",", 1)[0].strip() == secure_value else "http"
    if scheme == "https":
        return True
    return None if current.ssl_redirect else False


def _host_allowed(environ: Environ, current: _Settings) -> bool:
    """HttpRequest.get_host's check, without building the request: False where Django
    would answer 400 (or where the host is missing, for Django to judge)."""
    if current.forwarded_host and "HTTP_X_FORWARDED_HOST" in environ:
        host = environ["HTTP_X_FORWARDED_HOST"]
    else:
        host = environ.get("HTTP_HOST")
    if not host:
        return False
    allowed = current.hosts.get(host)
    if allowed is None:
        domain, _port = split_domain_port(host)
        allowed = bool(domain) and validate_host(domain, current.allowed_hosts)
        # Any client can send any Host header: only so many answers are kept.
        if len(current.hosts) < 64:
            current.hosts[host] = allowed
    return allowed


def _form(environ: Environ, body: bytes, current: _Settings) -> dict[str, str] | None:
    """The body's parameters, each once, as Django's form parsing reads them (urllib's
    parse_qsl, blank values kept); None for a body Django should judge: not a UTF-8 form, a
    repeated parameter, or one that the token view calls too long or malformed."""
    content_type, _, options = environ.get("CONTENT_TYPE", "").partition(";")
    if content_type.strip().lower() != FORM_CONTENT_TYPE:
        return None
    if options and options.strip().lower().replace(" ", "") != "charset=utf-8":
        return None
    # parse_qsl's count, empty fields included, as Django's form parsing enforces it.
    if current.max_fields is not None and body.count(b"&") + 1 > current.max_fields:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    params: dict[str, str] = {}
    for field in text.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        # Most names and values have nothing escaped: unquote_plus would return them as is.
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name in params:
            return None
        params[name] = unquote_plus(value) if "%" in value or "+" in value else value
    if oversized_among(params.items(), authorization=environ.get("HTTP_AUTHORIZATION", "")):
        return None
    return params
