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
    agreement for one app (or one model) wins over the partner-wide one."""
    live = agreements_at(at=at)
    app_share = None
    if app_partner_id is not None:
        app_share = (
            live.filter(kind=Agreement.Kind.REVENUE_SHARE, partner_id=app_partner_id)
            .filter(Q(app_id=app_id) | Q(app__isnull=True))
            .order_by("app_id", "pk")  # NULLs sort last: the app-specific agreement first
            .first()
        )
    vendor = None
    if model_vendor_id is not None:
        vendor = (
            live.filter(kind=Agreement.Kind.CAPABILITY_PURCHASE, partner_id=model_vendor_id)
            .filter(Q(model_name=model_name) | Q(model_name=""))
            .order_by("-model_name", "pk")  # the model-specific agreement first
            .first()
        )
    cobuilding = list(
        live.filter(kind=Agreement.Kind.CO_BUILDING, model_name=model_name).order_by("pk")
    )
    return AgreementsInForce(app_share=app_share, vendor=vendor, cobuilding=cobuilding)


def agreement_period_tally(
    *, agreement_id: int, role: str, since: datetime, field_name: str
) -> int:
    """Sum of ``field_name`` (gross or amount) of the agreement's split lines of ``role``
    posted since ``since``: the volume a tier or a commitment has already seen this month."""
    total = SplitLine.objects.filter(
        agreement_id=agreement_id, role=role, posted_at__gte=since
    ).aggregate(total=Sum(field_name))["total"]
    return int(total or 0)
