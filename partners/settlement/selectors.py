"""Settlement reads: the aggregation of a period, what is due to close, the reconciliation."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Sum

from partners.settlement.models import Statement, StatementLine
from partners.settlement.periods import Period, period_parse
from wallet.models import LedgerAccount, LedgerTransaction

# The ledger transaction kinds of the workflow's own postings (payout, adjustment): never
# earnings of a period.
SETTLEMENT_TX_KINDS = (
    LedgerTransaction.Kind.SETTLEMENT_PAYOUT,
    LedgerTransaction.Kind.SETTLEMENT_ADJUSTMENT,
)


@dataclass(frozen=True)
class AggregateLine:
    kind: str
    role: str
    app_id: int | None
    model_name: str
    agreement_id: int | None
    agreement_version: int | None
    captures: int
    gross: int
    amount: int
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class PeriodAggregate:
    ledger_total: int
    lines: list[AggregateLine]

    @property
    def unattributed(self) -> int:
        return self.ledger_total - sum(line.amount for line in self.lines)


# The partners' split lines posted in the period, by app, model, agreement version and role.
# Set-based over the partners of a run: one pass over the period's rows whatever their number.
EARNINGS_SQL = """
SELECT partner_id, app_id, model_name, agreement_id, agreement_version, role, COUNT(*),
       SUM(gross), SUM(amount), SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens)
FROM partners_splitline
WHERE posted_at >= %(start)s AND posted_at < %(end)s {partners}
GROUP BY partner_id, app_id, model_name, agreement_id, agreement_version, role
ORDER BY partner_id, app_id, model_name, agreement_id, role
"""

# Refunds posted in the period, reversing the partners' legs exactly as wallet_refund does:
# per leg, share * after // amount - share * before // amount (numeric: no 64-bit overflow).
REFUNDS_SQL = """
WITH touched AS (
    SELECT DISTINCT r.charge_id
    FROM wallet_refund r JOIN wallet_ledgertransaction t ON t.id = r.transaction_id
    WHERE t.created_at >= %(start)s AND t.created_at < %(end)s
), refunds AS (
    SELECT r.charge_id, t.created_at AS posted_at, r.amount,
           COALESCE(SUM(r.amount) OVER (
               PARTITION BY r.charge_id ORDER BY r.id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
    FROM wallet_refund r JOIN wallet_ledgertransaction t ON t.id = r.transaction_id
    WHERE r.charge_id IN (SELECT charge_id FROM touched)
)
SELECT s.partner_id, s.app_id, s.model_name, s.agreement_id, s.agreement_version, s.role,
       COUNT(*),
       -SUM(div(s.amount::numeric * (f.before + f.amount), c.amount)
            - div(s.amount::numeric * f.before, c.amount))
FROM refunds f
JOIN wallet_charge c ON c.id = f.charge_id
JOIN partners_splitline s ON s.ledger_transaction_id = c.transaction_id AND s.amount > 0
WHERE f.posted_at >= %(start)s AND f.posted_at < %(end)s {s_partners}
GROUP BY s.partner_id, s.app_id, s.model_name, s.agreement_id, s.agreement_version, s.role
ORDER BY s.partner_id, s.app_id, s.model_name, s.agreement_id, s.role
"""

# Every movement of the partners' payable accounts posted in the period, except the
# settlement workflow's own postings.
LEDGER_SQL = """
SELECT a.partner_id, COALESCE(SUM(e.amount), 0)
FROM wallet_ledgerentry e
JOIN wallet_ledgertransaction t ON t.id = e.transaction_id
JOIN wallet_ledgeraccount a ON a.id = e.account_id
WHERE a.kind = 'partner_payable' {a_partners}
  AND t.created_at >= %(start)s AND t.created_at < %(end)s
  AND t.kind <> ALL(%(excluded)s)
GROUP BY a.partner_id
"""


def _params(*, partner_ids: list[int], period: Period) -> dict[str, Any]:
    return {
        "partners": [int(pk) for pk in partner_ids],
        "start": period.starts_at,
        "end": period.ends_at,
        "excluded": list(SETTLEMENT_TX_KINDS),
    }


def _sql(template: str, *, every_partner: bool) -> str:
    """The query for some partners, or for every partner: then without a partner filter, so
    that PostgreSQL reads the period's rows in one pass instead of partner by partner."""
    filters = {"partners": "", "s_partners": "", "a_partners": ""}
    if not every_partner:
        filters = {
            name: f"AND {alias}partner_id = ANY(%(partners)s::bigint[])"
            for name, alias in (("partners", ""), ("s_partners", "s."), ("a_partners", "a."))
        }
    return (
        template.replace("{partners}", filters["partners"])
        .replace("{s_partners}", filters["s_partners"])
        .replace("{a_partners}", filters["a_partners"])
    )


def period_ledger_totals(
    *, partner_ids: list[int], period: Period, every_partner: bool = False
) -> dict[int, int]:
    """Each partner's payable movements posted in the period (0 if none)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _sql(LEDGER_SQL, every_partner=every_partner),
            _params(partner_ids=partner_ids, period=period),
        )
        found = {int(pk): int(total) for pk, total in cursor.fetchall()}
    return {pk: found.get(pk, 0) for pk in partner_ids}


def period_ledger_total(*, partner_id: int, period: Period) -> int:
    return period_ledger_totals(partner_ids=[partner_id], period=period)[partner_id]


def period_aggregates(
    *, partner_ids: list[int], period: Period, every_partner: bool = False
) -> dict[int, PeriodAggregate]:
    """The statement lines of ``period`` for each partner, and the ledger's total beside
    them (they differ only if something moved a payable account without a split attribution).
    Three set-based queries, whatever the number of partners; with ``every_partner`` the
    queries read the whole period and the partners not asked for are dropped."""
    params = _params(partner_ids=partner_ids, period=period)
    lines: dict[int, list[AggregateLine]] = {pk: [] for pk in partner_ids}
    with connection.cursor() as cursor:
        cursor.execute(_sql(EARNINGS_SQL, every_partner=every_partner), params)
        for row in cursor.fetchall():
            partner, app, model, agreement, version, role, n, gross, amount, i, c, o = row
            if int(partner) not in lines:
                continue
            lines[int(partner)].append(
                AggregateLine(
                    StatementLine.Kind.EARNING,
                    role,
                    app,
                    model,
                    agreement,
                    version,
                    int(n),
                    int(gross),
                    int(amount),
                    int(i),
                    int(c),
                    int(o),
                )
            )
        cursor.execute(_sql(REFUNDS_SQL, every_partner=every_partner), params)
        for partner, app, model, agreement, version, role, n, amount in cursor.fetchall():
            if int(amount) and int(partner) in lines:
                lines[int(partner)].append(
                    AggregateLine(
                        StatementLine.Kind.REFUND,
                        role,
                        app,
                        model,
                        agreement,
                        version,
                        int(n),
                        0,
                        int(amount),
                    )
                )
    totals = period_ledger_totals(
        partner_ids=partner_ids, period=period, every_partner=every_partner
    )
    return {pk: PeriodAggregate(ledger_total=totals[pk], lines=lines[pk]) for pk in partner_ids}


def period_aggregate(*, partner_id: int, period: Period) -> PeriodAggregate:
    return period_aggregates(partner_ids=[partner_id], period=period)[partner_id]


def settlement_partner_ids() -> list[int]:
    """Partners that have a payable account (anyone a split ever paid)."""
    return list(
        LedgerAccount.objects.filter(kind=LedgerAccount.Kind.PARTNER_PAYABLE)
        .order_by("partner_id")
        .values_list("partner_id", flat=True)
    )


def periods_due(*, now: datetime) -> list[Period]:
    """The recent periods that have ended (plus the grace): the last
    SETTLEMENT_CATCH_UP_DAYS days and the previous month."""
    grace = settings.SETTLEMENT_CLOSE_GRACE
    today = (now - grace).date()
    days = [
        period_parse(str(today - timedelta(days=back)))
        for back in range(1, settings.SETTLEMENT_CATCH_UP_DAYS + 1)
    ]
    this_month = today.replace(day=1)
    previous = (this_month - timedelta(days=1)).replace(day=1)
    return [*days, period_parse(previous.strftime("%Y-%m"))]


def settlement_due(*, now: datetime) -> list[tuple[int, str]]:
    """(partner id, period) pairs that have ended and have no statement yet."""
    due = []
    partner_ids = settlement_partner_ids()
    for period in periods_due(now=now):
        closed = set(
            Statement.objects.filter(
                period_kind=period.kind, period_start=period.start
            ).values_list("partner_id", flat=True)
        )
        due += [(pk, period.label) for pk in partner_ids if pk not in closed]
    return due


def statement_payload(*, statement: Statement) -> dict[str, Any]:
    """The statement as partners see it in webhooks and the API."""
    return {
        "id": statement.pk,
        "period": statement.period_label,
        "period_kind": statement.period_kind,
        "status": statement.status,
        "currency": statement.currency,
        "earnings": statement.earnings,
        "carried_in": statement.carried_in,
        "adjustments": statement.adjustments,
        "total": statement.total,
        "payout_reference": statement.payout_reference,
    }


# Reconciliation -------------------------------------------------------------------------------


@dataclass
class ReconciliationRow:
    partner_id: int
    partner: str
    statement_id: int | None
    statement_earnings: int | None
    ledger: int
    attributed: int
    unattributed: int

    @property
    def ok(self) -> bool:
        return (
            self.statement_earnings == self.ledger
            and self.attributed == self.ledger
            and self.unattributed == 0
        )


@dataclass
class Reconciliation:
    period: Period
    rows: list[ReconciliationRow] = field(default_factory=list)
    # Charges captured in the period against the legs their ledger transactions posted.
    captured: int = 0
    captured_legs: int = 0
    split_lines: int = 0
    ledger_from_captures: int = 0
    # Workflow: adjustments and payouts of this period's statements against the ledger.
    adjustments: int = 0
    ledger_adjustments: int = 0
    paid: int = 0
    ledger_payouts: int = 0

    @property
    def problems(self) -> list[str]:
        found = [f"partner {row.partner_id} ({row.partner})" for row in self.rows if not row.ok]
        if self.captured != self.captured_legs:
            found.append("charges captured differ from their posted legs")
        if self.split_lines != self.ledger_from_captures:
            found.append("split lines differ from the payable legs of captures")
        if self.adjustments != self.ledger_adjustments:
            found.append("adjustment lines differ from the ledger")
        if self.paid != self.ledger_payouts:
            found.append("paid statements differ from the payout postings")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems


CAPTURE_TOTALS_SQL = """
WITH txs AS (
    SELECT id FROM wallet_ledgertransaction
    WHERE kind IN ('capture', 'charge') AND created_at >= %(start)s AND created_at < %(end)s
)
SELECT
  (SELECT COALESCE(SUM(c.amount), 0) FROM wallet_charge c WHERE c.transaction_id IN (SELECT id FROM txs)),
  (SELECT COALESCE(SUM(e.amount), 0) FROM wallet_ledgerentry e
     JOIN wallet_ledgeraccount a ON a.id = e.account_id
     WHERE e.transaction_id IN (SELECT id FROM txs)
       AND a.kind IN ('partner_payable', 'platform_revenue')),
  (SELECT COALESCE(SUM(s.amount), 0) FROM partners_splitline s
     WHERE s.posted_at >= %(start)s AND s.posted_at < %(end)s),
  (SELECT COALESCE(SUM(e.amount), 0) FROM wallet_ledgerentry e
     JOIN wallet_ledgeraccount a ON a.id = e.account_id
     WHERE e.transaction_id IN (SELECT id FROM txs) AND a.kind = 'partner_payable')
"""


def settlement_reconcile(*, period: str | Period) -> Reconciliation:
    """Compare, for ``period``: each partner's statement earnings with the payable movements
    the ledger posted in the period and with their split attribution; the charges captured
    with the legs posted for them; the statements' adjustments and payouts with their ledger
    postings. Raises InvalidPeriod."""
    period = period if isinstance(period, Period) else period_parse(period)
    result = Reconciliation(period=period)
    statements = {
        s.partner_id: s
        for s in Statement.objects.filter(
            period_kind=period.kind, period_start=period.start
        ).select_related("partner")
    }
    accounts: dict[int, LedgerAccount] = {
        a.partner_id: a
        for a in LedgerAccount.objects.filter(
            kind=LedgerAccount.Kind.PARTNER_PAYABLE
        ).select_related("partner")
        if a.partner_id is not None
    }
    for partner_id in sorted(set(statements) | set(accounts)):
        statement = statements.get(partner_id)
        ledger = period_ledger_total(partner_id=partner_id, period=period)
        if statement is None and ledger == 0:
            continue
        aggregate = period_aggregate(partner_id=partner_id, period=period)
        partner = statement.partner if statement else accounts[partner_id].partner
        unattributed = 0
        if statement is not None:
            unattributed = (
                statement.lines.filter(kind=StatementLine.Kind.UNATTRIBUTED).aggregate(
                    t=Sum("amount")
                )["t"]
                or 0
            )
        result.rows.append(
            ReconciliationRow(
                partner_id=partner_id,
                partner=str(partner),
                statement_id=statement.pk if statement else None,
                statement_earnings=statement.earnings if statement else None,
                ledger=ledger,
                attributed=sum(line.amount for line in aggregate.lines),
                unattributed=int(unattributed),
            )
        )
    params = {"start": period.starts_at, "end": period.ends_at}
    with connection.cursor() as cursor:
        cursor.execute(CAPTURE_TOTALS_SQL, params)
        captured, legs, split_lines, payable = cursor.fetchone()
    result.captured, result.captured_legs = int(captured), int(legs)
    result.split_lines, result.ledger_from_captures = int(split_lines), int(payable)
    if period.kind == Statement.Period.MONTH:
        ids = [s.pk for s in statements.values()]
        adjustment_lines = StatementLine.objects.filter(
            statement_id__in=ids, kind=StatementLine.Kind.ADJUSTMENT
        )
        result.adjustments = int(adjustment_lines.aggregate(t=Sum("amount"))["t"] or 0)
        result.ledger_adjustments = _payable_sum(
            transaction_ids=list(adjustment_lines.values_list("ledger_transaction_id", flat=True))
        )
        paid = [s for s in statements.values() if s.status == Statement.Status.PAID]
        result.paid = sum(s.total for s in paid)
        result.ledger_payouts = -_payable_sum(
            transaction_ids=[s.payout_transaction_id for s in paid if s.payout_transaction_id]
        )
    return result


def _payable_sum(*, transaction_ids: list[Any]) -> int:
    if not transaction_ids:
        return 0
    from wallet.models import LedgerEntry

    total = LedgerEntry.objects.filter(
        transaction_id__in=transaction_ids, account__kind=LedgerAccount.Kind.PARTNER_PAYABLE
    ).aggregate(t=Sum("amount"))["t"]
    return int(total or 0)
