"""Client authentication failures, counted per client_id and IP address.

A partner whose secret leaked to a guessing script, or a script guessing one, is refused for
the window once the limit is reached, with the correct secret too (so a guess that happens to
be right is not told apart).

The counts are rows of partners.ClientAuthFailures in the database every worker and host
shares, not cache entries: the token endpoint's fast path (partners/oauth/grants.py) reads a
count in the query that reads the app, where a cache would cost every grant a round trip of
its own. Only failures write. The ``partners.oauth_cleanup`` beat task (and ``manage.py
oauth_cleanup``) deletes windows that have ended; staff unlock a client in the admin."""

import base64
import binascii
import functools
import hashlib
from datetime import timedelta
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from partners.models import Application, ClientAuthFailures, PartnerEvent
from partners.oauth import clientcache
from partners.oauth.services import datetimes_prepared
from partners.services import partner_event_record


def failure_key(*, client_id: str, ip: str | None) -> str:
    """The row key of one client_id and address: a SHA-256, so neither is stored."""
    return hashlib.sha256(f"{client_id}|{ip or '-'}".encode()).hexdigest()


def presented_client_id(*, authorization: str | None, body_client_id: str | None) -> str:
    """The client_id a request claims, from HTTP Basic credentials or the body."""
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            return unquote_plus(decoded.split(":", 1)[0])
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return ""
    return body_client_id or ""


def failures_block(failures: int | None) -> bool:
    """Whether this many failures in the current window refuse the pair."""
    return (failures or 0) >= settings.OAUTH_CLIENT_AUTH_FAILURE_LIMIT


def window_refuses(window: ClientAuthFailures) -> bool:
    """Whether this window refuses its client_id and address now."""
    return window.window_ends > timezone.now() and failures_block(window.failures)


def client_auth_blocked(*, client_id: str, ip: str | None) -> bool:
    failures = (
        ClientAuthFailures.objects.filter(
            key=failure_key(client_id=client_id, ip=ip), window_ends__gt=timezone.now()
        )
        .values_list("failures", flat=True)
        .first()
    )
    return failures_block(failures)


@functools.cache
def _record_statement() -> str:
    """One upsert: a new window, or one more failure in the current one."""
    meta: Any = ClientAuthFailures._meta
    app_meta: Any = Application._meta
    connection = connections[router.db_for_write(ClientAuthFailures)]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    key, application, failures, ends = (
        quote(meta.get_field(name).column)
        for name in ("key", "application", "failures", "window_ends")
    )
    app_table, app_pk, app_client_id = (
        quote(app_meta.db_table),
        quote(app_meta.pk.column),
        quote(app_meta.get_field("client_id").column),
    )
    # PostgreSQL and SQLite both read this upsert; only quoted names go into the text. The
    # app is looked up here, on a failure only, so that staff see whom a window refuses.
    return (
        f"INSERT INTO {table} ({key}, {application}, {failures}, {ends}) "  # noqa: S608
        f"VALUES (%s, (SELECT {app_pk} FROM {app_table} WHERE {app_client_id} = %s), 1, %s) "
        f"ON CONFLICT ({key}) DO UPDATE SET "
        f"{failures} = CASE WHEN {table}.{ends} > %s THEN {table}.{failures} + 1 ELSE 1 END, "
        f"{ends} = CASE WHEN {table}.{ends} > %s THEN {table}.{ends} ELSE excluded.{ends} END "
        f"RETURNING {failures}"
    )


def client_auth_failure_record(*, client_id: str, ip: str | None) -> int:
    """Count one failure; returns the count in the current window."""
    connection = connections[router.db_for_write(ClientAuthFailures)]
    now = timezone.now()
    ends = now + timedelta(seconds=settings.OAUTH_CLIENT_AUTH_FAILURE_WINDOW)
    # PostgreSQL text cannot hold NUL: such a client_id names no app (and is hashed only).
    named = client_id if "\x00" not in client_id else None
    key = failure_key(client_id=client_id, ip=ip)
    params = datetimes_prepared(params=[key, named, ends, now, now], connection=connection)
    # The client credentials grant must not go on answering from memory for this pair: not
    # from before the count, nor from a read that saw the count before it was written.
    clientcache.forget_client(client_id=client_id, failure_key=key)
    with connection.cursor() as cursor:
        cursor.execute(_record_statement(), params)
        count = int(cursor.fetchone()[0])
    clientcache.forget_client(client_id=client_id, failure_key=key)
    return count


def client_auth_refusals(*, application: Application) -> list[ClientAuthFailures]:
    """The app's windows that refuse its client authentication now (one per address that
    reached the limit), the longest-running last."""
    windows = ClientAuthFailures.objects.filter(application=application).order_by("window_ends")
    return [window for window in windows if window_refuses(window)]


def client_auth_unlock(*, windows: QuerySet[ClientAuthFailures], actor: User | None) -> int:
    """End these windows now: their client_id and address may authenticate again at once.
    Each app unlocked gets a row in its partner's log. Returns how many windows ended."""
    with transaction.atomic():
        locked = list(
            windows.select_related("application__partner").select_for_update(of=("self",))
        )
        apps = {w.application_id: w.application for w in locked if w.application is not None}
        for app in apps.values():
            if app.partner_id is not None:
                partner_event_record(
                    partner=app.partner,
                    action=PartnerEvent.Action.APP_CLIENT_UNLOCKED,
                    actor=actor,
                    application=app,
                    data={"windows": sum(1 for w in locked if w.application_id == app.pk)},
                )
        deleted, _ = ClientAuthFailures.objects.filter(pk__in=[w.pk for w in locked]).delete()
    return deleted


def client_auth_failures_prune() -> int:
    """Delete the windows that have ended; returns how many."""
    deleted, _ = ClientAuthFailures.objects.filter(window_ends__lte=timezone.now()).delete()
    return deleted


def oauthlib_client_id(request: Any) -> str:
    return presented_client_id(
        authorization=request.headers.get("HTTP_AUTHORIZATION"),
        body_client_id=getattr(request, "client_id", None),
    )
