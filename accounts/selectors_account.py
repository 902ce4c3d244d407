"""Reads behind the account pages."""

from datetime import timedelta
from zoneinfo import available_timezones

from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import AuditEvent, User, UserSession


def user_session_list(*, user: User) -> QuerySet[UserSession]:
    """The user's signed-in sessions, most recently active first."""
    return UserSession.objects.filter(user=user).order_by("-last_seen_at", "-pk")


def audit_event_list_for_user(*, user: User) -> QuerySet[AuditEvent]:
    """The security events about `user` (and only them), newest first."""
    return AuditEvent.objects.filter(user=user).order_by("-created_at", "-pk")


def user_time_zone(*, user: User) -> str:
    """The user's time zone name, or UTC if what is stored is not a zone this system knows
    (the pages render times in it and must not fail on a bad value)."""
    return user.time_zone if user.time_zone in available_timezones() else "UTC"


# Re-entering the password (to change it, or to turn two-factor off) is a password check
# like sign-in, so a stolen session must not be able to guess it without limit.
REAUTH_FAILURE_LIMIT = 5
REAUTH_FAILURE_WINDOW = timedelta(minutes=15)


def reauth_blocked(*, user: User) -> bool:
    """True while the user has REAUTH_FAILURE_LIMIT wrong current passwords within the
    window. Counted from the audit log, so it holds across processes."""
    recent = AuditEvent.objects.filter(
        user=user,
        action=AuditEvent.Action.LOGIN_FAILURE,
        data__reauth=True,
        created_at__gte=timezone.now() - REAUTH_FAILURE_WINDOW,
    )
    return recent.count() >= REAUTH_FAILURE_LIMIT
