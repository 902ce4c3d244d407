"""Browsers a person has signed in from ("known devices"), remembered in a signed cookie.

Sign-in and reset codes are limited per recipient (OTP_SEND_LIMITS_PER_RECIPIENT) so that
nobody can flood a phone with messages. Counted as one budget, that limit would let anyone
who knows a phone number use it up and keep its owner from receiving a code for a day. So the
budget is split: requests from a browser that has signed in to the account before are counted
apart from everyone else's, and a stranger can exhaust only the strangers' share (after the
OWASP "device cookie" defence against lock-out).

The cookie holds the public ids of the last few accounts signed in from the browser, signed
with the secret key; it proves nothing beyond "this browser signed in as them before" and is
only ever used to choose which send budget a request counts against.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse

from accounts.models import User

COOKIE_NAME = "tokenpass_known"
COOKIE_SALT = "tokenpass.known-device"
COOKIE_MAX_AGE = 365 * 24 * 3600
MAX_ACCOUNTS = 5


def known_device_users(request: HttpRequest) -> list[str]:
    """Public ids of the accounts this browser signed in to before (newest last)."""
    try:
        value = request.get_signed_cookie(COOKIE_NAME, salt=COOKIE_SALT, max_age=COOKIE_MAX_AGE)
    except (KeyError, signing.BadSignature):
        return []
    ids = value.split(",") if value else []
    return [public_id for public_id in ids if public_id][-MAX_ACCOUNTS:]


def known_device_remember(request: HttpRequest, response: HttpResponse, *, user: User) -> None:
    """Add `user` to the browser's known accounts (on a response that completes a sign-in)."""
    ids = [i for i in known_device_users(request) if i != user.public_id] + [user.public_id]
    response.set_signed_cookie(
        COOKIE_NAME,
        ",".join(ids[-MAX_ACCOUNTS:]),
        salt=COOKIE_SALT,
        max_age=COOKIE_MAX_AGE,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )
