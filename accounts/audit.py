"""The security audit log: one insert per event, written in the caller's transaction."""

from typing import Any

from django.http import HttpRequest

from accounts.models import AuditEvent, User


def client_ip(request: HttpRequest | None) -> str | None:
    """The client address as Django sees it (the reverse proxy sets REMOTE_ADDR correctly)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_event_record(
    *,
    action: str,
    user: User | None = None,
    request: HttpRequest | None = None,
    actor: User | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Insert one audit row. Call it inside the transaction of the change it records."""
    user_agent = request.META.get("HTTP_USER_AGENT", "")[:512] if request is not None else ""
    return AuditEvent.objects.create(
        action=action,
        user=user if user is not None and user.pk else None,
        actor=actor,
        ip_address=client_ip(request),
        user_agent=user_agent,
        data=data or {},
    )
