"""Reads behind the account pages."""

from zoneinfo import available_timezones

from django.db.models import QuerySet

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
