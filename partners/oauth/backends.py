"""The bridge between Django requests and oauthlib."""

import secrets
import time
from typing import Any

from django.http import HttpRequest
from oauth2_provider.oauth2_backends import OAuthLibCore

from accounts.login_flow import AUTH_TIME_SESSION_KEY, OIDC_SID_SESSION_KEY

# Keys without the HTTP_ prefix cannot come from a client: WSGI prefixes every request
# header with HTTP_. The validator reads the signed-in person from them.
SESSION_USER_KEY = "tokenpass.session_user_id"
SESSION_AUTH_TIME_KEY = "tokenpass.session_auth_time"
SESSION_SID_KEY = "tokenpass.session_sid"


def session_auth_time(request: HttpRequest) -> int:
    """When the person behind this session signed in (OIDC auth_time)."""
    value = request.session.get(AUTH_TIME_SESSION_KEY) if hasattr(request, "session") else None
    if isinstance(value, int | float):
        return int(value)
    last_login = getattr(request.user, "last_login", None)
    if last_login is not None:
        return int(last_login.timestamp())
    return int(time.time())


def session_sid(request: HttpRequest) -> str:
    """The OpenID session id of this sign-in (given to sessions from before there was one)."""
    value = request.session.get(OIDC_SID_SESSION_KEY)
    if not isinstance(value, str) or not value:
        value = secrets.token_urlsafe(16)
        request.session[OIDC_SID_SESSION_KEY] = value
    return value


class TokenpassOAuthLibCore(OAuthLibCore):
    def extract_headers(self, request: HttpRequest) -> dict[str, Any]:
        headers: dict[str, Any] = super().extract_headers(request)
        headers.pop(SESSION_USER_KEY, None)
        headers.pop(SESSION_AUTH_TIME_KEY, None)
        headers.pop(SESSION_SID_KEY, None)
        # A DRF Request authenticates lazily through this very backend when .user is read,
        # so look at the Django request underneath: the browser session, if any.
        django_request = getattr(request, "_request", request)
        user = getattr(django_request, "user", None)
        if user is not None and user.is_authenticated:
            headers[SESSION_USER_KEY] = str(user.pk)
            headers[SESSION_AUTH_TIME_KEY] = str(session_auth_time(django_request))
            if hasattr(django_request, "session"):
                headers[SESSION_SID_KEY] = session_sid(django_request)
        return headers

    def create_token_response(self, request: HttpRequest) -> tuple[Any, Any, Any, Any]:
        uri, headers, body, status = super().create_token_response(request)
        if status >= 400 and "Content-Type" not in headers:
            # An OAuth2Error raised while the tokens are saved (a code or refresh token that
            # a concurrent request used first) reaches DOT without oauthlib's JSON headers.
            headers = {
                **headers,
                "Content-Type": "application/json",
                "Cache-Control": "no-store",
                "Pragma": "no-cache",
            }
        return uri, headers, body, status
