"""The one place where a person who proved who they are becomes signed in.

Every primary sign-in method (password, SMS or email code) ends in complete_primary_login.
If the user has two-factor authentication, the login is parked in the session and finished by
the second-factor view; otherwise the session starts now.
"""

import secrets
import time

from django.conf import settings
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_otp import user_has_device

from accounts.audit import audit_event_record
from accounts.known_devices import known_device_remember
from accounts.models import AuditEvent, User
from accounts.services_account import user_session_forget, user_session_record

PENDING_MFA_SESSION_KEY = "tokenpass_pending_mfa"
AUTH_TIME_SESSION_KEY = "tokenpass_auth_time"
AUTH_METHODS_SESSION_KEY = "tokenpass_amr"
# The OpenID session id (`sid`) of this sign-in: named in the ID tokens that apps receive
# through it and in the back-channel logout tokens sent when it ends.
OIDC_SID_SESSION_KEY = "tokenpass_sid"
BACKEND = "accounts.backends.PhoneOrEmailBackend"


def safe_next_url(request: HttpRequest, candidate: str | None) -> str:
    """`candidate` if it points back at this site, else the default landing page."""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def session_start(request: HttpRequest, *, user: User, methods: list[str]) -> None:
    """Log the user in, rotate the session key, and remember when and how (OIDC auth_time,
    amr)."""
    previous_key = request.session.session_key
    login(request, user, backend=BACKEND)
    # The active-sessions list on the security page mirrors the session store.
    if previous_key and previous_key != request.session.session_key:
        user_session_forget(session_key=previous_key)
    user_session_record(request=request, user=user)
    request.session[AUTH_TIME_SESSION_KEY] = int(time.time())
    request.session[AUTH_METHODS_SESSION_KEY] = methods
    request.session[OIDC_SID_SESSION_KEY] = secrets.token_urlsafe(16)
    audit_event_record(
        action=AuditEvent.Action.LOGIN_SUCCESS, user=user, request=request, data={"amr": methods}
    )


def complete_primary_login(
    request: HttpRequest, *, user: User, method: str, next_url: str | None = None
) -> HttpResponse:
    """Finish a sign-in whose first factor (`method`: "pwd", "sms" or "otp-email") succeeded."""
    target = safe_next_url(request, next_url)
    if user_has_device(user, confirmed=True):
        request.session.cycle_key()
        request.session[PENDING_MFA_SESSION_KEY] = {
            "user_id": user.pk,
            "method": method,
            "next": target,
            "started": int(time.time()),
        }
        return HttpResponseRedirect(reverse("accounts:login_mfa"))
    session_start(request, user=user, methods=[method])
    response = HttpResponseRedirect(target)
    known_device_remember(request, response, user=user)
    return response
