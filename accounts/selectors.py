"""Reads for the identity flows. Nothing here writes."""

import math
from datetime import datetime
from typing import Any

from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Max
from django.http import HttpRequest

from accounts.models import OneTimeCode, User


def user_get_by_recipient(*, channel: str, recipient: str) -> User | None:
    """The account whose phone number (E.164) or lower-cased email address is `recipient`."""
    if channel == OneTimeCode.Channel.SMS:
        return User.objects.filter(phone=recipient).first()
    return User.objects.filter(email=recipient).first()


def otp_send_retry_after(
    *, recipient: str, ip_address: str | None, now: datetime, known_device: bool = False
) -> int:
    """Seconds until one more code may be sent to `recipient` from `ip_address` (0: now).

    Counts the OneTimeCode rows inside every window of OTP_SEND_LIMITS_PER_RECIPIENT and
    OTP_SEND_LIMITS_PER_IP; the recipient's windows count requests from the owner's known
    devices apart from everyone else's (accounts/known_devices.py). When a window is full, sending becomes possible again once the
    oldest of the `limit` newest rows in it leaves the window. Callers that go on to insert a
    row must hold the send lock (see services.otp_code_issue) so that the count stays true.
    """
    checks: list[tuple[dict[str, Any], list[tuple]]] = [
        (
            {"recipient": recipient, "known_device": known_device},
            settings.OTP_SEND_LIMITS_PER_RECIPIENT,
        )
    ]
    if ip_address:
        checks.append(({"ip_address": ip_address}, settings.OTP_SEND_LIMITS_PER_IP))
    wait = 0.0
    for lookup, limits in checks:
        for period, limit in limits:
            recent = list(
                OneTimeCode.objects.filter(**lookup, created_at__gt=now - period)
                .order_by("-created_at")
                .values_list("created_at", flat=True)[: max(limit, 1)]
            )
            if limit <= 0:
                wait = max(wait, period.total_seconds())
            elif len(recent) >= limit:
                wait = max(wait, (recent[limit - 1] + period - now).total_seconds())
    return math.ceil(wait) if wait > 0 else 0


def login_lockout_retry_at(
    *, request: HttpRequest, username: str | None, ip_address: str | None
) -> datetime | None:
    """When a password login locked out for (`username`, `ip_address`) opens again: the last
    failure plus AXES_COOLOFF_TIME, as django-axes counts it. None if the lock is permanent or
    no failure is recorded."""
    cool_off = get_cool_off(request)
    if cool_off is None:
        return None
    attempts = AccessAttempt.objects.all()
    if username is not None:
        attempts = attempts.filter(username=username)
    if ip_address is not None:
        attempts = attempts.filter(ip_address=ip_address)
    last = attempts.aggregate(last=Max("attempt_time"))["last"]
    if last is None:
        return None
    return last + cool_off
