"""OpenID Connect Back-Channel Logout 1.0: when a person's Tokenpass session ends, tell the
server of every app they are signed in to, so that it ends their session there too.

Which apps: an app is "signed in" for a person when it has a back-channel logout URI and
- holds, for that person, an access token or an ID token that has not expired, or a refresh
  token that has not been revoked; or
- had its refresh token for the person revoked within the last minute (DOT's RP-initiated
  logout revokes all of the person's tokens just before it ends the session); or
- obtained tokens for the person (its consent's last_used_at) since the ending session signed
  in.
The notice names the person (`sub`) and, when one Tokenpass session ends (the person signs
out, or an app's RP-initiated logout), that session's id (`sid`), which is also in every ID
token issued through that session: the app ends only its sessions that came from it, and a
person signed in on a phone and a laptop stays signed in on the other device. When every
session ends (sign out everywhere, staff), the token has no `sid` and the app ends every
session it has for the person, as the specification asks. We do not revoke the apps' refresh tokens ourselves: an app that keeps offline access
keeps it (OpenID Connect Back-Channel Logout 1.0 §2.7).

Flow: the user_logged_out signal (our logout view and DOT's RP-initiated logout both call
django.contrib.auth.logout) calls backchannel_logout_start, which writes one delivery row per
app and, once that commits, queues partners.tasks.backchannel_logout_deliver for each. The task
calls backchannel_logout_attempt, which signs a fresh logout token and POSTs it; 200 or 204 is
success, a 5xx, 408, 429 or a network error is retried with exponential backoff, any other
answer (the app rejected the token) fails the delivery at once.

Settings (all optional): BACKCHANNEL_LOGOUT_TOKEN_SECONDS (120), BACKCHANNEL_LOGOUT_TIMEOUT_SECONDS
(5), BACKCHANNEL_LOGOUT_MAX_ATTEMPTS (6), BACKCHANNEL_LOGOUT_RETRY_BASE_SECONDS (10),
BACKCHANNEL_LOGOUT_ALLOW_HTTP (False: only https URIs are called, except loopback when DEBUG).
Pending deliveries whose task was lost are queued again by the beat task
partners.backchannel_logout_requeue_stale.
"""

from __future__ import annotations

import functools
import logging
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from jwcrypto import jwt
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_id_token_model,
    get_refresh_token_model,
)

from accounts.login_flow import AUTH_TIME_SESSION_KEY, OIDC_SID_SESSION_KEY
from accounts.models import User
from partners.delivery import AttemptOutcome, delivery_attempt_record
from partners.models import Consent
from partners.models_logout import BackchannelLogoutAttempt, BackchannelLogoutDelivery
from partners.oauth import keys
from partners.oauth.tokens import issuer
from partners.webhooks.targets import webhook_url_validate

logger = logging.getLogger(__name__)

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPE = "logout+jwt"
# Answers that say "try again later"; anything else that is not a success is final.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Refresh tokens revoked this recently were revoked by the sign-out that is now ending.
JUST_REVOKED = timedelta(minutes=1)


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def token_lifetime_seconds() -> int:
    return int(_setting("BACKCHANNEL_LOGOUT_TOKEN_SECONDS", 120))


def max_attempts() -> int:
    return int(_setting("BACKCHANNEL_LOGOUT_MAX_ATTEMPTS", 6))


def retry_delay_seconds(*, retries_done: int) -> float:
    """Exponential backoff with jitter: base, 2 x base, 4 x base ... capped at an hour."""
    base = float(_setting("BACKCHANNEL_LOGOUT_RETRY_BASE_SECONDS", 10))
    delay = min(base * (2**retries_done), 3600.0)
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 (spreading retries, not a secret)


def logout_uri_refusal(uri: str, *, resolve: bool = True) -> str:
    """Why we will not call this URI, or "" if we will. https only, unless
    BACKCHANNEL_LOGOUT_ALLOW_HTTP (or DEBUG, for loopback) allows http: the specification allows
    http for confidential clients, but the token proves a sign-out to whoever reads it. The URI
    is chosen by a partner, so the webhook rules against request forgery apply too (never this
    server, never a private or local address unless WEBHOOKS_ALLOW_PRIVATE_TARGETS); names are
    resolved again before every attempt (`resolve=False` skips the lookup, for the sign-out
    request itself, which must not wait on DNS)."""
    parts = urlsplit(uri)
    if parts.scheme != "https":
        loopback_in_debug = settings.DEBUG and parts.hostname in {"127.0.0.1", "localhost", "::1"}
        if parts.scheme != "http" or not (
            _setting("BACKCHANNEL_LOGOUT_ALLOW_HTTP", False) or loopback_in_debug
        ):
            return "refused: the URI is not https"
    try:
        webhook_url_validate(uri, resolve=resolve)
    except ValidationError as exc:
        return f"refused: {' '.join(exc.messages)}"[:500]
    return ""


def backchannel_logout_apps(*, user: User, session_started_at: datetime | None = None) -> list[Any]:
    """The apps to notify when this person signs out: apps with a back-channel logout URI that
    hold a live token for the person (see the module docstring), whose refresh token for the
    person was revoked in the last minute (RP-initiated logout revokes them just before it
    ends the session), or whose consent was used (tokens issued) since `session_started_at`."""
    now = timezone.now()
    app_ids: set[int] = set()
    app_ids.update(
        get_access_token_model()
        .objects.filter(user=user, expires__gt=now)
        .values_list("application_id", flat=True)
    )
    app_ids.update(
        get_refresh_token_model()
        .objects.filter(user=user)
        .filter(Q(revoked__isnull=True) | Q(revoked__gte=now - JUST_REVOKED))
        .values_list("application_id", flat=True)
    )
    app_ids.update(
        get_id_token_model()
        .objects.filter(user=user, expires__gt=now)
        .values_list("application_id", flat=True)
    )
    if session_started_at is not None:
        app_ids.update(
            Consent.objects.filter(user=user, last_used_at__gte=session_started_at).values_list(
                "application_id", flat=True
            )
        )
    app_ids.discard(None)  # type: ignore[arg-type]
    return list(
        get_application_model()
        .objects.filter(pk__in=app_ids)
        .exclude(backchannel_logout_uri="")
        .order_by("pk")
    )


def session_sid_of(request: HttpRequest | None) -> str:
    """The OpenID session id of the session that is ending, if it has one."""
    if request is None or not hasattr(request, "session"):
        return ""
    value = request.session.get(OIDC_SID_SESSION_KEY)
    return value if isinstance(value, str) else ""


def session_started_at(request: HttpRequest | None, user: User) -> datetime | None:
    """When the session that is ending signed in (the OIDC auth_time the login flow keeps)."""
    value = None
    if request is not None and hasattr(request, "session"):
        value = request.session.get(AUTH_TIME_SESSION_KEY)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    return user.last_login


def backchannel_logout_start(
    *, user: User, session_started_at: datetime | None = None, sid: str = ""
) -> list[BackchannelLogoutDelivery]:
    """Record one delivery per signed-in app and queue them once the transaction commits.
    Returns the deliveries (possibly none). Apps whose URI we refuse to call are recorded as
    failed, so that staff see why they were not told."""
    with transaction.atomic():
        return _deliveries_queue(
            [
                _delivery_create(
                    application=app,
                    user_id=user.pk,
                    subject=user.public_id,
                    sid=sid,
                    uri=app.backchannel_logout_uri,
                )
                for app in backchannel_logout_apps(user=user, session_started_at=session_started_at)
            ]
        )


def _delivery_create(
    *, application: Any, user_id: int | None, subject: str, sid: str, uri: str
) -> BackchannelLogoutDelivery:
    """A new notice (fresh jti) to `uri`; recorded as failed at once if we refuse the URI, so
    that staff see why the app was not told."""
    refusal = logout_uri_refusal(uri, resolve=False)
    return BackchannelLogoutDelivery.objects.create(
        application=application,
        user_id=user_id,
        subject=subject,
        sid=sid,
        jti=uuid.uuid4().hex,
        logout_uri=uri,
        status=(
            BackchannelLogoutDelivery.Status.FAILED
            if refusal
            else BackchannelLogoutDelivery.Status.PENDING
        ),
        last_error=refusal,
    )


def _deliveries_queue(
    deliveries: list[BackchannelLogoutDelivery],
) -> list[BackchannelLogoutDelivery]:
    """Queue the pending ones once the surrounding transaction commits."""
    from partners.tasks import backchannel_logout_deliver

    for delivery in deliveries:
        if delivery.status == BackchannelLogoutDelivery.Status.PENDING:
            transaction.on_commit(
                functools.partial(backchannel_logout_deliver.delay, delivery.pk), robust=True
            )
    return deliveries


def backchannel_logout_resend(*, delivery_ids: list[int]) -> list[BackchannelLogoutDelivery]:
    """Staff: send failed notices again, as new deliveries (new jti, a fresh set of attempts)
    to each app's current back-channel logout URI, so that a partner who fixed its endpoint
    or its URI gets them. Deliveries that are not failed, or whose app no longer has a URI,
    are skipped. Returns the new deliveries."""
    with transaction.atomic():
        created = []
        failed = (
            BackchannelLogoutDelivery.objects.select_related("application")
            .filter(pk__in=delivery_ids, status=BackchannelLogoutDelivery.Status.FAILED)
            .order_by("pk")
        )
        for old in failed:
            uri = old.application.backchannel_logout_uri
            if not uri:
                continue
            created.append(
                _delivery_create(
                    application=old.application,
                    user_id=old.user_id,
                    subject=old.subject,
                    sid=old.sid,
                    uri=uri,
                )
            )
        return _deliveries_queue(created)


def logout_token_build(
    *, delivery: BackchannelLogoutDelivery, client_id: str, now: int | None = None
) -> str:
    """A signed logout token (RS256, typ logout+jwt) for this delivery. No nonce, as the
    specification requires; `sid` when one session ended (see the module docstring)."""
    now = int(time.time()) if now is None else now
    key = keys.signing_jwk()
    claims = {
        "iss": issuer(),
        "aud": client_id,
        "iat": now,
        "exp": now + token_lifetime_seconds(),
        "jti": delivery.jti,
        "sub": delivery.subject,
        "events": {LOGOUT_EVENT: {}},
    }
    if delivery.sid:
        claims["sid"] = delivery.sid
    token = jwt.JWT(
        header={"alg": "RS256", "typ": LOGOUT_TOKEN_TYPE, "kid": key["kid"]}, claims=claims
    )
    token.make_signed_token(key)
    return token.serialize()


def _post(uri: str, token: str) -> tuple[int | None, str]:
    """POST the token; (HTTP status, error text). Redirects are not followed: the token goes
    only to the registered URI."""
    timeout = float(_setting("BACKCHANNEL_LOGOUT_TIMEOUT_SECONDS", 5))
    try:
        response = requests.post(
            uri,
            data={"logout_token": token},
            timeout=(timeout, timeout),
            allow_redirects=False,
            headers={"Cache-Control": "no-store"},
        )
    except requests.RequestException as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    error = "" if response.status_code in (200, 204) else response.text[:500]
    return response.status_code, error


def backchannel_logout_attempt(*, delivery_id: int) -> tuple[AttemptOutcome, int]:
    """Try once to deliver; returns the outcome and the attempts made so far. Records the
    attempt and the delivery's new state in one transaction after the POST (no lock is held
    across the network call). After BACKCHANNEL_LOGOUT_MAX_ATTEMPTS attempts a retryable
    failure fails the delivery.

    Two concurrent attempts (a task delivered twice) may both POST; the app sees the same jti
    twice, which the specification lets it ignore."""
    delivery = (
        BackchannelLogoutDelivery.objects.select_related("application")
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None or delivery.status != BackchannelLogoutDelivery.Status.PENDING:
        return AttemptOutcome.DONE, delivery.attempts if delivery else 0
    final = delivery.attempts + 1 >= max_attempts()
    started = timezone.now()
    clock = time.monotonic()
    refusal = logout_uri_refusal(delivery.logout_uri)
    if refusal:
        status_code, error = None, refusal
    else:
        token = logout_token_build(delivery=delivery, client_id=delivery.application.client_id)
        status_code, error = _post(delivery.logout_uri, token)
    duration_ms = int((time.monotonic() - clock) * 1000)
    succeeded = status_code in (200, 204)
    if succeeded:
        outcome = AttemptOutcome.DELIVERED
    elif refusal or final or (status_code is not None and status_code not in RETRYABLE_STATUS):
        outcome = AttemptOutcome.FAILED
    else:
        outcome = AttemptOutcome.RETRY

    number = delivery_attempt_record(
        delivery_model=BackchannelLogoutDelivery,
        attempt_model=BackchannelLogoutAttempt,
        delivery_id=delivery_id,
        started_at=started,
        duration_ms=duration_ms,
        status_code=status_code,
        error=error,
        outcome=outcome,
    )
    if outcome != AttemptOutcome.DELIVERED:
        logger.warning(
            "back-channel logout to %s (delivery %s, attempt %s): %s %s",
            delivery.logout_uri,
            delivery_id,
            number,
            status_code,
            error[:200],
        )
    return outcome, number


def backchannel_logout_requeue_stale(*, older_than: timedelta, limit: int = 500) -> int:
    """Queue again the pending deliveries that nothing has touched for `older_than` (their
    task was lost: the broker was down when the sign-out committed, or a worker died). Longer
    than the longest backoff, so that a retry still waiting is not doubled. Returns how many."""
    from partners.tasks import backchannel_logout_deliver

    cutoff = timezone.now() - older_than
    stale = list(
        BackchannelLogoutDelivery.objects.filter(
            status=BackchannelLogoutDelivery.Status.PENDING, updated_at__lt=cutoff
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    for pk in stale:
        # Touch first, so that the next sweep does not queue it again while it waits.
        BackchannelLogoutDelivery.objects.filter(pk=pk).update(updated_at=timezone.now())
        backchannel_logout_deliver.delay(pk)
    return len(stale)


def on_user_logged_out(
    sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any
) -> None:
    """user_logged_out receiver. A sign-out must never fail because a partner cannot be told,
    so errors here are logged, not raised."""
    if user is None or not getattr(user, "pk", None):
        return
    try:
        backchannel_logout_start(
            user=user,
            session_started_at=session_started_at(request, user),
            sid=session_sid_of(request),
        )
    except Exception:
        logger.exception("could not queue back-channel logout for user %s", user.pk)


def on_user_session_ended(
    sender: Any, user: User, sid: str, started_at: datetime | None, **kwargs: Any
) -> None:
    """accounts.signals.user_session_ended receiver: the apps are told that this session
    (its sid) ended, in the transaction that ended it."""
    backchannel_logout_start(user=user, session_started_at=started_at, sid=sid)


def on_user_signed_out_everywhere(sender: Any, user: User, **kwargs: Any) -> None:
    """accounts.signals.user_signed_out_everywhere receiver: every app the person is signed
    in to is told, in the transaction that ended the sessions."""
    backchannel_logout_start(user=user)
