"""Reads behind the account pages."""

from django.db.models import QuerySet

from accounts.models import AuditEvent, User, UserSession


def user_session_list(*, user: User) -> QuerySet[UserSession]:
    """The user's signed-in sessions, most recently active first."""
    return UserSession.objects.filter(user=user).order_by("-last_seen_at", "-pk")


def audit_event_list_for_user(*, user: User) -> QuerySet[AuditEvent]:
    """The security events about `user` (and only them), newest first."""
    return AuditEvent.objects.filter(user=user).order_by("-created_at", "-pk")
