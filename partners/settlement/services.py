"""Settlement writes: closing a period into a statement, and the payout workflow.

Exactly once. ``settlement_statement_close`` aggregates and inserts the statement and its lines
in ONE transaction under a transaction-scoped advisory lock per partner, after re-reading
whether the statement exists: a run that dies half way leaves nothing (PostgreSQL rolls the
transaction back when the connection drops) and its retry starts over; two runs at once
serialize on the lock and the second finds the first one's statement; a closed period is never
recomputed. The unique constraint (partner, period kind, period start) is the backstop.

Ledger postings of the workflow (adjustments, payouts) use transaction kinds of their own, so
that the period's earnings (captures, charges, refunds) never count them.
"""

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from partners.models import Partner
from partners.settlement import selectors
from partners.settlement.models import Statement, StatementLine
from partners.settlement.periods import Period, period_parse
from wallet.ledger import ledger_post, partner_payable_account, system_account
from wallet.models import LedgerAccount

CLOSE_LOCK_NAMESPACE = 0x7A6E0003
PAYOUT_TX_KIND, ADJUSTMENT_TX_KIND = selectors.SETTLEMENT_TX_KINDS
# A platform account (no owner) that receives every payout: the money has left the platform.
PAYOUTS_ACCOUNT_KIND = LedgerAccount.Kind.PARTNER_PAYOUTS


class PeriodNotOver(Exception):
    """The period (plus SETTLEMENT_CLOSE_GRACE) has not ended yet."""


class WorkflowError(ValidationError):
    """The statement is not in a state that allows this step."""


def _step_pause() -> None:
    # Test hook: widens the window between the steps of a close, so that a test can kill the
    # worker in the middle of one. Zero (no pause) outside tests.
    delay = float(getattr(settings, "SETTLEMENT_STEP_DELAY_SECONDS", 0) or 0)
    if delay:
        time.sleep(delay)


def payouts_account() -> LedgerAccount:
    account, _created = LedgerAccount.objects.get_or_create(
        kind=PAYOUTS_ACCOUNT_KIND, user=None, partner=None
    )
    return account


def minimum_payout(*, currency: str) -> int:
    """SETTLEMENT_MINIMUM_PAYOUT[currency], else its "*" entry (platform tokens)."""
    table = settings.SETTLEMENT_MINIMUM_PAYOUT
    return int(table.get(currency, table.get("*", 1)))


def _webhook(*, partner: Partner, event_type: str, statement: Statement) -> None:
    """Queue a partner webhook in the caller's transaction (the outbox delivers on commit)."""
    from partners.webhooks.services import webhook_event_enqueue

    webhook_event_enqueue(
        partner=partner,
        event_type=event_type,
        payload=selectors.statement_payload(statement=statement),
    )


@dataclass(frozen=True)
class CloseResult:
    statement: Statement
    created: bool


@transaction.atomic(durable=True)
def settlement_run_execute(
    *, period: str | Period, partner_ids: list[int] | None = None, now: datetime | None = None
) -> list[CloseResult]:
    """Close ``period`` for the given partners (default: every partner with a payable
    account): one statement each, with lines by app, model, agreement and role, computed from
    what was POSTED to the partner's payable account in the period.

    One transaction: the partners' advisory locks (in id order), a re-read of the statements
    that exist, one set-based aggregation for the partners still open, the inserts. Idempotent
    (see the module docstring). Raises InvalidPeriod or PeriodNotOver."""
    period = period if isinstance(period, Period) else period_parse(period)
    now = now or timezone.now()
    if now < period.ends_at + settings.SETTLEMENT_CLOSE_GRACE:
        raise PeriodNotOver(period.label)
    every_partner = partner_ids is None
    if partner_ids is None:
        partner_ids = selectors.settlement_partner_ids()
    # Unknown ids are left out (a partner is never deleted: PROTECT everywhere).
    partner_ids = sorted(Partner.objects.in_bulk(set(partner_ids)))
    with connection.cursor() as cursor:
        for partner_id in partner_ids:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", (CLOSE_LOCK_NAMESPACE, partner_id)
            )
    existing = {
        s.partner_id: s
        for s in Statement.objects.filter(
            partner_id__in=partner_ids, period_kind=period.kind, period_start=period.start
        )
    }
    open_ids = [pk for pk in partner_ids if pk not in existing]
    partners = Partner.objects.in_bulk(open_ids)
    aggregates = selectors.period_aggregates(
        partner_ids=open_ids, period=period, every_partner=every_partner
    )
    _step_pause()
    results = {pk: CloseResult(statement, False) for pk, statement in existing.items()}
    created = _statements_insert(
        partners=[partners[pk] for pk in open_ids], period=period, aggregates=aggregates
    )
    results.update({statement.partner_id: CloseResult(statement, True) for statement in created})
    return [results[pk] for pk in partner_ids]


def settlement_statement_close(
    *, partner_id: int, period: str | Period, now: datetime | None = None
) -> CloseResult:
    """Close ``period`` for one partner (see settlement_run_execute). Raises InvalidPeriod,
    PeriodNotOver or Partner.DoesNotExist."""
    if not Partner.objects.filter(pk=partner_id).exists():
        raise Partner.DoesNotExist(partner_id)
    return settlement_run_execute(period=period, partner_ids=[partner_id], now=now)[0]


def _statements_insert(
    *, partners: list[Partner], period: Period, aggregates: dict[int, selectors.PeriodAggregate]
) -> list[Statement]:
    """Insert the partners' statements and their lines (inside the run's transaction, under
    its locks), in a handful of bulk queries whatever the number of partners. A monthly
    statement takes in the partner's statements carried forward and not yet taken."""
    if not partners:
        return []
    monthly = period.kind == Statement.Period.MONTH
    carried: dict[int, list[Statement]] = {partner.pk: [] for partner in partners}
    if monthly:
        for previous in (
            Statement.objects.select_for_update()
            .filter(
                partner_id__in=list(carried),
                period_kind=Statement.Period.MONTH,
                status=Statement.Status.CARRIED_FORWARD,
                carried_into__isnull=True,
                period_start__lt=period.start,
            )
            .order_by("partner_id", "period_start")
        ):
            carried[previous.partner_id].append(previous)
    statements = Statement.objects.bulk_create(
        [
            Statement(
                partner=partner,
                period_kind=period.kind,
                period_start=period.start,
                period_end=period.end,
                status=Statement.Status.DRAFT if monthly else Statement.Status.CLOSED,
                currency=getattr(partner, "payout_currency", "") or "",
                earnings=aggregates[partner.pk].ledger_total,
                carried_in=sum(s.total for s in carried[partner.pk]),
                total=aggregates[partner.pk].ledger_total
                + sum(s.total for s in carried[partner.pk]),
            )
            for partner in partners
        ]
    )
    _step_pause()
    lines: list[StatementLine] = []
    for statement in statements:
        aggregate = aggregates[statement.partner_id]
        lines += [
            StatementLine(
                statement=statement,
                kind=line.kind,
                role=line.role,
                app_id=line.app_id,
                model_name=line.model_name,
                agreement_id=line.agreement_id,
                agreement_version=line.agreement_version,
                captures=line.captures,
                gross=line.gross,
                amount=line.amount,
                input_tokens=line.input_tokens,
                cached_input_tokens=line.cached_input_tokens,
                output_tokens=line.output_tokens,
            )
            for line in aggregate.lines
        ]
        if aggregate.unattributed:
            lines.append(
                StatementLine(
                    statement=statement,
                    kind=StatementLine.Kind.UNATTRIBUTED,
                    amount=aggregate.unattributed,
                    reason=_("Payable movements without a split attribution."),
                )
            )
        for previous in carried[statement.partner_id]:
            lines.append(
                StatementLine(
                    statement=statement,
                    kind=StatementLine.Kind.CARRIED_FORWARD,
                    amount=previous.total,
                    carried_from=previous,
                    reason=previous.period_label,
                )
            )
            Statement.objects.filter(pk=previous.pk).update(carried_into=statement)
    StatementLine.objects.bulk_create(lines, batch_size=5000)
    return statements


def _lock_statement(statement_id: int) -> Statement:
    statement = Statement.objects.select_for_update().select_related("partner").get(pk=statement_id)
    if statement.period_kind != Statement.Period.MONTH:
        raise WorkflowError(_("Daily statements are a closing record; they are not paid out."))
    return statement


@transaction.atomic(durable=True)
def statement_approve(*, statement_id: int, actor: User) -> Statement:
    """Approve a draft monthly statement. Below the minimum payout of its currency (or not
    positive) it is carried forward into the partner's next monthly statement instead.
    Issues the "statement.issued" webhook in the same transaction. Raises WorkflowError."""
    statement = _lock_statement(statement_id)
    if statement.status != Statement.Status.DRAFT:
        raise WorkflowError(_("Only a draft statement can be approved."))
    minimum = minimum_payout(currency=statement.currency)
    statement.status = (
        Statement.Status.APPROVED
        if statement.total >= minimum and statement.total > 0
        else Statement.Status.CARRIED_FORWARD
    )
    statement.approved_by = actor
    statement.approved_at = timezone.now()
    statement.save(update_fields=["status", "approved_by", "approved_at"])
    _webhook(partner=statement.partner, event_type="statement.issued", statement=statement)
    return statement


@transaction.atomic(durable=True)
def statement_pay(*, statement_id: int, actor: User, payout_reference: str) -> Statement:
    """Record the payout of an approved statement: its total moves from the partner's payable
    account to the payouts account in one ledger transaction, and "statement.paid" is queued.
    Raises WorkflowError (wrong status, no reference)."""
    payout_reference = (payout_reference or "").strip()
    if not payout_reference or len(payout_reference) > 200:
        raise WorkflowError(
            {"payout_reference": [_("Give the payout reference (200 characters at most).")]}
        )
    statement = _lock_statement(statement_id)
    if statement.status != Statement.Status.APPROVED:
        raise WorkflowError(_("Only an approved statement can be paid."))
    ledger_tx = ledger_post(
        kind=PAYOUT_TX_KIND,
        reference=f"settlement-payout:{statement.pk}",
        legs=[
            (partner_payable_account(statement.partner), -statement.total),
            (payouts_account(), statement.total),
        ],
        metadata={"statement": statement.pk, "payout_reference": payout_reference},
    )
    statement.status = Statement.Status.PAID
    statement.paid_by = actor
    statement.paid_at = timezone.now()
    statement.payout_reference = payout_reference
    statement.payout_transaction = ledger_tx
    statement.save(
        update_fields=["status", "paid_by", "paid_at", "payout_reference", "payout_transaction"]
    )
    _webhook(partner=statement.partner, event_type="statement.paid", statement=statement)
    return statement


@transaction.atomic(durable=True)
def statement_adjust(*, statement_id: int, actor: User, amount: Any, reason: str) -> StatementLine:
    """Add a staff adjustment to a draft monthly statement: a new line with its reason and a
    ledger transaction between the platform's revenue and the partner's payable account
    (positive: the partner is owed more). Lines are never edited. Raises WorkflowError."""
    reason = (reason or "").strip()
    errors: dict[str, list[str]] = {}
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
        errors["amount"] = [_("The adjustment is a non-zero integer number of tokens.")]
    elif abs(amount) > settings.WALLET_MAX_AMOUNT:
        errors["amount"] = [_("The adjustment is too large.")]
    if not reason or len(reason) > 500:
        errors["reason"] = [_("Give the reason for the adjustment (500 characters at most).")]
    if errors:
        raise WorkflowError(errors)
    statement = _lock_statement(statement_id)
    if statement.status != Statement.Status.DRAFT:
        raise WorkflowError(_("Only a draft statement can be adjusted."))
    ledger_tx = ledger_post(
        kind=ADJUSTMENT_TX_KIND,
        reference=f"settlement-adjustment:{uuid.uuid4().hex}",
        legs=[
            (system_account(LedgerAccount.Kind.PLATFORM_REVENUE), -amount),
            (partner_payable_account(statement.partner), amount),
        ],
        metadata={"statement": statement.pk, "reason": reason, "actor": actor.pk},
    )
    line = StatementLine.objects.create(
        statement=statement,
        kind=StatementLine.Kind.ADJUSTMENT,
        amount=amount,
        reason=reason,
        created_by=actor,
        ledger_transaction=ledger_tx,
    )
    statement.adjustments += amount
    statement.total += amount
    statement.save(update_fields=["adjustments", "total"])
    return line
