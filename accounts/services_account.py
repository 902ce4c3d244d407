"""Writes behind the account pages and the staff admin: sessions, password change, profile,
and lifting a sign-in lock-out."""

from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import Any

from axes.models import AccessAttempt
from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.sessions.backends.base import SessionBase
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.audit import audit_event_record, client_ip
from accounts.backends import user_by_identifier
from accounts.models import AuditEvent, User, UserSession
from accounts.signals import user_session_ended, user_signed_out_everywhere

# last_seen_at is informational: writing it on every request would turn each page view into
# a database write, so it is refreshed at most this often.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)

PROFILE_FIELDS = ("display_name", "locale", "time_zone")


def _session_store(session_key: str | None = None) -> SessionBase:
    engine = import_module(settings.SESSION_ENGINE)
    store: SessionBase = engine.SessionStore(session_key)
    return store


def user_session_record(*, request: HttpRequest, user: User) -> UserSession:
    """Remember the request's (already authenticated) session for the active-sessions list.

    Saves the session first if it has no key yet, so the row always names a stored session.
    """
    if request.session.session_key is None:
        request.session.save()
    session_key = request.session.session_key
    assert session_key is not None
    now = timezone.now()
    row, _ = UserSession.objects.update_or_create(
        session_key=session_key,
        defaults={
            "user": user,
            "ip_address": client_ip(request),
            "user_agent": request.META.get("HTTP_USER_AGENT", "")[:512],
            "created_at": now,
            "last_seen_at": now,
        },
    )
    return row


def user_session_ensure(*, request: HttpRequest, user: User) -> None:
    """Record the current session if it has no row yet (a session started before the list
    existed, or by a sign-in path that does not go through login_flow.session_start)."""
    key = request.session.session_key
    if key is None or not UserSession.objects.filter(session_key=key).exists():
        user_session_record(request=request, user=user)


def user_session_forget(*, session_key: str) -> None:
    """Drop the row of a session that has ended (sign-out); the session itself is gone."""
    UserSession.objects.filter(session_key=session_key).delete()


def user_session_touch(*, session_key: str) -> int:
    """Move last_seen_at forward if it is older than LAST_SEEN_RESOLUTION. One UPDATE, no read."""
    now = timezone.now()
    return UserSession.objects.filter(
        session_key=session_key, last_seen_at__lt=now - LAST_SEEN_RESOLUTION
    ).update(last_seen_at=now)


def _sessions_end(*, sessions: list[UserSession], user: User, announce: bool = True) -> int:
    """Delete the sessions from the store. With `announce`, user_session_ended is sent for
    each, so that the apps signed in through it are told (back-channel logout with its sid)."""
    from accounts.login_flow import AUTH_TIME_SESSION_KEY, OIDC_SID_SESSION_KEY  # imports us

    for row in sessions:
        store = _session_store(row.session_key)
        data = store.load() if announce else {}
        store.delete()
        if announce:
            signed_in = data.get(AUTH_TIME_SESSION_KEY)
            user_session_ended.send(
                sender=User,
                user=user,
                sid=data.get(OIDC_SID_SESSION_KEY) or "",
                started_at=(
                    datetime.fromtimestamp(signed_in, tz=UTC)
                    if isinstance(signed_in, int | float)
                    else row.created_at
                ),
            )
    UserSession.objects.filter(pk__in=[row.pk for row in sessions]).delete()
    return len(sessions)


def user_sessions_end_others(
    *, user: User, keep_session_key: str | None, request: HttpRequest | None = None
) -> int:
    """End every session of `user` except `keep_session_key`: the Django session is deleted
    from the session store, so the browser holding it is signed out at its next request.
    Writes SESSIONS_REVOKED. Returns how many sessions ended."""
    with transaction.atomic():
        others = list(
            UserSession.objects.select_for_update()
            .filter(user=user)
            .exclude(session_key=keep_session_key or "")
            .order_by("pk")
        )
        ended = _sessions_end(sessions=others, user=user)
        audit_event_record(
            action=AuditEvent.Action.SESSIONS_REVOKED,
            user=user,
            request=request,
            data={"ended": ended},
        )
    return ended


def user_sessions_prune(*, user: User) -> int:
    """Drop rows whose session no longer signs this user in (expired, flushed, or invalidated
    by a password change elsewhere). Returns how many were dropped."""
    stale: list[int] = []
    expected_hash = user.get_session_auth_hash()
    for row in UserSession.objects.filter(user=user).order_by("pk"):
        store = _session_store(row.session_key)
        data = store.load()
        if str(data.get("_auth_user_id")) != str(user.pk) or (
            data.get("_auth_user_hash") != expected_hash
        ):
            stale.append(row.pk)
    if stale:
        UserSession.objects.filter(pk__in=stale).delete()
    return len(stale)


def user_password_change(*, request: HttpRequest, user: User, new_password: str) -> int:
    """Set a new password. The current session stays signed in (its auth hash is updated);
    every other session of the user ends. Writes PASSWORD_CHANGE. Returns how many other
    sessions ended."""
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        others = list(
            UserSession.objects.select_for_update()
            .filter(user=user)
            .exclude(session_key=request.session.session_key or "")
            .order_by("pk")
        )
        ended = _sessions_end(sessions=others, user=user)
        audit_event_record(
            action=AuditEvent.Action.PASSWORD_CHANGE,
            user=user,
            request=request,
            data={"sessions_ended": ended},
        )
    update_session_auth_hash(request, user)
    return ended


def user_profile_update(
    *, request: HttpRequest | None, user: User, display_name: str, locale: str, time_zone: str
) -> list[str]:
    """Update the profile fields people edit themselves. Writes PROFILE_CHANGE naming the
    changed fields (not their values) when anything changed. Returns the changed fields."""
    new: dict[str, Any] = {
        "display_name": display_name.strip(),
        "locale": locale,
        "time_zone": time_zone,
    }
    changed = [name for name in PROFILE_FIELDS if getattr(user, name) != new[name]]
    if not changed:
        return []
    with transaction.atomic():
        for name in changed:
            setattr(user, name, new[name])
        user.save(update_fields=changed)
        audit_event_record(
            action=AuditEvent.Action.PROFILE_CHANGE,
            user=user,
            request=request,
            data={"fields": changed},
        )
    return changed


def user_password_set_by_staff(
    *, user: AbstractBaseUser, actor: User, request: HttpRequest | None = None
) -> None:
    """Record that staff set a user's password through the admin (the admin's standard form
    has already saved it) and end the user's sessions, which the new password invalidates
    anyway. The staff member's own current session survives if they changed their own."""
    assert isinstance(user, User)
    keep = request.session.session_key if request is not None and user.pk == actor.pk else None
    with transaction.atomic():
        _sessions_end(
            sessions=list(
                UserSession.objects.filter(user=user).exclude(session_key=keep or "").order_by("pk")
            ),
            user=user,
        )
        audit_event_record(
            action=AuditEvent.Action.PASSWORD_CHANGE,
            user=user,
            actor=actor,
            request=request,
            data={"by_staff": True},
        )


def user_sessions_end_all_by_staff(*, user: User, actor: User, request: HttpRequest) -> int:
    """Sign `user` out everywhere (staff action, e.g. a stolen phone). Writes SESSIONS_REVOKED
    with the staff member as actor. Returns how many sessions ended."""
    keep = request.session.session_key if user.pk == actor.pk else None
    with transaction.atomic():
        rows = list(
            UserSession.objects.select_for_update()
            .filter(user=user)
            .exclude(session_key=keep or "")
            .order_by("pk")
        )
        # One notice without sid for every app (user_signed_out_everywhere), not one per session.
        ended = _sessions_end(sessions=rows, user=user, announce=False)
        audit_event_record(
            action=AuditEvent.Action.SESSIONS_REVOKED,
            user=user,
            actor=actor,
            request=request,
            data={"ended": ended, "by_staff": True},
        )
        user_signed_out_everywhere.send(sender=User, user=user)
    return ended


def user_session_end(*, user: User, session_id: int, request: HttpRequest) -> bool:
    """End one of the user's own other sessions (not the current one). Writes
    SESSIONS_REVOKED. Returns False if there is no such session."""
    with transaction.atomic():
        row = (
            UserSession.objects.select_for_update()
            .filter(user=user, pk=session_id)
            .exclude(session_key=request.session.session_key or "")
            .first()
        )
        if row is None:
            return False
        _sessions_end(sessions=[row], user=user)
        audit_event_record(
            action=AuditEvent.Action.SESSIONS_REVOKED,
            user=user,
            request=request,
            data={"ended": 1},
        )
    return True


def lockout_release(*, attempt: AccessAttempt, actor: User, request: HttpRequest | None) -> int:
    """Lift the sign-in lock-out recorded by `attempt` (its username from its address) and
    write UNLOCK with the staff member as actor. Returns how many attempt rows were removed."""
    with transaction.atomic():
        removed = axes_reset(ip=attempt.ip_address, username=attempt.username)
        audit_event_record(
            action=AuditEvent.Action.UNLOCK,
            user=user_by_identifier(attempt.username or ""),
            actor=actor,
            request=request,
            data={"username": attempt.username, "ip_address": attempt.ip_address},
        )
    return removed


def reauth_failure_record(*, user: User, request: HttpRequest, purpose: str) -> None:
    """Record a wrong current password typed by a signed-in user (see
    selectors_account.reauth_blocked)."""
    audit_event_record(
        action=AuditEvent.Action.LOGIN_FAILURE,
        user=user,
        request=request,
        data={"reauth": True, "purpose": purpose},
    )
