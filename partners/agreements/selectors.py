"""Reads of agreements. The wallet's split hook calls these at capture time."""

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q, QuerySet, Sum

from partners.agreements.models import Agreement, SplitLine


@dataclass(frozen=True)
class AgreementsInForce:
    """The agreements that share a capture: at most one revenue share for the app's partner,
    at most one capability purchase for the model's vendor, and the co-building agreements
    on the model (in primary-key order)."""

    app_share: Agreement | None = None
    vendor: Agreement | None = None
    cobuilding: list[Agreement] = field(default_factory=list)


def agreements_at(*, at: datetime) -> QuerySet[Agreement]:
    return Agreement.objects.filter(effective_from__lte=at).filter(
        Q(effective_to__isnull=True) | Q(effective_to__gt=at)
    )


def agreements_in_force(
    *,
    app_id: int,
    app_partner_id: int | None,
    model_name: str,
    model_vendor_id: int | None,
    at: datetime,
) -> AgreementsInForce:
    """The agreements in force at ``at`` for a capture by ``app_id`` on ``model_name``. An
    agreement for one app (or one model) wins over the partner-wide one. One query: every
    candidate of the three kinds, chosen among here."""
    wanted = Q(kind=Agreement.Kind.CO_BUILDING, model_name=model_name)
    if app_partner_id is not None:
        wanted |= Q(kind=Agreement.Kind.REVENUE_SHARE, partner_id=app_partner_id) & (
            Q(app_id=app_id) | Q(app__isnull=True)
        )
    if model_vendor_id is not None:
        wanted |= Q(kind=Agreement.Kind.CAPABILITY_PURCHASE, partner_id=model_vendor_id) & (
            Q(model_name=model_name) | Q(model_name="")
        )
    found: dict[str, list[Agreement]] = {kind: [] for kind in Agreement.Kind.values}
    for agreement in agreements_at(at=at).filter(wanted).order_by("pk"):
        found[agreement.kind].append(agreement)
    # The app-specific share first, then the partner-wide one; the model-specific purchase
    # first, then the one for all the vendor's models; ties by primary key.
    shares = sorted(found[Agreement.Kind.REVENUE_SHARE], key=lambda a: (a.app_id is None, a.pk))
    purchases = sorted(
        found[Agreement.Kind.CAPABILITY_PURCHASE], key=lambda a: (a.model_name == "", a.pk)
    )
    return AgreementsInForce(
        app_share=shares[0] if shares else None,
        vendor=purchases[0] if purchases else None,
        cobuilding=found[Agreement.Kind.CO_BUILDING],
    )


def agreement_period_tally(
    *, agreement_id: int, role: str, since: datetime, field_name: str
) -> int:
    """Sum of ``field_name`` (gross or amount) of the agreement's split lines of ``role``
    posted since ``since``: the volume a tier or a commitment has already seen this month."""
    total = SplitLine.objects.filter(
        agreement_id=agreement_id, role=role, posted_at__gte=since
    ).aggregate(total=Sum(field_name))["total"]
    return int(total or 0)
