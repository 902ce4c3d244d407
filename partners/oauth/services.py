"""Writes for the OAuth side: consents, revocation, client secrets, replayed codes."""

import functools
import hashlib
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from django.db import connection, connections, router, transaction
from django.db.models import (
    CharField,
    DateTimeField,
    Field,
    ForeignKey,
    Model,
    TextField,
    UUIDField,
    signals,
)
from django.http import HttpRequest
from django.utils import timezone
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import (
    clear_expired,
    get_access_token_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)

from accounts.audit import audit_event_record
from accounts.models import AuditEvent, User
from config.db import binding_cursor
from partners.models import (
    AccessTokenRevocation,
    Application,
    AuthorizationCode,
    Consent,
    PartnerEvent,
)
from partners.services import partner_event_record


def token_checksum(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@functools.cache
def _insert_statement(model: type[Model]) -> tuple[str, tuple[Field, ...]]:
    meta = model._meta
    fields = tuple(f for f in meta.concrete_fields if f is not meta.pk)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    values = ", ".join(["%s"] * len(fields))
    # Only quoted table and column names from the model go into the text.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({values}) "  # noqa: S608
        f"RETURNING {quote(meta.pk.column)}"
    )
    return sql, fields


def field_values(*, instance: Model, fields: Iterable[Field], connection: Any) -> list[Any]:
    """The values ``instance.save()`` would insert for ``fields`` (each field's pre_save, such
    as timestamps and the token checksum, then its preparation for ``connection``).

    On PostgreSQL the fields of a token row whose preparation leaves a value of the expected
    type as it is (keys, text, aware times, UUIDs) are read directly: Django's layers of
    pre_save and preparation cost the refresh grant's write a tenth of its CPU. Any other
    field, or a value of another type, takes the generic way."""
    as_is = connection.vendor == "postgresql"
    values = []
    for f in fields:
        value = _as_is(f, instance) if as_is else _GENERIC
        if value is _GENERIC:
            value = f.get_db_prep_save(f.pre_save(instance, True), connection=connection)
        values.append(value)
    return values


_GENERIC = object()


def _as_is(field: Field, instance: Model) -> Any:
    """The value a plain field of a token row inserts on PostgreSQL, as pre_save and
    get_db_prep_save give it, or _GENERIC where they might change it."""
    kind = type(field)
    if kind is DateTimeField:
        if field.auto_now or field.auto_now_add:  # type: ignore[attr-defined]
            value = timezone.now()
            setattr(instance, field.attname, value)
            return value
        value = getattr(instance, field.attname)
        if value is None or (type(value) is datetime and value.tzinfo is not None):
            return value
        return _GENERIC
    value = getattr(instance, field.attname)
    if kind is ForeignKey:
        return value if value is None or type(value) is int else _GENERIC
    if kind is TextField or kind is CharField:
        return value if type(value) is str else _GENERIC
    if kind is UUIDField:
        return value if type(value) is uuid.UUID else _GENERIC
    return _GENERIC


def datetimes_prepared(*, params: Iterable[Any], connection: Any) -> list[Any]:
    """``params`` for a hand-written statement, with each datetime prepared as the ORM prepares
    timestamps for ``connection`` (SQLite stores text)."""
    return [
        connection.ops.adapt_datetimefield_value(p) if isinstance(p, datetime) else p
        for p in params
    ]


def token_row_insert(*, instance: Model) -> None:
    """Insert a new token row (access, refresh or ID token) exactly as ``instance.save()``
    would: every field's pre_save (timestamps, the token checksum) and database preparation,
    then the primary key set from RETURNING. The statement text is built once per model, where
    save() compiles it anew for each token (about 0.3 ms of CPU, on every grant). Falls back to
    save() for a row that has a primary key already or a model with save signal receivers."""
    model = type(instance)
    if (
        instance.pk is not None
        or signals.pre_save.has_listeners(model)
        or signals.post_save.has_listeners(model)
    ):
        instance.save()
        return
    instance._prepare_related_fields_for_save(operation_name="save")  # type: ignore[attr-defined]
    using = router.db_for_write(model, instance=instance)
    target = connections[using]
    sql, fields = _insert_statement(model)
    params = field_values(instance=instance, fields=fields, connection=target)
    with binding_cursor(target) as cursor:
        cursor.execute(sql, params)
        instance.pk = cursor.fetchone()[0]
    instance._state.adding = False
    instance._state.db = using


def authorization_code_details_set(*, code: str, details: list[dict]) -> None:
    """Remember the authorization details (RFC 9396) granted with this authorization code."""
    AuthorizationCode.objects.filter(code_checksum=token_checksum(code)).update(
        authorization_details=details
    )


def consent_record(
    *, user: User, application: Application, scopes: list[str], request: HttpRequest | None
) -> Consent:
    """Remember that the person allowed `scopes` to this app (added to what they allowed
    before) and write an APP_AUTHORIZED audit row when something new was allowed."""
    now = timezone.now()
    with transaction.atomic():
        consent, created = Consent.objects.select_for_update().get_or_create(
            user=user,
            application=application,
            defaults={"scope": " ".join(sorted(set(scopes))), "created_at": now, "updated_at": now},
        )
        added = set(scopes) - consent.scope_set() if not created else set(scopes)
        if not created and added:
            consent.scope = " ".join(sorted(consent.scope_set() | added))
            consent.updated_at = now
            consent.save(update_fields=["scope", "updated_at"])
        if added:
            audit_event_record(
                action=AuditEvent.Action.APP_AUTHORIZED,
                user=user,
                request=request,
                data={"client_id": application.client_id, "scopes": sorted(added)},
            )
    return consent


@functools.cache
def _refresh_statements() -> dict[str, str]:
    """The refresh grant's UPDATEs and DELETE, written once per process from the models'
    metadata: through the ORM each one is compiled anew on every grant (about a fifth of the
    grant's CPU time)."""
    quote = connection.ops.quote_name
    refresh, access = get_refresh_token_model()._meta, get_access_token_model()._meta
    consent = Consent._meta

    def column(meta: Any, name: str) -> str:
        return quote(meta.get_field(name).column)

    # Only quoted table and column names from the models go into the texts.
    return {
        "revoke": (
            f"UPDATE {quote(refresh.db_table)} SET {column(refresh, 'revoked')} = %s, "  # noqa: S608
            f"{column(refresh, 'updated')} = %s, {column(refresh, 'access_token')} = NULL "
            f"WHERE {quote(refresh.pk.column)} = %s AND {column(refresh, 'revoked')} IS NULL"
        ),
        "delete_access": (
            f"DELETE FROM {quote(access.db_table)} WHERE {quote(access.pk.column)} = %s"  # noqa: S608
        ),
        "touch_consent": (
            f"UPDATE {quote(consent.db_table)} SET {column(consent, 'last_used_at')} = %s "  # noqa: S608
            f"WHERE {column(consent, 'application')} = %s AND {column(consent, 'user')} = %s"
        ),
    }


def _run(model: type[Model], statement: str, params: list[Any]) -> int:
    """Run one of _refresh_statements() where the ORM would write ``model``; returns the number
    of rows it touched. A datetime in ``params`` is prepared as the ORM prepares
    ``model``'s timestamps for that database (SQLite stores text)."""
    target = connections[router.db_for_write(model)]
    with target.cursor() as cursor:
        cursor.execute(
            _refresh_statements()[statement], datetimes_prepared(params=params, connection=target)
        )
        return int(cursor.rowcount)


def refresh_token_rotation_revoke(*, refresh_token_id: int, now: datetime) -> bool:
    """Revoke a refresh token that is being rotated and detach its access token, unless it was
    revoked already. The conditional UPDATE is the row lock and the revocation at once: of two
    concurrent rotations of one token exactly one gets True."""
    return _run(get_refresh_token_model(), "revoke", [now, now, refresh_token_id]) == 1


def access_token_row_delete(*, access_token_id: int) -> None:
    """Delete an access token row (revoking it) without the collector's reads, for a token
    nothing points at any more (its refresh token's link was cleared under the row lock)."""
    _run(get_access_token_model(), "delete_access", [access_token_id])


def consent_touch(*, user: User, application: Application) -> None:
    """Note that the app just obtained tokens for the person (the "last used" time)."""
    _run(Consent, "touch_consent", [timezone.now(), application.pk, user.pk])


def _parameter_type(field: Field) -> str:
    """The type a parameter in a SELECT list needs to be stated as, for the column it goes
    to: the server infers nothing there, and a NULL or a string bound apart from the text
    would arrive as text. Character columns take text, and the insert's own conversion checks
    the length (an explicit cast to varchar(n) would cut a longer value short)."""
    db_type = str(field.db_type(connection))
    return "text" if db_type.startswith("varchar") else db_type


def _insert_select(model: type[Model], computed: dict[str, str], source: str) -> tuple[str, list]:
    """``INSERT INTO <model's table> (<every column but the key>) SELECT ... FROM source``:
    the columns named in ``computed`` take that SQL, the others a parameter each, in the
    order of the returned fields."""
    meta = model._meta
    quote = connection.ops.quote_name
    fields = [f for f in meta.concrete_fields if f is not meta.pk]
    columns = ", ".join(quote(f.column) for f in fields)
    values = ", ".join(computed.get(f.name, f"%s::{_parameter_type(f)}") for f in fields)
    # Only quoted table and column names from the model, and our own SQL, go into the text.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) SELECT {values} "  # noqa: S608
        f"FROM {source} RETURNING {quote(meta.pk.column)}"
    )
    return sql, [f for f in fields if f.name not in computed]


@functools.cache
def _rotation_statement(*, with_id_token: bool) -> tuple[str, tuple[list, list, list]]:
    """The refresh grant's writes as one PostgreSQL statement (data-modifying WITH queries):
    revoke the presented refresh token unless it was revoked already, delete its access token,
    insert the ID token, access token and rotated refresh token, touch the consent. Everything
    after the revocation selects from its result, so a token that another request rotated
    first writes nothing. One round trip and its own transaction, where the statements one by
    one took eight round trips with BEGIN and COMMIT. Returns the text and, per inserted
    model, the fields whose values are parameters."""
    quote = connection.ops.quote_name
    refresh, access = get_refresh_token_model(), get_access_token_model()
    rt, at, consent = refresh._meta, access._meta, Consent._meta

    def column(meta: Any, name: str) -> str:
        return quote(meta.get_field(name).column)

    id_sql, id_fields = _insert_select(get_id_token_model(), {}, "revoked")
    access_sql, access_fields = _insert_select(
        access,
        {
            "source_refresh_token": f"revoked.{quote(rt.pk.column)}",
            "id_token": (
                f"(SELECT {quote(get_id_token_model()._meta.pk.column)} FROM idt)"  # noqa: S608
                if with_id_token
                else "NULL"
            ),
        },
        "revoked",
    )
    refresh_sql, refresh_fields = _insert_select(
        refresh, {"access_token": f"acc.{quote(at.pk.column)}"}, "acc"
    )
    parts = [
        f"revoked AS (UPDATE {quote(rt.db_table)} SET {column(rt, 'revoked')} = %s, "  # noqa: S608
        f"{column(rt, 'updated')} = %s, {column(rt, 'access_token')} = NULL "
        f"WHERE {quote(rt.pk.column)} = %s AND {column(rt, 'revoked')} IS NULL "
        f"RETURNING {quote(rt.pk.column)})",
        f"dropped AS (DELETE FROM {quote(at.db_table)} WHERE {quote(at.pk.column)} = %s "  # noqa: S608
        "AND EXISTS (SELECT 1 FROM revoked))",
    ]
    if with_id_token:
        parts.append(f"idt AS ({id_sql})")
    parts += [
        f"acc AS ({access_sql})",
        f"fresh AS ({refresh_sql})",
        f"touched AS (UPDATE {quote(consent.db_table)} SET {column(consent, 'last_used_at')} = %s "  # noqa: S608
        f"WHERE {column(consent, 'application')} = %s AND {column(consent, 'user')} = %s "
        "AND EXISTS (SELECT 1 FROM fresh))",
    ]
    sql = "WITH " + ",\n".join(parts) + "\nSELECT COUNT(*) FROM fresh"
    return sql, (id_fields if with_id_token else [], access_fields, refresh_fields)


def token_row(model: type[Model], /, **values: Any) -> SimpleNamespace:
    """A new token row for refresh_token_rotate, from field values by attribute name
    (``user_id``, ``scope`` ...; the model's defaults for the rest), held in a plain object:
    the rotation on PostgreSQL is one statement that takes the row's values (field_values),
    and building a model instance for each of a refresh grant's three rows cost a tenth of
    the grant. The statement-at-a-time rotation makes instances of them (_as_instance)."""
    _sql, fields = _insert_statement(model)
    row = SimpleNamespace(**{f.attname: f.get_default() for f in fields if f.attname not in values})
    row.__dict__.update(values)
    return row


def refresh_token_rotate(
    *,
    previous: Any,
    application: Application,
    id_token: Any,
    access_token: Any,
    refresh_token: Any,
    now: datetime,
) -> bool:
    """Rotate ``previous`` (a live refresh token, read with its access token): revoke it and
    delete its access token, store the new ID token (if any), access token and refresh token
    (unsaved rows from token_row, whose links to one another are made here) and note in the
    consent that the app was just used. All or nothing; False, with nothing written, when
    another request revoked ``previous`` first: of two concurrent rotations of one token
    exactly one gets True."""
    user = previous.user
    target = connections[router.db_for_write(get_refresh_token_model())]
    if target.vendor != "postgresql":
        return _refresh_token_rotate_stepwise(
            previous=previous,
            application=application,
            id_token=id_token,
            access_token=access_token,
            refresh_token=refresh_token,
            now=now,
        )
    sql, (id_fields, access_fields, refresh_fields) = _rotation_statement(
        with_id_token=id_token is not None
    )

    params = [now, now, previous.pk, previous.access_token_id]
    if id_token is not None:
        params += field_values(instance=id_token, fields=id_fields, connection=target)
    params += field_values(instance=access_token, fields=access_fields, connection=target)
    params += field_values(instance=refresh_token, fields=refresh_fields, connection=target)
    params += [now, application.pk, user.pk]
    with binding_cursor(target) as cursor:
        cursor.execute(sql, params)
        return bool(cursor.fetchone()[0])


def _refresh_token_rotate_stepwise(
    *,
    previous: Any,
    application: Application,
    id_token: Model | None,
    access_token: Any,
    refresh_token: Any,
    now: datetime,
) -> bool:
    """refresh_token_rotate, one statement at a time (databases without data-modifying WITH
    queries, such as the SQLite of the demo)."""
    id_token = _as_instance(get_id_token_model(), id_token)
    access_token = _as_instance(get_access_token_model(), access_token)
    refresh_token = _as_instance(get_refresh_token_model(), refresh_token)
    with transaction.atomic():
        if id_token is not None:
            token_row_insert(instance=id_token)
        if not refresh_token_rotation_revoke(refresh_token_id=previous.pk, now=now):
            transaction.set_rollback(True)
            return False
        access_token_row_delete(access_token_id=previous.access_token_id)
        access_token.id_token = id_token
        access_token.source_refresh_token = previous
        token_row_insert(instance=access_token)
        refresh_token.access_token = access_token
        token_row_insert(instance=refresh_token)
        consent_touch(user=previous.user, application=application)
    return True


def _as_instance(model: type[Model], row: Any) -> Any:
    """The unsaved model instance of a token_row (an instance is returned as it is)."""
    if row is None or isinstance(row, Model):
        return row
    values = dict(vars(row))
    raw_token = values.pop("_raw_token", None)
    instance = model(**values)
    if raw_token is not None:
        instance._raw_token = raw_token  # type: ignore[attr-defined]
    return instance


def user_app_tokens_revoke(*, user: User, application: Application) -> int:
    """Revoke every token and pending code this app holds for the person, at once.
    Returns how many access and refresh tokens died."""
    access_model = get_access_token_model()
    refresh_model = get_refresh_token_model()
    with transaction.atomic():
        now = timezone.now()
        refreshed = refresh_model.objects.filter(
            user=user, application=application, revoked__isnull=True
        ).update(revoked=now, updated=now)
        deleted_access, _ = access_model.objects.filter(user=user, application=application).delete()
        get_id_token_model().objects.filter(user=user, application=application).delete()
        get_grant_model().objects.filter(user=user, application=application).delete()
    return refreshed + deleted_access


def consent_revoke(*, user: User, application: Application, request: HttpRequest | None) -> bool:
    """The person withdraws an app: its consent and all its tokens for them die together.
    Returns False if there was nothing to revoke."""
    with transaction.atomic():
        deleted, _ = Consent.objects.filter(user=user, application=application).delete()
        revoked = user_app_tokens_revoke(user=user, application=application)
        if not deleted and not revoked:
            return False
        audit_event_record(
            action=AuditEvent.Action.APP_REVOKED,
            user=user,
            request=request,
            data={"client_id": application.client_id, "tokens_revoked": revoked},
        )
    return True


def authorization_code_replay_revoke(*, record: AuthorizationCode) -> None:
    """A code came back after it was redeemed: revoke everything it produced (RFC 6749
    §4.1.2 says the server SHOULD)."""
    refresh_model = get_refresh_token_model()
    with transaction.atomic():
        if record.token_family:
            refresh_model.revoke_family(record.token_family)
        if record.access_token_checksum:
            get_access_token_model().objects.filter(
                token_checksum=record.access_token_checksum
            ).delete()


def client_credentials_token_revoke(*, application: Application, claims: dict[str, Any]) -> None:
    """Revoke a client credentials access token (RFC 7009) given its verified claims
    (tokens.client_credentials_claims): its jti is recorded until it would expire. Only the
    app it was issued to may revoke it, and revoking twice or revoking an expired token
    changes nothing (RFC 7009 §2.2 answers 200 either way)."""
    if claims["client_id"] != application.client_id:
        return
    expires = datetime.fromtimestamp(claims["exp"], tz=UTC)
    if expires <= timezone.now():
        return
    # ON CONFLICT DO NOTHING: two revocations of one token at once both succeed.
    AccessTokenRevocation.objects.bulk_create(
        [AccessTokenRevocation(jti=claims["jti"], application=application, expires=expires)],
        ignore_conflicts=True,
    )


def application_client_tokens_revoke(*, application: Application, actor: User | None) -> None:
    """Revoke every client credentials token the app holds now (they are not stored: from
    now on, any issued before this moment is refused), and say so in the partner's log.
    New ones can be asked for at once, from the next second on."""
    with transaction.atomic():
        now = timezone.now()
        Application.objects.filter(pk=application.pk).update(
            client_tokens_not_before=now, updated=now
        )
        application.client_tokens_not_before = now
        if application.partner_id is not None:
            partner_event_record(
                partner=application.partner,
                action=PartnerEvent.Action.APP_CLIENT_TOKENS_REVOKED,
                actor=actor,
                application=application,
            )


def application_client_secret_rotate(*, application: Application) -> str:
    """Give the app a new client secret and return it in plain text: the only time anyone
    sees it. The stored value is a keyed hash; the old secret stops working at once."""
    secret = generate_client_secret()
    with transaction.atomic():
        locked = Application.objects.select_for_update().get(pk=application.pk)
        locked.client_secret = secret
        locked.hash_client_secret = True
        locked.save(update_fields=["client_secret", "hash_client_secret", "updated"])
    application.refresh_from_db(fields=["client_secret", "hash_client_secret", "updated"])
    return secret


def oauth_expired_prune(*, code_older_than_seconds: int) -> dict[str, int]:
    """Delete what no request can use any more: expired tokens and grants (DOT's
    clear_expired, in batches), authorization code records no live token needs, ended
    windows of client authentication failures, and revocations of client credentials tokens
    that have expired anyway. Safe to run at any time and as often as
    wanted; the beat runs it every hour."""
    # ratelimit builds on this module's statement helpers: imported here, not at the top.
    from partners.oauth.ratelimit import client_auth_failures_prune

    clear_expired()
    return {
        "authorization_codes": authorization_codes_prune(
            older_than_seconds=code_older_than_seconds
        ),
        "client_auth_windows": client_auth_failures_prune(),
        "access_token_revocations": AccessTokenRevocation.objects.filter(
            expires__lte=timezone.now()
        ).delete()[0],
    }


def authorization_codes_prune(*, older_than_seconds: int) -> int:
    """Delete code records older than `older_than_seconds` whose token family has no live
    refresh token left (while one lives, the record still answers its auth_time). Returns
    how many were deleted."""
    from datetime import timedelta

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    live_families = (
        get_refresh_token_model()
        .objects.filter(revoked__isnull=True, token_family__isnull=False)
        .values("token_family")
    )
    deleted, _ = (
        AuthorizationCode.objects.filter(created_at__lt=cutoff)
        .exclude(token_family__in=live_families)
        .delete()
    )
    return deleted
