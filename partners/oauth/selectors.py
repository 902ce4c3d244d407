"""Reads for the OAuth side: consents and connected apps."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Max
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from oauth2_provider.scopes import get_scopes_backend

from accounts.models import User
from partners.models import Application, Consent


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
