"""The ledger audit: proves the wallet's invariants from the database itself.

Checks (each failure is reported with the ids involved):
* every ledger transaction's entries sum to zero, and only a charge that cost nothing has a
  transaction without entries;
* every account's balance equals the sum of its entries (the cached balance, plus for the
  shared accounts the deltas not yet folded);
* no wallet or holds account has a delta (their cached balance moves with their entries,
  under their lock and CHECK constraint);
* no delta waits longer than WALLET_AUDIT_DELTA_GRACE to be folded (the fold has stopped);
* no wallet or holds account is negative;
* every wallet's balance equals what is left in its buckets;
* every holds account equals the sum of its user's open holds;
* no open hold is past its expiry by more than WALLET_AUDIT_HOLD_GRACE.
"""

from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from wallet.models import BalanceDelta, Hold, LedgerAccount, WalletAuditRun

PROBLEM_LIMIT = 100

CHECKS: list[tuple[str, str]] = [
    (
        "unbalanced_transactions",
        """
        SELECT t.id, COALESCE(SUM(e.amount), 0)
        FROM wallet_ledgertransaction t LEFT JOIN wallet_ledgerentry e ON e.transaction_id = t.id
        GROUP BY t.id HAVING COALESCE(SUM(e.amount), 0) <> 0 OR (
            -- Only a charge that cost nothing (no tokens used, or a free model) posts a
            -- transaction without entries; any other one has lost its entries.
            COUNT(e.id) = 0 AND NOT EXISTS (
                SELECT 1 FROM wallet_charge c
                WHERE c.transaction_id = t.id AND c.amount = 0 AND c.hold_id IS NULL
            )
        )
        """,
    ),
    (
        "balance_differs_from_entries",
        """
        SELECT a.id, a.balance + COALESCE(d.pending, 0), COALESCE(e.total, 0)
        FROM wallet_ledgeraccount a
        LEFT JOIN (
            SELECT account_id, SUM(amount) AS total FROM wallet_ledgerentry GROUP BY account_id
        ) e ON e.account_id = a.id
        LEFT JOIN (
            SELECT account_id, SUM(amount) AS pending FROM wallet_balancedelta GROUP BY account_id
        ) d ON d.account_id = a.id
        WHERE a.balance + COALESCE(d.pending, 0) <> COALESCE(e.total, 0)
        """,
    ),
    (
        "user_account_deltas",
        """
        SELECT d.id, d.account_id, d.amount
        FROM wallet_balancedelta d JOIN wallet_ledgeraccount a ON a.id = d.account_id
        WHERE a.kind IN ('wallet', 'holds')
        """,
    ),
    (
        "negative_user_balances",
        "SELECT id, balance FROM wallet_ledgeraccount "
        "WHERE kind IN ('wallet', 'holds') AND balance < 0",
    ),
    (
        "wallet_differs_from_buckets",
        """
        SELECT a.id, a.balance, COALESCE(SUM(b.remaining), 0)
        FROM wallet_ledgeraccount a LEFT JOIN wallet_bucket b ON b.wallet_id = a.id
        WHERE a.kind = 'wallet'
        GROUP BY a.id, a.balance HAVING a.balance <> COALESCE(SUM(b.remaining), 0)
        """,
    ),
    (
        "holds_account_differs_from_open_holds",
        """
        SELECT a.id, a.balance, COALESCE(SUM(h.amount), 0)
        FROM wallet_ledgeraccount a
        LEFT JOIN wallet_hold h ON h.user_id = a.user_id AND h.status = 'open'
        WHERE a.kind = 'holds'
        GROUP BY a.id, a.balance HAVING a.balance <> COALESCE(SUM(h.amount), 0)
        """,
    ),
]


def wallet_audit_run() -> WalletAuditRun:
    """Run every check and record the result. Never raises on a breach: it reports it."""
    started = timezone.now()
    problems: list[dict[str, Any]] = []
    with connection.cursor() as cursor:
        for name, sql in CHECKS:
            cursor.execute(sql)
            for row in cursor.fetchmany(PROBLEM_LIMIT):
                problems.append({"check": name, "row": [int(value) for value in row]})
    stale = Hold.objects.filter(
        status=Hold.Status.OPEN, expires_at__lt=started - settings.WALLET_AUDIT_HOLD_GRACE
    ).values_list("pk", flat=True)[:PROBLEM_LIMIT]
    problems.extend({"check": "expired_holds_open", "row": [pk]} for pk in stale)
    unfolded = BalanceDelta.objects.filter(
        created_at__lt=started - settings.WALLET_AUDIT_DELTA_GRACE
    ).values_list("pk", flat=True)[:PROBLEM_LIMIT]
    problems.extend({"check": "deltas_not_folded", "row": [pk]} for pk in unfolded)
    checked = {
        "accounts": LedgerAccount.objects.count(),
        "checks": [name for name, _ in CHECKS] + ["expired_holds_open", "deltas_not_folded"],
    }
    return WalletAuditRun.objects.create(
        started_at=started, ok=not problems, problems=problems, checked=checked
    )
