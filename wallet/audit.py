"""The ledger audit: proves the wallet's invariants from the database itself.

Checks (each failure is reported with the ids involved):
* every ledger transaction's entries sum to zero;
* every account's cached balance equals the sum of its entries;
* no wallet or holds account is negative;
* every wallet's balance equals what is left in its buckets;
* every holds account equals the sum of its user's open holds;
* no open hold is past its expiry by more than WALLET_AUDIT_HOLD_GRACE.
"""

from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from wallet.models import Hold, LedgerAccount, WalletAuditRun

PROBLEM_LIMIT = 100

CHECKS: list[tuple[str, str]] = [
    (
        "unbalanced_transactions",
        """
        SELECT t.id, COALESCE(SUM(e.amount), 0)
        FROM wallet_ledgertransaction t LEFT JOIN wallet_ledgerentry e ON e.transaction_id = t.id
        GROUP BY t.id HAVING COALESCE(SUM(e.amount), 0) <> 0 OR COUNT(e.id) = 0
        """,
    ),
    (
        "balance_differs_from_entries",
        """
        SELECT a.id, a.balance, COALESCE(SUM(e.amount), 0)
        FROM wallet_ledgeraccount a LEFT JOIN wallet_ledgerentry e ON e.account_id = a.id
        GROUP BY a.id, a.balance HAVING a.balance <> COALESCE(SUM(e.amount), 0)
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
    checked = {
        "accounts": LedgerAccount.objects.count(),
        "checks": [name for name, _ in CHECKS] + ["expired_holds_open"],
    }
    return WalletAuditRun.objects.create(
        started_at=started, ok=not problems, problems=problems, checked=checked
    )
