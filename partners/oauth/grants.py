"""The token endpoint's two busiest grants, client credentials and refresh token, answered
without oauthlib's and DOT's request machinery.

Partner servers, and the apps and AI terminals that keep a person signed in, ask for these
many times a second. Through DOT and oauthlib a grant spent three to four times the CPU of
the work itself (bench/README.md): building oauthlib's request from Django's, a dozen
validator round trips, the ORM. Here the work is done directly, with the same reads and
writes (partners.oauth.selectors and services), the same tokens (partners.oauth.tokens and
keys) and the same answer.

This path only ever says yes. It answers a request that succeeds in the ordinary way and
hands every other one to DOT's path unchanged, before it has written anything: a failed,
missing or rate-limited client authentication, a public client asking for client credentials
or presenting a secret or an Authorization header, an unexpected or repeated parameter, a
scope outside what the app or the refresh token holds, RFC 8707 resources, a refresh token
that is not live (unknown, revoked, reused, expired), a refresh token another request
rotated first, an app that signs with something other than RS256, a receiver of DOT's
app_authorized signal. So every refusal, rate-limit count, reuse detection and audit row
stays DOT's and ours in partners.oauth.validators, and the tests in
tests/partners/test_oauth_fast_grants.py hold the two paths' answers side by side.
"""

import base64
import binascii
import hashlib
import json
import re
import time
import uuid
from datetime import timedelta
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_id_token_model,
    get_refresh_token_model,
    set_token_value,
)
from oauth2_provider.scopes import get_scopes_backend
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.signals import app_authorized
from oauthlib.oauth2.rfc6749.utils import is_secure_transport

from accounts.oidc import user_claims
from partners.models import Application
from partners.oauth import clientcache, hashers, keys, ratelimit
from partners.oauth.selectors import (
    client_authentication_read,
    refresh_token_live,
    refresh_token_unexpired,
)
from partners.oauth.services import refresh_token_rotate, token_checksum, token_row
from partners.oauth.tokens import access_token_issue, issuer, refresh_token_generate

CLIENT_CREDENTIALS = "client_credentials"
REFRESH_TOKEN = "refresh_token"
# The parameters each grant may carry here; anything else goes to DOT's path.
_PARAMETERS = {
    CLIENT_CREDENTIALS: frozenset({"grant_type", "scope", "client_id", "client_secret"}),
    REFRESH_TOKEN: frozenset(
        {"grant_type", "refresh_token", "scope", "client_id", "client_secret"}
    ),
}
# The grant as the app's allowed grant types name it (DOT's GRANT_TYPE_MAPPING; refresh is a
# grant of its own with us, see TokenpassOAuth2Validator.validate_grant_type).
_APP_GRANT = {
    CLIENT_CREDENTIALS: Application.GRANT_CLIENT_CREDENTIALS,
    REFRESH_TOKEN: REFRESH_TOKEN,
}
# RFC 6749 §3.3: scope tokens separated by single spaces.
_SCOPE = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*")
_HEADERS = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


class Answer(NamedTuple):
    """A token response: its JSON body and its headers beyond Content-Type."""

    body: str
    headers: list[tuple[str, str]]


def token_response(*, request: HttpRequest) -> HttpResponse | None:
    """The token response for a client credentials or refresh token grant that succeeds in
    the ordinary way, or None: the request is for DOT's path, and nothing was written."""
    if request.META.get("QUERY_STRING"):
        return None
    params: dict[str, str] = {}
    for name, values in request.POST.lists():
        if len(values) != 1:
            return None
        params[name] = values[0]
    answer = token_answer(
        params=params,
        authorization=request.META.get("HTTP_AUTHORIZATION"),
        remote_addr=request.META.get("REMOTE_ADDR"),
        origin=request.META.get("HTTP_ORIGIN"),
    )
    if answer is None:
        return None
    response = HttpResponse(answer.body, content_type="application/json")
    for name, value in answer.headers:
        response[name] = value
    return response


def token_answer(
    *,
    params: dict[str, str],
    authorization: str | None,
    remote_addr: str | None,
    origin: str | None,
) -> Answer | None:
    """token_response's work on the request's parts: the form's single-valued parameters
    (a repeated one is for DOT's path), the Authorization and Origin headers and the
    client's address. Also served before Django's request handling (partners.oauth.lane)."""
    if not settings.OAUTH_FAST_TOKEN_GRANTS or (
        app_authorized.receivers and app_authorized.has_listeners()
    ):
        return None
    grant_type = params.get("grant_type", "")
    if grant_type not in _PARAMETERS or not params.keys() <= _PARAMETERS[grant_type]:
        return None
    presented = params.get("refresh_token", "")
    if grant_type == REFRESH_TOKEN and not presented:
        return None
    authenticated = _client_authenticated(
        params,
        authorization=authorization,
        remote_addr=remote_addr,
        refresh_checksum=token_checksum(presented) if presented else None,
        public=grant_type == REFRESH_TOKEN and _public_client_presented(authorization, params),
    )
    if authenticated is None:
        return None
    application, live = authenticated
    if not application.allows_grant_type(_APP_GRANT[grant_type]):
        return None
    if grant_type == CLIENT_CREDENTIALS:
        body = _client_credentials(application, params)
    else:
        body = _refresh(application, live, params)
    if body is None:
        return None
    headers = list(_HEADERS)
    if grant_type == REFRESH_TOKEN and origin is not None and _origin_allowed(application, origin):
        headers.append(("Access-Control-Allow-Origin", origin))
    return Answer(json.dumps(body), headers)


def _origin_allowed(application: Application, origin: str) -> bool:
    """Whether a browser app at ``origin`` may read the refresh grant's answer, as oauthlib
    decides it for DOT's path (the refresh grant's CORS header; the client credentials
    grant sets none): an https origin among the app's allowed origins."""
    return is_secure_transport(origin) and bool(application.origin_allowed(origin))


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    """(client_id, secret) from an HTTP Basic header (RFC 6749 §2.3.1), read as DOT reads
    it; None for anything DOT might read differently."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme != "Basic":
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    # Generated ids and secrets have nothing escaped: unquote_plus would return them as is.
    if "%" in decoded or "+" in decoded:
        return unquote_plus(client_id), unquote_plus(secret)
    return client_id, secret


def _public_client_presented(authorization: str | None, params: dict[str, str]) -> bool:
    """The request names a client without authenticating it (RFC 6749 §3.2.1), as a public
    client does: client_id in the body, no secret and no Authorization header. DOT then
    requires no client authentication, only that the client is not confidential."""
    return authorization is None and "client_secret" not in params and bool(params.get("client_id"))


def _client_authenticated(
    params: dict[str, str],
    *,
    authorization: str | None,
    remote_addr: str | None,
    refresh_checksum: str | None,
    public: bool = False,
) -> tuple[Application, Any] | None:
    """The confidential app whose secret the request presents, or with ``public`` the public
    app it names, if it is usable and not rate limited; None otherwise (DOT's path then
    counts the failure and answers). With a refresh token's checksum, the live refresh token
    with that checksum (or None) is returned beside the app, read in the same query, or on
    its own once a remembered app has authenticated."""
    if public:
        client_id, secret = params["client_id"], ""
    elif authorization is not None:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return None
        client_id, secret = credentials
        # With both, oauthlib would carry the body's client_id on: leave that case to it.
        if params.get("client_id", client_id) != client_id or "client_secret" in params:
            return None
    else:
        client_id, secret = params.get("client_id", ""), params.get("client_secret", "")
    if not client_id or not (secret or public) or "\x00" in client_id:
        return None
    failure_key = ratelimit.failure_key(client_id=client_id, ip=remote_addr)
    # A confidential client asking for tokens again within the interval: the app it
    # authenticated as a moment ago (see clientcache), its secret checked again below.
    remembered = (
        None if public else clientcache.recall(client_id=client_id, failure_key=failure_key)
    )
    application: Application | None
    read_in = clientcache.generation()
    if remembered is not None:
        application, refresh_token = remembered, None
    else:
        read = client_authentication_read(
            client_id=client_id, failure_key=failure_key, refresh_checksum=refresh_checksum
        )
        if ratelimit.failures_block(read.failures):
            return None
        application, refresh_token = read.application, read.refresh_token
    if application is None or application.client_id != client_id:
        return None
    # A remembered app was usable when it was remembered, from the same joined rows it still
    # holds; a change to it, its partner or its review in this process forgets it.
    if remembered is None and not application.is_usable(None):
        return None
    if public:
        if application.client_type != Application.CLIENT_PUBLIC:
            return None
    elif application.client_type != Application.CLIENT_CONFIDENTIAL or not hashers.secret_matches(
        secret, application.client_secret
    ):
        return None
    if remembered is None and not public:
        clientcache.remember(
            client_id=client_id, failure_key=failure_key, application=application, read_in=read_in
        )
    elif remembered is not None and refresh_checksum is not None:
        refresh_token = refresh_token_live(checksum=refresh_checksum, lean=True)
    return application, refresh_token


def _scopes_requested(params: dict[str, str]) -> list[str] | None:
    """The scope parameter as oauthlib splits it; None if it is absent or not well formed."""
    scope = params.get("scope")
    if scope is None or not _SCOPE.fullmatch(scope):
        return None
    return scope.split(" ")


def _client_credentials(application: Application, params: dict[str, str]) -> dict | None:
    backend = get_scopes_backend()
    if "scope" in params:
        scopes = _scopes_requested(params)
        if scopes is None:
            return None
    else:
        scopes = list(backend.get_default_scopes(application=application))
    if not set(scopes) <= set(backend.get_available_scopes(application=application)):
        return None
    expires_in = int(oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS)
    client_id = application.client_id
    # Not stored (partners.oauth.tokens): the grant writes nothing.
    access_token = access_token_issue(
        client_id=client_id,
        subject=client_id,
        audience=[client_id],
        scopes=scopes,
        expires_in=expires_in,
        grant_type=CLIENT_CREDENTIALS,
    )
    return {
        "access_token": access_token,
        "expires_in": expires_in,
        "token_type": "Bearer",
        "scope": " ".join(scopes),
    }


def _at_hash(access_token: str) -> str:
    """OpenID Connect Core §3.1.3.6: the left half of the SHA-256 of the access token."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).decode("ascii").rstrip("=")


class _RotatedConcurrently(Exception):
    """Another request rotated the refresh token between our read and our write."""


def _refresh(application: Application, live: Any, params: dict[str, str]) -> dict | None:
    if (
        live is None
        or live.application_id != application.pk
        or not refresh_token_unexpired(token=live)
        or live.user is None
        or live.resource
        or not live.access_token.scope.strip()
    ):
        return None
    original = live.access_token.scope.strip().split(" ")
    scopes = original
    if "scope" in params:
        requested = _scopes_requested(params)
        if requested is None or not set(requested) <= set(original):
            return None
        scopes = requested
    if "openid" in scopes and application.algorithm != Application.RS256_ALGORITHM:
        return None
    try:
        return _refresh_rotate(application, live, scopes)
    except _RotatedConcurrently:
        # DOT's path finds the token revoked: a reuse, which it answers as one.
        return None


def _refresh_rotate(application: Application, live: Any, scopes: list[str]) -> dict:
    user = live.user
    client_id = application.client_id
    expires_in = int(oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS)
    scope = " ".join(scopes)
    access_token = access_token_issue(
        client_id=client_id,
        subject=user.public_id,
        audience=[client_id],
        scopes=scopes,
        expires_in=expires_in,
    )
    rotated = refresh_token_generate(None)
    body: dict[str, Any] = {
        "access_token": access_token,
        "expires_in": expires_in,
        "token_type": "Bearer",
        "scope": scope,
        "refresh_token": rotated,
    }
    id_token_row = None
    if "openid" in scopes:
        id_token, id_token_row = _id_token(application, live, scopes, access_token)
        body["id_token"] = id_token
    now = timezone.now()
    access_row = token_row(
        get_access_token_model(),
        user_id=user.pk,
        scope=scope,
        expires=now + timedelta(seconds=expires_in),
        application_id=application.pk,
        resource=[],
    )
    set_token_value(access_row, access_token)
    refresh_row = token_row(
        get_refresh_token_model(),
        user_id=user.pk,
        application_id=application.pk,
        token_family=live.token_family,
        resource=[],
    )
    set_token_value(refresh_row, rotated)
    if not refresh_token_rotate(
        previous=live,
        application=application,
        id_token=id_token_row,
        access_token=access_row,
        refresh_token=refresh_row,
        now=now,
    ):
        raise _RotatedConcurrently
    # RFC 9396 §7: the token response carries the authorization details granted.
    if live.tokenpass_authorization_details:
        body["authorization_details"] = live.tokenpass_authorization_details
    return body


def _id_token(
    application: Application, live: Any, scopes: list[str], access_token: str
) -> tuple[str, Any]:
    """The refreshed ID token and its unsaved row, with the claims DOT's path gives it: the
    person's claims for the scopes, auth_time and sid of the sign-in behind the token
    family, at_hash of the new access token."""
    user = live.user
    expires = timezone.now() + timedelta(seconds=oauth2_settings.ID_TOKEN_EXPIRE_SECONDS)
    row_jti = uuid.uuid4()
    jti = str(row_jti)
    if live.tokenpass_auth_time is not None:
        auth_time, sid = int(live.tokenpass_auth_time), live.tokenpass_sid or ""
    else:
        signed_in = user.last_login or timezone.now()
        auth_time, sid = int(signed_in.timestamp()), ""
    claims: dict[str, Any] = {
        "aud": application.client_id,
        "iat": int(time.time()),
        "at_hash": _at_hash(access_token),
        **user_claims(user=user, scopes=scopes),
        "iss": issuer(),
        "exp": int(expires.timestamp()),
        "auth_time": auth_time,
        "jti": jti,
    }
    if sid:
        claims["sid"] = sid
    row = token_row(
        get_id_token_model(),
        user_id=user.pk,
        scope=" ".join(scopes),
        expires=expires,
        jti=row_jti,
        application_id=application.pk,
    )
    return keys.jwt_sign(claims=claims, typ="JWT"), row
