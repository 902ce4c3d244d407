"""Reads for the OAuth side: the client at the token endpoint, consents and connected apps."""

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Max
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from oauth2_provider.scopes import get_scopes_backend

from accounts.models import User
from partners.models import Application, ApplicationReview, Consent, Partner


@functools.cache
def _client_lookup_sql() -> str:
    """The app by client_id, with its partner's and its review's status, in one statement.
    Written out once per process: the ORM compiles the same select_related query (fifty
    columns of three tables) anew on every call, which was a third of a grant's CPU time."""
    quote = connection.ops.quote_name
    app, partner, review = Application._meta, Partner._meta, ApplicationReview._meta
    # Only quoted table and column names from the models go into the text; the client_id
    # is a query parameter.
    return (
        f"SELECT a.*, p.{quote(partner.pk.column)} AS tokenpass_partner_pk, "  # noqa: S608
        f"p.{quote(partner.get_field('status').column)} AS tokenpass_partner_status, "
        f"r.{quote(review.pk.column)} AS tokenpass_review_pk, "
        f"r.{quote(review.get_field('status').column)} AS tokenpass_review_status "
        f"FROM {quote(app.db_table)} a "
        f"LEFT JOIN {quote(partner.db_table)} p "
        f"ON p.{quote(partner.pk.column)} = a.{quote(app.get_field('partner').column)} "
        f"LEFT JOIN {quote(review.db_table)} r "
        f"ON r.{quote(review.get_field('application').column)} = a.{quote(app.pk.column)} "
        f"WHERE a.{quote(app.get_field('client_id').column)} = %s"
    )


def application_for_client_id(*, client_id: str) -> Application | None:
    """The app with this client_id, or None, in one query and with its partner and review
    loaded as select_related would leave them, so that Application.is_usable needs no further
    query. Of the partner and the review only the status (and key) is read: their other
    fields are deferred and load on first access."""
    found = list(Application.objects.raw(_client_lookup_sql(), [client_id]))
    if not found:
        return None
    application = found[0]
    extra = application.__dict__
    partner_pk, partner_status = (
        extra.pop("tokenpass_partner_pk"),
        extra.pop("tokenpass_partner_status"),
    )
    review_pk, review_status = (
        extra.pop("tokenpass_review_pk"),
        extra.pop("tokenpass_review_status"),
    )
    db = application._state.db
    partner = (
        Partner.from_db(db, [Partner._meta.pk.attname, "status"], [partner_pk, partner_status])
        if partner_pk is not None
        else None
    )
    review = (
        ApplicationReview.from_db(
            db, ["id", "application_id", "status"], [review_pk, application.pk, review_status]
        )
        if review_pk is not None
        else None
    )
    Application._meta.get_field("partner").set_cached_value(application, partner)
    Application.review.related.set_cached_value(application, review)
    return application


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
