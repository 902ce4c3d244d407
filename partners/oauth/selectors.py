"""Reads for the OAuth side: the client at the token endpoint, consents and connected apps."""

import functools
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import Exists, Field, Max, Model, OuterRef
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_refresh_token_model,
    refresh_token_expire_timedelta,
)
from oauth2_provider.scopes import get_scopes_backend

from accounts.models import User
from config.db import binding_cursor
from partners.models import (
    AccessTokenRevocation,
    Application,
    ApplicationReview,
    AuthorizationCode,
    ClientAuthFailures,
    Consent,
    Partner,
)
from partners.oauth.tokens import token_audience


@dataclass(frozen=True)
class _Columns:
    """One model's columns in a written-out SELECT: the select list, and the instance built
    from its slice of a row as the ORM would build it (field converters applied)."""

    model: type[Model]
    alias: str
    fields: tuple[Field, ...]
    converters: tuple[tuple[int, tuple[Callable[..., Any], ...], Any], ...]
    # The primary key's place in the slice, and the attribute names for from_db (a set: it
    # tests each of the model's fields for membership when some are deferred).
    pk_index: int
    attnames: frozenset[str]

    @classmethod
    def of(cls, model: type[Model], alias: str, only: frozenset[str] | None = None) -> "_Columns":
        """All of ``model``'s columns, or with ``only`` its primary key and those fields (the
        others are deferred, as QuerySet.only leaves them: reading one costs a query)."""
        fields = tuple(
            field
            for field in model._meta.concrete_fields
            if only is None or field.primary_key or field.name in only
        )
        converters = []
        for index, field in enumerate(fields):
            column = field.get_col(model._meta.db_table)
            own = field.get_db_converters(connection)  # type: ignore[attr-defined]
            found = connection.ops.get_db_converters(column) + own
            if found:
                converters.append((index, tuple(found), column))
        return cls(
            model,
            alias,
            fields,
            tuple(converters),
            fields.index(model._meta.pk),
            frozenset(field.attname for field in fields),
        )

    def select_list(self) -> str:
        quote = connection.ops.quote_name
        return ", ".join(f"{self.alias}.{quote(field.column)}" for field in self.fields)

    def instance(self, values: Sequence[Any]) -> Any:
        """The instance, or None for the NULL side of an outer join."""
        if values[self.pk_index] is None:
            return None
        converted = list(values)
        for index, functions, column in self.converters:
            for function in functions:
                converted[index] = function(converted[index], column, connection)
        return self.model.from_db(connection.alias, self.attnames, converted)


# What the token endpoint's fast path (partners.oauth.grants) reads of the rows it joins to
# the app and the refresh token, besides their keys: Application.is_usable's statuses, the
# access token's scope and expiry, the person's sub, claims and last sign-in. Leaving out the
# rest (partner profiles, password hashes, a dozen timestamps) is a third of the refresh
# grant's read; the query count tests catch a deferred field read by mistake.
_LEAN_FIELDS: dict[type[Model], frozenset[str]] = {
    Partner: frozenset({"status"}),
    ApplicationReview: frozenset({"status"}),
    User: frozenset(
        {
            "public_id",
            "display_name",
            "locale",
            "time_zone",
            "email",
            "email_verified",
            "phone",
            "phone_verified",
            "last_login",
            "is_active",
        }
    ),
}


def _lean(model: type[Model], lean: bool) -> frozenset[str] | None:
    if not lean:
        return None
    if model is get_access_token_model():
        return frozenset({"scope", "expires"})
    return _LEAN_FIELDS.get(model)


def _client_from(*, lean: bool = False) -> tuple[tuple[_Columns, ...], str, str]:
    """The app with its partner and review: the parts, their select list and the FROM
    clause (the app is ``a``). ``lean``: of the partner and review, what the fast path
    reads (_LEAN_FIELDS)."""
    quote = connection.ops.quote_name
    parts = (
        _Columns.of(Application, "a"),
        _Columns.of(Partner, "p", _lean(Partner, lean)),
        _Columns.of(ApplicationReview, "r", _lean(ApplicationReview, lean)),
    )
    meta, partner, review = Application._meta, Partner._meta, ApplicationReview._meta
    source = (
        f"FROM {quote(meta.db_table)} a "
        f"LEFT JOIN {quote(partner.db_table)} p "
        f"ON p.{quote(partner.pk.column)} = a.{quote(meta.get_field('partner').column)} "
        f"LEFT JOIN {quote(review.db_table)} r "
        f"ON r.{quote(review.get_field('application').column)} = a.{quote(meta.pk.column)}"
    )
    return parts, ", ".join(part.select_list() for part in parts), source


@functools.cache
def _client_lookup_sql() -> tuple[str, tuple[_Columns, ...]]:
    """The app by client_id, with its partner and its review, in one statement. Written out
    once per process: the ORM compiles the same select_related query (fifty columns of three
    tables) anew on every call, which was a third of a grant's CPU time."""
    parts, columns, source = _client_from()
    client_id = connection.ops.quote_name(Application._meta.get_field("client_id").column)
    # Only quoted table and column names from the models go into the text; the client_id
    # is a query parameter.
    return f"SELECT {columns} {source} WHERE a.{client_id} = %s", parts


def application_for_client_id(*, client_id: str) -> Application | None:
    """The app with this client_id, or None, in one query, with its partner and its review
    loaded as select_related("partner", "review") leaves them, so that
    Application.is_usable needs no further query."""
    sql, parts = _client_lookup_sql()
    with binding_cursor(connection) as cursor:
        cursor.execute(sql, [client_id])
        row = cursor.fetchone()
    if row is None:
        return None
    return _application(row, parts)


def _application(row: Sequence[Any], parts: Sequence[_Columns]) -> Application:
    application, partner, review = _instances(row, parts)
    Application._meta.get_field("partner").set_cached_value(application, partner)
    Application.review.related.set_cached_value(application, review)
    return application


def _instances(row: Sequence[Any], parts: Sequence[_Columns]) -> list[Any]:
    """One instance (or None) per part, from consecutive slices of the row."""
    found, start = [], 0
    for part in parts:
        end = start + len(part.fields)
        found.append(part.instance(row[start:end]))
        start = end
    return found


def _live_refresh_token_parts(*, lean: bool = False) -> tuple[tuple[_Columns, ...], str, str]:
    """The live refresh token ``rt`` with its access token, its person and the sign-in of its
    family's first authorization code: the parts, the select list (the parts' columns, then
    auth_time, sid and the authorization details as text) and the joins after ``rt``.
    ``lean``: of the access token and the person, what the fast path reads."""
    refresh_model, access_model = get_refresh_token_model(), get_access_token_model()
    parts = (
        _Columns.of(refresh_model, "rt"),
        _Columns.of(access_model, "acc", _lean(access_model, lean)),
        _Columns.of(User, "usr", _lean(User, lean)),
    )
    quote = connection.ops.quote_name
    refresh, access, code = refresh_model._meta, access_model._meta, AuthorizationCode._meta

    def column(meta: Any, name: str) -> str:
        return quote(meta.get_field(name).column)

    columns = (
        f"{', '.join(part.select_list() for part in parts)}, "
        f"c.{column(code, 'auth_time')}, c.{column(code, 'sid')}, "
        f"CAST(c.{column(code, 'authorization_details')} AS TEXT)"
    )
    joins = (
        f"LEFT JOIN {quote(access.db_table)} acc "  # noqa: S608
        f"ON acc.{quote(access.pk.column)} = rt.{column(refresh, 'access_token')} "
        f"LEFT JOIN {quote(User._meta.db_table)} usr "
        f"ON usr.{quote(User._meta.pk.column)} = rt.{column(refresh, 'user')} "
        # The family's first authorization code: when and where the person signed in.
        f"LEFT JOIN {quote(code.db_table)} c ON c.{quote(code.pk.column)} = ("
        f"SELECT MIN(f.{quote(code.pk.column)}) FROM {quote(code.db_table)} f "
        f"WHERE f.{column(code, 'token_family')} = rt.{column(refresh, 'token_family')})"
    )
    return parts, columns, joins


def _live_refresh_condition() -> str:
    quote = connection.ops.quote_name
    refresh = get_refresh_token_model()._meta
    checksum = quote(refresh.get_field("token_checksum").column)
    revoked = quote(refresh.get_field("revoked").column)
    return f"rt.{checksum} = %s AND rt.{revoked} IS NULL"


@functools.cache
def _live_refresh_token_sql(*, lean: bool) -> tuple[str, tuple[_Columns, ...]]:
    parts, columns, joins = _live_refresh_token_parts(lean=lean)
    table = connection.ops.quote_name(get_refresh_token_model()._meta.db_table)
    # Only quoted table and column names from the models go into the text; the checksum is a
    # query parameter.
    sql = (
        f"SELECT {columns} FROM {table} rt {joins} "  # noqa: S608
        f"WHERE {_live_refresh_condition()} LIMIT 1"
    )
    return sql, parts


def refresh_token_unexpired(*, token: Any) -> bool:
    """DOT's test of a live refresh token, read with its access token: it still has one, and
    REFRESH_TOKEN_EXPIRE_SECONDS have not passed since that access token expired."""
    if token.access_token is None:
        return False
    expire_delta = refresh_token_expire_timedelta()
    return not (expire_delta and token.access_token.expires + expire_delta <= timezone.now())


def _refresh_token(row: Sequence[Any], parts: Sequence[_Columns]) -> Any:
    """The live refresh token (or None) from its slice of a row (its parts' columns, then
    auth_time, sid and authorization details)."""
    token, access_token, user = _instances(row[:-3], parts)
    if token is None:
        return None
    refresh_model = type(token)
    refresh_model._meta.get_field("access_token").set_cached_value(token, access_token)
    refresh_model._meta.get_field("user").set_cached_value(token, user)
    token.tokenpass_auth_time, token.tokenpass_sid, details = row[-3:]
    token.tokenpass_authorization_details = json.loads(details) if details else None
    return token


def refresh_token_live(*, checksum: str, lean: bool = False) -> Any:
    """The unrevoked refresh token with this checksum, or None, in one query: with its access
    token and its person loaded as select_related would leave them, and as
    ``tokenpass_auth_time``, ``tokenpass_sid`` and ``tokenpass_authorization_details`` the
    sign-in time, session id and granted authorization details of the authorization code its
    family came from (None if there is none). The statement is written once per process; the ORM's
    select_related query compiled three tables' columns on every refresh. ``lean``: of the
    access token and the person, what the token endpoint's fast path reads (_LEAN_FIELDS)."""
    sql, parts = _live_refresh_token_sql(lean=lean)
    with binding_cursor(connection) as cursor:
        cursor.execute(sql, [checksum])
        row = cursor.fetchone()
    if row is None:
        return None
    return _refresh_token(row, parts)


def _failures_join() -> str:
    """The failure count of the presented client_id and address in its current window (``fl``;
    parameters: the key and the time now)."""
    quote = connection.ops.quote_name
    meta = ClientAuthFailures._meta
    key, ends = quote(meta.get_field("key").column), quote(meta.get_field("window_ends").column)
    return f"LEFT JOIN {quote(meta.db_table)} fl ON fl.{key} = %s AND fl.{ends} > %s"


def _failures_column() -> str:
    return "fl." + connection.ops.quote_name(ClientAuthFailures._meta.get_field("failures").column)


@functools.cache
def _authentication_sql(*, with_refresh_token: bool) -> tuple[str, tuple, tuple]:
    # Only the fast path reads this, and only what _LEAN_FIELDS names of the joined rows.
    client_parts, client_columns, source = _client_from(lean=True)
    quote = connection.ops.quote_name
    client_id = quote(Application._meta.get_field("client_id").column)
    columns = f"{client_columns}, {_failures_column()}"
    joins = _failures_join()
    refresh_parts: tuple[_Columns, ...] = ()
    if with_refresh_token:
        refresh_parts, refresh_columns, refresh_joins = _live_refresh_token_parts(lean=True)
        table = quote(get_refresh_token_model()._meta.db_table)
        columns += f", {refresh_columns}"
        joins += f" LEFT JOIN {table} rt ON {_live_refresh_condition()} {refresh_joins}"
    # Only quoted table and column names from the models go into the text; the failure key,
    # the time, the checksum and the client_id are query parameters, in that order.
    sql = f"SELECT {columns} {source} {joins} WHERE a.{client_id} = %s"
    return sql, client_parts, refresh_parts


@dataclass(frozen=True)
class ClientAuthentication:
    """What authenticating a client at the token endpoint reads, in one query."""

    application: Application | None
    # Failed authentications of this client_id from this address in the current window.
    failures: int
    # The live refresh token asked for (whichever app holds it), or None.
    refresh_token: Any = None


def client_authentication_read(
    *, client_id: str, failure_key: str, refresh_checksum: str | None = None
) -> ClientAuthentication:
    """The app with this client_id (with its partner and review, as
    application_for_client_id), the failure count of ``failure_key``, and with a refresh
    token's checksum the live refresh token (as refresh_token_live), in one query."""
    sql, client_parts, refresh_parts = _authentication_sql(
        with_refresh_token=refresh_checksum is not None
    )
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    params: list[Any] = [failure_key, now]
    if refresh_checksum is not None:
        params.append(refresh_checksum)
    params.append(client_id)
    with binding_cursor(connection) as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return ClientAuthentication(application=None, failures=0)
    width = sum(len(part.fields) for part in client_parts)
    return ClientAuthentication(
        application=_application(row[:width], client_parts),
        failures=int(row[width] or 0),
        refresh_token=(
            _refresh_token(row[width + 1 :], refresh_parts) if refresh_checksum else None
        ),
    )


def consent_covers(*, user: User, application: Application, scopes: Iterable[str]) -> bool:
    """True if the person already allowed this app every one of `scopes`."""
    consent = Consent.objects.filter(user=user, application=application).first()
    return consent is not None and set(scopes) <= consent.scope_set()


def scope_descriptions(scopes: Iterable[str]) -> list[tuple[str, str]]:
    """(scope, plain-language description) pairs, in the order given."""
    every = get_scopes_backend().get_all_scopes()
    return [(scope, str(every.get(scope, scope))) for scope in scopes]


@dataclass(frozen=True)
class ConnectedApp:
    application: Application
    scopes: list[tuple[str, str]]
    authorized_at: datetime
    last_used_at: datetime | None


def connected_apps_for_user(*, user: User) -> list[ConnectedApp]:
    """The apps this person has authorized, most recently used first."""
    consents = list(
        Consent.objects.filter(user=user)
        .select_related("application", "application__partner")
        .order_by("-last_used_at", "-updated_at")
    )
    # Tokens issued before a consent row existed (device grants, older data) also count.
    token_use = dict(
        get_access_token_model()
        .objects.filter(user=user)
        .values_list("application_id")
        .annotate(last=Max("created"))
    )
    refresh_use = dict(
        get_refresh_token_model()
        .objects.filter(user=user)
        .values_list("application_id")
        .annotate(last=Max("created"))
    )
    result = []
    for consent in consents:
        candidates = [
            d
            for d in (
                consent.last_used_at,
                token_use.get(consent.application_id),
                refresh_use.get(consent.application_id),
            )
            if d is not None
        ]
        result.append(
            ConnectedApp(
                application=consent.application,
                scopes=scope_descriptions(sorted(consent.scope_set())),
                authorized_at=consent.created_at,
                last_used_at=max(candidates) if candidates else None,
            )
        )
    return result


def client_tokens_valid_from(*, application: Application) -> int:
    """The earliest iat (whole seconds) a client credentials token of this app may carry."""
    valid_from = int(application.created.timestamp())
    revoked_before = application.client_tokens_not_before
    if revoked_before is not None:
        # Rounded up: a token issued earlier in the same second as the revocation dies too.
        valid_from = max(valid_from, math.ceil(revoked_before.timestamp()))
    return valid_from


def client_credentials_access_token(*, token: str, claims: dict[str, Any]) -> Any | None:
    """The access token a client credentials token stands for, unsaved (such tokens are not
    stored, see partners.oauth.tokens), built as DOT's row would be so that DOT, DRF and our
    permissions treat it alike; None if it was revoked or its app is gone. ``claims`` come
    from tokens.client_credentials_claims (the signature checked). One query: the app, with
    its partner and review, and whether the jti was revoked."""
    application = (
        Application.objects.select_related("partner", "review")
        .annotate(
            _revoked=Exists(
                AccessTokenRevocation.objects.filter(application=OuterRef("pk"), jti=claims["jti"])
            )
        )
        .filter(client_id=claims["client_id"])
        .first()
    )
    if application is None or application._revoked:
        return None
    # Issued before this app existed (to an older app that had the same client_id), or
    # before staff or the partner revoked all of the app's client credentials tokens.
    if claims["iat"] < client_tokens_valid_from(application=application):
        return None
    access_token = get_access_token_model()(
        user=None,
        application=application,
        scope=claims["scope"],
        expires=datetime.fromtimestamp(claims["exp"], tz=UTC),
        created=datetime.fromtimestamp(claims["iat"], tz=UTC),
        resource=token_audience(claims) or [],
    )
    # The checksum DOT's row would carry; the token itself is kept nowhere (RFC 9700 §4.14).
    access_token.token_checksum = hashlib.sha256(token.encode("utf-8")).hexdigest()
    return access_token
