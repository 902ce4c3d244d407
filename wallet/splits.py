"""Who earns what from a charge: the agreements in force at capture time (see
partners.agreements.split for the arithmetic, docs/settlement.md for the rules).

Contract: ``capture_split`` returns legs of positive integers that sum to exactly ``amount``
(the platform's revenue takes the remainder); the capture posts them in the same ledger
transaction as the debit of the user's wallet, then calls ``capture_split_record`` in that
transaction so that every payable leg is attributed to (partner, app, model, agreement
version)."""

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from partners.agreements import selectors as agreement_selectors
from partners.agreements import services as agreement_services
from partners.agreements.models import Agreement, SplitLine
from partners.agreements.split import legs_cap, tiered_share, tiers_parse, tokens_cost
from partners.models import Application
from wallet.ledger import Leg, shared_accounts_get
from wallet.models import LedgerAccount, LedgerTransaction, Price
from wallet.pricing import Usage

Role = SplitLine.Role


class Split(list[Leg]):
    """The legs of a split, with the attribution of its partner legs."""

    def __init__(self, legs: list[Leg], lines: list[agreement_services.SplitLineDraft]):
        super().__init__(legs)
        self.lines = lines


class SplitContext:
    """What the splits of one batch share, inside its single transaction: the agreements in
    force per (app, model), the partner and platform accounts, the advisory locks (taken once)
    and the month's tallies. The single path reads a tally back from the SplitLine rows it has
    just written; a batch writes its lines at the end, so it carries each tally forward here,
    record after record, and the arithmetic is the same as charging the records one by one."""

    def __init__(self) -> None:
        self.in_force: dict[tuple[Any, ...], Any] = {}
        self.locked: set[int] = set()
        self.tallies: dict[tuple[int, str, str], int] = {}
        self.payables: dict[int, LedgerAccount] = {}
        self.revenue: LedgerAccount | None = None

    def tally(self, *, agreement_id: int, role: str, since: datetime, field_name: str) -> int:
        key = (agreement_id, role, field_name)
        if key not in self.tallies:
            self.tallies[key] = agreement_selectors.agreement_period_tally(
                agreement_id=agreement_id, role=role, since=since, field_name=field_name
            )
        return self.tallies[key]

    def count(self, lines: list[agreement_services.SplitLineDraft]) -> None:
        for line in lines:
            for field_name, value in (("amount", line.amount), ("gross", line.gross)):
                key = (line.agreement.pk, line.role, field_name)
                if key in self.tallies:
                    self.tallies[key] += value


def _month_start(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _in_force(
    *, app: Application, price: Price, at: datetime, context: SplitContext
) -> agreement_selectors.AgreementsInForce:
    model = price.model
    found_key = (app.pk, app.partner_id, model.name, model.vendor_id)
    if found_key not in context.in_force:
        context.in_force[found_key] = agreement_selectors.agreements_in_force(
            app_id=app.pk,
            app_partner_id=app.partner_id,
            model_name=model.name,
            model_vendor_id=model.vendor_id,
            at=at,
        )
    in_force: agreement_selectors.AgreementsInForce = context.in_force[found_key]
    return in_force


def split_prefetch(*, app: Application, price: Price, at: datetime, context: SplitContext) -> None:
    """Read into ``context`` what ``capture_split`` reads first: the agreements in force and
    the accounts their legs and the platform's remainder may go to (two queries, no lock;
    an account not created yet is left to ``capture_split``). A charge calls it before it
    locks the user's wallet, which it then holds that much less long; ``capture_split`` with
    the same ``context`` and ``at`` reads them no more."""
    in_force = _in_force(app=app, price=price, at=at, context=context)
    sharing = [in_force.app_share, in_force.vendor, *in_force.cobuilding]
    partner_ids = {a.partner_id for a in sharing if a is not None} - set(context.payables)
    kinds = [] if context.revenue else [LedgerAccount.Kind.PLATFORM_REVENUE]
    payables, system = shared_accounts_get(partner_ids=partner_ids, kinds=kinds, create=False)
    context.payables.update(payables)
    context.revenue = context.revenue or system.get(LedgerAccount.Kind.PLATFORM_REVENUE)


def capture_split(
    *,
    app: Application,
    price: Price,
    amount: int,
    usage: Usage | None = None,
    at: datetime | None = None,
    context: SplitContext | None = None,
) -> Split:
    """Split ``amount`` between the model vendor (capability purchase), co-builders of the
    model's capacity, the app's partner (revenue share) and the platform's revenue.

    Takes a transaction-scoped advisory lock on each agreement with a volume tier or a
    commitment, so that concurrent captures count the month's volume one after the other.
    Must run inside the capture's transaction. A batch passes one ``context`` for all its
    records (same transaction, same ``at``)."""
    at = at or timezone.now()
    context = context or SplitContext()
    usage = usage or Usage(0, 0, 0)
    if amount <= 0:
        return Split([], [])
    model = price.model
    in_force = _in_force(app=app, price=price, at=at, context=context)
    counted = [a for a in in_force.cobuilding if a.committed_amount is not None]
    if in_force.app_share is not None and in_force.app_share.tiers:
        counted.append(in_force.app_share)
    to_lock = sorted({a.pk for a in counted} - context.locked)
    if to_lock:
        agreement_services.split_lock(agreement_ids=to_lock)
        context.locked.update(to_lock)
    since = _month_start(at)
    tokens = {
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
    }

    def prices(agreement: Agreement) -> dict[str, int]:
        return {
            "input_per_million": agreement.input_per_million,
            "cached_input_per_million": agreement.cached_input_per_million,
            "output_per_million": agreement.output_per_million,
        }

    # (role, agreement, wanted), in order of precedence.
    wanted: list[tuple[str, Agreement, int]] = []
    if in_force.vendor is not None:
        wanted.append(
            (Role.VENDOR_COST, in_force.vendor, tokens_cost(**tokens, **prices(in_force.vendor)))
        )
    for agreement in in_force.cobuilding:
        cost = tokens_cost(**tokens, **prices(agreement))
        if agreement.committed_amount is not None:
            used = context.tally(
                agreement_id=agreement.pk, role=Role.COBUILD_COST, since=since, field_name="amount"
            )
            cost = min(cost, max(0, agreement.committed_amount - used))
        wanted.append((Role.COBUILD_COST, agreement, cost))
    if in_force.app_share is not None:
        share = in_force.app_share
        spent = 0
        if share.tiers:
            spent = context.tally(
                agreement_id=share.pk, role=Role.APP_SHARE, since=since, field_name="gross"
            )
        wanted.append(
            (
                Role.APP_SHARE,
                share,
                tiered_share(
                    spent_before=spent,
                    amount=amount,
                    base_bps=share.share_bps,
                    tiers=tiers_parse(share.tiers),
                ),
            )
        )
    for agreement in in_force.cobuilding:
        if agreement.share_bps:
            wanted.append((Role.COBUILD_SHARE, agreement, amount * agreement.share_bps // 10_000))

    paid = legs_cap(amount=amount, wanted=[want for _, _, want in wanted])
    remainder = amount - sum(paid)
    # The accounts the legs go to, in one query for all of them (and once per batch).
    partner_ids = {
        agreement.partner_id
        for (_r, agreement, _w), share in zip(wanted, paid, strict=True)
        if share
    } - set(context.payables)
    revenue_kinds = (
        [LedgerAccount.Kind.PLATFORM_REVENUE] if remainder and not context.revenue else []
    )
    if partner_ids or revenue_kinds:
        payables, system = shared_accounts_get(partner_ids=partner_ids, kinds=revenue_kinds)
        context.payables.update(payables)
        context.revenue = context.revenue or system.get(LedgerAccount.Kind.PLATFORM_REVENUE)
    legs: list[Leg] = []
    lines = []
    for (role, agreement, _want), share_amount in zip(wanted, paid, strict=True):
        lines.append(
            agreement_services.SplitLineDraft(
                partner_id=agreement.partner_id,
                role=role,
                agreement=agreement,
                app_id=app.pk,
                model_name=model.name,
                gross=amount,
                amount=share_amount,
                **tokens,
            )
        )
        if share_amount:
            legs.append((context.payables[agreement.partner_id], share_amount))
    context.count(lines)
    if remainder:
        assert context.revenue is not None
        legs.append((context.revenue, remainder))
    return Split(legs, lines)


def capture_split_record(*, split: list[Leg], ledger_tx: LedgerTransaction) -> None:
    """Attribute the split's partner legs to ``ledger_tx`` (call in the same transaction)."""
    lines = getattr(split, "lines", [])
    if lines:
        agreement_services.split_lines_record(
            ledger_transaction_id=ledger_tx.pk,
            posted_at=ledger_tx.created_at,
            lines=[replace(line) for line in lines],
        )
