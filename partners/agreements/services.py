"""Writes of agreements and of split attribution.

Agreement writes take one transaction-scoped advisory lock, so that the overlap and the
"could pay out more than the charge" checks see every other agreement written concurrently.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Max, Q, QuerySet
from django.utils.translation import gettext as _

from partners.agreements.models import BPS, Agreement, SplitLine

# pg_advisory_xact_lock(namespace, key) namespaces of this module.
AGREEMENT_WRITE_LOCK = (0x7A6E0001, 0)
SPLIT_LOCK_NAMESPACE = 0x7A6E0002

PRICE_FIELDS = ("input_per_million", "cached_input_per_million", "output_per_million")


def _overlapping(agreement: Agreement) -> QuerySet[Agreement]:
    """Other agreements whose period intersects this one's ([from, to), to empty = open)."""
    others = Agreement.objects.exclude(pk=agreement.pk) if agreement.pk else Agreement.objects.all()
    if agreement.effective_to is not None:
        others = others.filter(effective_from__lt=agreement.effective_to)
    return others.filter(
        Q(effective_to__isnull=True) | Q(effective_to__gt=agreement.effective_from)
    )


def _max_bps(agreement: Agreement) -> int:
    rates = [agreement.share_bps]
    if isinstance(agreement.tiers, list):
        rates += [int(tier["bps"]) for tier in agreement.tiers if isinstance(tier, dict)]
    return max(rates)


def _tiers_errors(tiers: Any) -> list[str]:
    if tiers in (None, ""):
        return []
    if not isinstance(tiers, list):
        return [_('Tiers must be a list of {"from": threshold, "bps": rate}.')]
    errors = []
    previous = 0
    for tier in tiers:
        if not isinstance(tier, dict) or set(tier) != {"from", "bps"}:
            return [_('Each tier needs exactly a "from" threshold and a "bps" rate.')]
        threshold, bps = tier["from"], tier["bps"]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (threshold, bps)):
            return [_("Tier thresholds and rates are integers.")]
        if threshold <= previous:
            errors.append(_("Tier thresholds must be positive and strictly increasing."))
        if not 0 <= bps <= BPS:
            errors.append(_("A tier rate must be between 0 and 10000 basis points."))
        previous = threshold
    return errors


def agreement_validate(*, agreement: Agreement) -> None:
    """Raise ValidationError (by field) unless the agreement is consistent on its own and
    with the other agreements in force over its period: no overlapping version of the same
    partner, model and subject; rates within [0, 10000] bps; tiers strictly increasing; and
    no set of revenue shares that could together pay out more than a charge."""
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    kind = agreement.kind
    if isinstance(agreement.share_bps, bool) or not isinstance(agreement.share_bps, int):
        add("share_bps", _("The share is an integer number of basis points."))
    elif not 0 <= agreement.share_bps <= BPS:
        add("share_bps", _("A share must be between 0 and 10000 basis points."))
    for name in PRICE_FIELDS:
        value = getattr(agreement, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            add(name, _("Prices are non-negative integers per million tokens."))
    if (
        agreement.effective_from
        and agreement.effective_to
        and agreement.effective_to <= agreement.effective_from
    ):
        add("effective_to", _("The end must be after the start."))
    if agreement.committed_amount is not None and agreement.committed_amount < 0:
        add("committed_amount", _("The commitment cannot be negative."))

    if kind == Agreement.Kind.REVENUE_SHARE:
        for message in _tiers_errors(agreement.tiers):
            add("tiers", message)
        if agreement.model_name:
            add("model_name", _("A revenue share covers apps, not a model."))
        if any(getattr(agreement, name) for name in PRICE_FIELDS):
            add("input_per_million", _("A revenue share has no token prices."))
        if agreement.committed_amount is not None:
            add("committed_amount", _("Only co-building has a commitment."))
        app = agreement.app if agreement.app_id else None
        if app is not None and app.partner_id != agreement.partner_id:
            add("app", _("The app belongs to another partner."))
    elif kind in (Agreement.Kind.CAPABILITY_PURCHASE, Agreement.Kind.CO_BUILDING):
        if agreement.app_id:
            add("app", _("This cooperation model is paid per model, not per app."))
        if agreement.tiers:
            add("tiers", _("Only revenue sharing has volume tiers."))
        if not any(getattr(agreement, name) for name in PRICE_FIELDS):
            add("input_per_million", _("Give at least one price per million tokens."))
        if kind == Agreement.Kind.CAPABILITY_PURCHASE:
            if agreement.share_bps:
                add("share_bps", _("A capability purchase is paid by price, not by share."))
            if agreement.committed_amount is not None:
                add("committed_amount", _("Only co-building has a commitment."))
        else:
            if not agreement.model_name:
                add("model_name", _("Name the model served on the co-built capacity."))
            if agreement.committed_amount is None:
                add("committed_amount", _("Co-building needs a committed amount per month."))
    else:
        add("kind", _("Choose a cooperation model."))

    if errors or not agreement.effective_from or not agreement.partner_id:
        if errors:
            raise ValidationError(errors)
        return

    overlapping = _overlapping(agreement)
    same_subject = overlapping.filter(
        partner_id=agreement.partner_id,
        kind=kind,
        app_id=agreement.app_id,
        model_name=agreement.model_name,
    )
    if same_subject.exists():
        add(
            "effective_from",
            _("Another version for this partner, model and subject is in force in this period."),
        )

    # Revenue shares that can stack on one charge: the app partner's share and every
    # co-building share on the charge's model. Checked over the whole period (conservative).
    if kind == Agreement.Kind.REVENUE_SHARE:
        cobuild_by_model: dict[str, int] = {}
        for other in overlapping.filter(kind=Agreement.Kind.CO_BUILDING):
            cobuild_by_model[other.model_name] = (
                cobuild_by_model.get(other.model_name, 0) + other.share_bps
            )
        stacked = _max_bps(agreement) + max(cobuild_by_model.values(), default=0)
    elif kind == Agreement.Kind.CO_BUILDING:
        app_shares = [_max_bps(a) for a in overlapping.filter(kind=Agreement.Kind.REVENUE_SHARE)]
        cobuild = overlapping.filter(kind=kind, model_name=agreement.model_name)
        stacked = (
            agreement.share_bps + sum(a.share_bps for a in cobuild) + max(app_shares, default=0)
        )
    else:
        stacked = 0
    if stacked > BPS:
        add(
            "share_bps",
            _(
                "With the revenue shares already in force in this period, the payouts could "
                "exceed the charge (%(bps)s basis points in all)."
            )
            % {"bps": stacked},
        )
    if errors:
        raise ValidationError(errors)


def _write_lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", AGREEMENT_WRITE_LOCK)


@transaction.atomic
def agreement_create(
    *,
    partner_id: int,
    kind: str,
    effective_from: datetime,
    effective_to: datetime | None = None,
    app_id: int | None = None,
    model_name: str = "",
    share_bps: int = 0,
    tiers: list[dict[str, int]] | None = None,
    input_per_million: int = 0,
    cached_input_per_million: int = 0,
    output_per_million: int = 0,
    committed_amount: int | None = None,
    note: str = "",
    created_by_id: int | None = None,
    supersede: bool = False,
) -> Agreement:
    """Create the next version of an agreement. With ``supersede``, the version of the same
    partner, model and subject in force at ``effective_from`` ends there (it must have started
    before). Raises ValidationError, and then nothing is written."""
    _write_lock()
    subject = {
        "partner_id": partner_id,
        "kind": kind,
        "app_id": app_id,
        "model_name": model_name,
    }
    if supersede:
        current = (
            Agreement.objects.select_for_update()
            .filter(**subject, effective_from__lt=effective_from)
            .filter(Q(effective_to__isnull=True) | Q(effective_to__gt=effective_from))
            .first()
        )
        if current is not None:
            current.effective_to = effective_from
            current.save(update_fields=["effective_to"])
    latest = Agreement.objects.filter(**subject).aggregate(v=Max("version"))["v"] or 0
    agreement = Agreement(
        **subject,
        version=latest + 1,
        effective_from=effective_from,
        effective_to=effective_to,
        share_bps=share_bps,
        tiers=tiers or [],
        input_per_million=input_per_million,
        cached_input_per_million=cached_input_per_million,
        output_per_million=output_per_million,
        committed_amount=committed_amount,
        note=note,
        created_by_id=created_by_id,
    )
    agreement.full_clean()
    agreement.save()
    return agreement


@transaction.atomic
def agreement_end(*, agreement_id: int, effective_to: datetime) -> Agreement:
    """End an agreement at ``effective_to`` (exclusive). Only ever shortens a version: the
    terms themselves never change. Raises ValidationError."""
    _write_lock()
    agreement = Agreement.objects.select_for_update().get(pk=agreement_id)
    if agreement.effective_to is not None and effective_to > agreement.effective_to:
        raise ValidationError(
            {"effective_to": [_("An agreement can be shortened, not extended: add a version.")]}
        )
    agreement.effective_to = effective_to
    agreement.full_clean()
    agreement.save(update_fields=["effective_to"])
    return agreement


def split_lock(*, agreement_ids: Sequence[int]) -> None:
    """Serialize the captures that count against the same tier or commitment: a
    transaction-scoped advisory lock per agreement, taken in id order. Inside a transaction."""
    with connection.cursor() as cursor:
        for agreement_id in sorted(set(agreement_ids)):
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", (SPLIT_LOCK_NAMESPACE, agreement_id)
            )


@dataclass(frozen=True)
class SplitLineDraft:
    partner_id: int
    role: str
    agreement: Agreement
    app_id: int
    model_name: str
    gross: int
    amount: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


def split_lines_record(
    *, ledger_transaction_id: int, posted_at: datetime, lines: Sequence[SplitLineDraft]
) -> list[SplitLine]:
    """Insert the attribution of one ledger transaction's payable legs. Must run in the
    transaction that posted it."""
    assert transaction.get_connection().in_atomic_block, "split lines go with their posting"
    return SplitLine.objects.bulk_create(
        [
            SplitLine(
                ledger_transaction_id=ledger_transaction_id,
                posted_at=posted_at,
                partner_id=line.partner_id,
                role=line.role,
                agreement=line.agreement,
                agreement_version=line.agreement.version,
                app_id=line.app_id,
                model_name=line.model_name,
                gross=line.gross,
                amount=line.amount,
                input_tokens=line.input_tokens,
                cached_input_tokens=line.cached_input_tokens,
                output_tokens=line.output_tokens,
            )
            for line in lines
        ]
    )
