"""Reads for the OAuth side: the client at the token endpoint, consents and connected apps."""

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Field, Max, Model
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from oauth2_provider.scopes import get_scopes_backend

from accounts.models import User
from partners.models import Application, ApplicationReview, AuthorizationCode, Consent, Partner


@dataclass(frozen=True)
class _Columns:
    """One model's columns in a written-out SELECT: the select list, and the instance built
    from its slice of a row as the ORM would build it (field converters applied)."""

    model: type[Model]
    alias: str
    fields: tuple[Field, ...]
    converters: tuple[tuple[int, tuple[Callable[..., Any], ...], Any], ...]

    @classmethod
    def of(cls, model: type[Model], alias: str) -> "_Columns":
        fields = tuple(model._meta.concrete_fields)
        converters = []
        for index, field in enumerate(fields):
            column = field.get_col(model._meta.db_table)
            own = field.get_db_converters(connection)  # type: ignore[attr-defined]
            found = connection.ops.get_db_converters(column) + own
            if found:
                converters.append((index, tuple(found), column))
        return cls(model, alias, fields, tuple(converters))

    def select_list(self) -> str:
        quote = connection.ops.quote_name
        return ", ".join(f"{self.alias}.{quote(field.column)}" for field in self.fields)

    def instance(self, values: Sequence[Any]) -> Any:
        """The instance, or None for the NULL side of an outer join."""
        if values[self.fields.index(self.model._meta.pk)] is None:
            return None
        converted = list(values)
        for index, functions, column in self.converters:
            for function in functions:
                converted[index] = function(converted[index], column, connection)
        return self.model.from_db(
            connection.alias, [field.attname for field in self.fields], converted
        )


@functools.cache
def _client_lookup_sql() -> tuple[str, tuple[_Columns, ...]]:
    """The app by client_id, with its partner and its review, in one statement. Written out
    once per process: the ORM compiles the same select_related query (fifty columns of three
    tables) anew on every call, which was a third of a grant's CPU time."""
    quote = connection.ops.quote_name
    parts = (
        _Columns.of(Application, "a"),
        _Columns.of(Partner, "p"),
        _Columns.of(ApplicationReview, "r"),
    )
    meta, partner, review = Application._meta, Partner._meta, ApplicationReview._meta
    # Only quoted table and column names from the models go into the text; the client_id
    # is a query parameter.
    sql = (
        f"SELECT {', '.join(part.select_list() for part in parts)} "  # noqa: S608
        f"FROM {quote(meta.db_table)} a "
        f"LEFT JOIN {quote(partner.db_table)} p "
        f"ON p.{quote(partner.pk.column)} = a.{quote(meta.get_field('partner').column)} "
        f"LEFT JOIN {quote(review.db_table)} r "
        f"ON r.{quote(review.get_field('application').column)} = a.{quote(meta.pk.column)} "
        f"WHERE a.{quote(meta.get_field('client_id').column)} = %s"
    )
    return sql, parts


def application_for_client_id(*, client_id: str) -> Application | None:
    """The app with this client_id, or None, in one query, with its partner and its review
    loaded as select_related("partner", "review") leaves them, so that
    Application.is_usable needs no further query."""
    sql, parts = _client_lookup_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, [client_id])
        row = cursor.fetchone()
    if row is None:
        return None
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


@functools.cache
def _live_refresh_token_sql() -> tuple[str, tuple[_Columns, ...]]:
    refresh_model, access_model = get_refresh_token_model(), get_access_token_model()
    parts = (
        _Columns.of(refresh_model, "rt"),
        _Columns.of(access_model, "acc"),
        _Columns.of(User, "usr"),
    )
    quote = connection.ops.quote_name
    refresh, access, code = refresh_model._meta, access_model._meta, AuthorizationCode._meta

    def column(meta: Any, name: str) -> str:
        return quote(meta.get_field(name).column)

    # Only quoted table and column names from the models go into the text; the checksum is a
    # query parameter.
    sql = (
        f"SELECT {', '.join(part.select_list() for part in parts)}, "  # noqa: S608
        f"c.{column(code, 'auth_time')}, c.{column(code, 'sid')}, "
        f"CAST(c.{column(code, 'authorization_details')} AS TEXT) "
        f"FROM {quote(refresh.db_table)} rt "
        f"LEFT JOIN {quote(access.db_table)} acc "
        f"ON acc.{quote(access.pk.column)} = rt.{column(refresh, 'access_token')} "
        f"LEFT JOIN {quote(User._meta.db_table)} usr "
        f"ON usr.{quote(User._meta.pk.column)} = rt.{column(refresh, 'user')} "
        # The family's first authorization code: when and where the person signed in.
        f"LEFT JOIN {quote(code.db_table)} c ON c.{quote(code.pk.column)} = ("
        f"SELECT MIN(f.{quote(code.pk.column)}) FROM {quote(code.db_table)} f "
        f"WHERE f.{column(code, 'token_family')} = rt.{column(refresh, 'token_family')}) "
        f"WHERE rt.{column(refresh, 'token_checksum')} = %s "
        f"AND rt.{column(refresh, 'revoked')} IS NULL LIMIT 1"
    )
    return sql, parts


def refresh_token_live(*, checksum: str) -> Any:
    """The unrevoked refresh token with this checksum, or None, in one query: with its access
    token and its person loaded as select_related would leave them, and as
    ``tokenpass_auth_time``, ``tokenpass_sid`` and ``tokenpass_authorization_details`` the
    sign-in time, session id and granted authorization details of the authorization code its
    family came from (None if there is none). The statement is written once per process; the ORM's
    select_related query compiled three tables' columns on every refresh."""
    sql, parts = _live_refresh_token_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, [checksum])
        row = cursor.fetchone()
    if row is None:
        return None
    token, access_token, user = _instances(row[:-3], parts)
    refresh_model = type(token)
    refresh_model._meta.get_field("access_token").set_cached_value(token, access_token)
    refresh_model._meta.get_field("user").set_cached_value(token, user)
    token.tokenpass_auth_time, token.tokenpass_sid, details = row[-3:]
    token.tokenpass_authorization_details = json.loads(details) if details else None
    return token


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
