"""Posting to the ledger: the only code that inserts entries or changes a cached balance.

Lock order (to stay free of deadlocks): a service first locks the user's own accounts with
``select_for_update`` in primary-key order, then the rows it changes (hold, charge, code);
``ledger_post`` then moves the user accounts' cached balances, which it already holds.

Shared accounts (platform revenue and the other system accounts, partner payables) are never
locked or updated by a posting: every capture would otherwise queue on the platform-revenue
row. A posting appends a ``BalanceDelta`` per shared account instead, and
``balance_deltas_fold`` (a beat task) moves the deltas into the cached rows. A shared
account's balance is its cached row plus its deltas not yet folded (``wallet.selectors``).
"""

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import User
from partners.models import Partner
from wallet.models import BalanceDelta, LedgerAccount, LedgerEntry, LedgerTransaction

Leg = tuple[LedgerAccount, int]


class UnbalancedTransaction(Exception):
    """Raised before anything is written if the legs do not sum to zero."""


def system_account(kind: str) -> LedgerAccount:
    """The platform's account of ``kind`` (created on first use)."""
    assert kind in LedgerAccount.SYSTEM_KINDS, kind
    account, _ = LedgerAccount.objects.get_or_create(kind=kind, user=None, partner=None)
    return account


def partner_payable_account(partner: Partner) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        kind=LedgerAccount.Kind.PARTNER_PAYABLE, partner_id=partner.pk
    )
    return account


def shared_accounts_get(
    *, partner_ids: Iterable[int], kinds: Iterable[str] = (), create: bool = True
) -> tuple[dict[int, LedgerAccount], dict[str, LedgerAccount]]:
    """The payable accounts of ``partner_ids`` and the system accounts of ``kinds``, in one
    query (a capture's split needs several). Returns ({partner id: account}, {kind: account});
    an account used for the first time is created, unless ``create`` is false (then it is
    left out: a caller that holds no user lock yet must not, because a concurrent first use
    that holds one would wait for it on the unique index while it waits for that lock)."""
    partner_ids, kinds = set(partner_ids), set(kinds)
    assert kinds <= set(LedgerAccount.SYSTEM_KINDS), kinds
    if not partner_ids and not kinds:
        return {}, {}
    wanted = Q(kind=LedgerAccount.Kind.PARTNER_PAYABLE, partner_id__in=partner_ids) | Q(
        kind__in=kinds, user__isnull=True, partner__isnull=True
    )
    payables: dict[int, LedgerAccount] = {}
    system: dict[str, LedgerAccount] = {}
    for account in LedgerAccount.objects.filter(wanted):
        if account.partner_id is not None:
            payables[account.partner_id] = account
        else:
            system[account.kind] = account
    if not create:
        return payables, system
    for partner_id in sorted(partner_ids - set(payables)):
        payables[partner_id], _ = LedgerAccount.objects.get_or_create(
            kind=LedgerAccount.Kind.PARTNER_PAYABLE, partner_id=partner_id
        )
    for kind in sorted(kinds - set(system)):
        system[kind] = system_account(kind)
    return payables, system


def user_accounts_lock(*, user: User) -> tuple[LedgerAccount, LedgerAccount]:
    """Create (lazily) and lock the user's wallet and holds accounts, in primary-key order,
    and return them re-read under the lock as (wallet, holds). Must run inside a transaction.

    Wallets are created lazily, here, on first use, rather than on sign-up: sign-up lives in
    accounts, which must not import the wallet, and a user who never touches the wallet costs
    no rows."""
    locked = (
        LedgerAccount.objects.select_for_update()
        .filter(user=user, kind__in=LedgerAccount.USER_KINDS)
        .order_by("pk")
    )
    accounts = list(locked)
    if len(accounts) < len(LedgerAccount.USER_KINDS):
        # First use: create what is missing (a concurrent first use waits on the unique
        # constraint and then finds the rows), then lock both.
        for kind in LedgerAccount.USER_KINDS:
            LedgerAccount.objects.get_or_create(kind=kind, user=user)
        accounts = list(locked.all())
    by_kind = {account.kind: account for account in accounts}
    return by_kind[LedgerAccount.Kind.WALLET], by_kind[LedgerAccount.Kind.HOLDS]


def _legs_merge(*, reference: str, legs: Iterable[Leg], user_pks: set[int]) -> dict[int, int]:
    """Merge the legs by account and drop zero legs; add the user accounts' ids (wallet,
    holds: their cached balance moves in the posting's transaction) to ``user_pks``. Raises
    TypeError on a non-integer amount and UnbalancedTransaction unless they sum to zero."""
    totals: dict[int, int] = defaultdict(int)
    for account, amount in legs:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise TypeError("ledger amounts are integers")
        totals[account.pk] += amount
        if account.kind in LedgerAccount.USER_KINDS:
            user_pks.add(account.pk)
    totals = {pk: amount for pk, amount in totals.items() if amount}
    if sum(totals.values()) != 0:
        raise UnbalancedTransaction(f"legs of {reference} sum to {sum(totals.values())}")
    return totals


def ledger_post(
    *,
    kind: str,
    reference: str,
    legs: Iterable[Leg],
    metadata: dict[str, Any] | None = None,
) -> LedgerTransaction:
    """Insert one balanced transaction; move the user accounts' cached balances by the same
    amounts and append a delta for each shared account, all in one statement.

    Legs on the same account are merged and zero legs dropped. Raises UnbalancedTransaction
    if they do not sum to zero (PostgreSQL would refuse it at commit anyway), and
    IntegrityError if the reference was used before or a wallet would go negative. The caller
    holds the locks of the user accounts it posts to (``user_accounts_lock``)."""
    assert transaction.get_connection().in_atomic_block, "ledger_post needs a transaction"
    user_pks: set[int] = set()
    totals = _legs_merge(reference=reference, legs=legs, user_pks=user_pks)
    ledger_tx = LedgerTransaction(
        kind=kind, reference=reference, metadata=metadata or {}, created_at=timezone.now()
    )
    ordered = sorted(totals.items())
    user_legs = [(pk, amount) for pk, amount in ordered if pk in user_pks]
    shared_legs = [(pk, amount) for pk, amount in ordered if pk not in user_pks]
    assert LedgerTransaction._meta.db_table == "wallet_ledgertransaction"
    assert LedgerEntry._meta.db_table == "wallet_ledgerentry"
    assert BalanceDelta._meta.db_table == "wallet_balancedelta"
    if connection.vendor != "postgresql":
        # The local demo's SQLite: the same rows, written by the ORM.
        ledger_tx.save()
        LedgerEntry.objects.bulk_create(
            [LedgerEntry(transaction=ledger_tx, account_id=pk, amount=a) for pk, a in ordered]
        )
        _balances_move(net=dict(ordered), user_pks=user_pks)
        return ledger_tx
    # One round trip: the transaction, its entries, the shared accounts' deltas and the user
    # accounts' balances (the CHECK constraint refuses a negative one, failing the statement).
    with connection.cursor() as cursor:
        cursor.execute(
            """WITH tx AS (
                INSERT INTO wallet_ledgertransaction (kind, reference, metadata, created_at)
                VALUES (%s, %s, %s::jsonb, %s) RETURNING id
            ), entries AS (
                INSERT INTO wallet_ledgerentry (transaction_id, account_id, amount)
                SELECT tx.id, e.account_id, e.amount
                FROM tx, unnest(%s::bigint[], %s::bigint[]) AS e(account_id, amount)
            ), deltas AS (
                INSERT INTO wallet_balancedelta (account_id, amount, created_at)
                SELECT d.account_id, d.amount, %s
                FROM unnest(%s::bigint[], %s::bigint[]) AS d(account_id, amount)
            ), balances AS (
                UPDATE wallet_ledgeraccount AS a SET balance = a.balance + u.amount
                FROM unnest(%s::bigint[], %s::bigint[]) AS u(account_id, amount)
                WHERE a.id = u.account_id
            )
            SELECT id FROM tx""",
            [
                ledger_tx.kind,
                ledger_tx.reference,
                json.dumps(ledger_tx.metadata),
                ledger_tx.created_at,
                [pk for pk, _amount in ordered],
                [amount for _pk, amount in ordered],
                ledger_tx.created_at,
                [pk for pk, _amount in shared_legs],
                [amount for _pk, amount in shared_legs],
                [pk for pk, _amount in user_legs],
                [amount for _pk, amount in user_legs],
            ],
        )
        ledger_tx.pk = cursor.fetchone()[0]
    ledger_tx._state.adding = False
    return ledger_tx


def _balances_move(*, net: dict[int, int], user_pks: set[int]) -> None:
    """Move the user accounts' cached balances by ``net`` (in primary-key order) and append
    one delta per shared account."""
    moves = sorted((pk, amount) for pk, amount in net.items() if amount)
    for pk, amount in moves:
        if pk in user_pks:
            LedgerAccount.objects.filter(pk=pk).update(balance=F("balance") + amount)
    BalanceDelta.objects.bulk_create(
        [BalanceDelta(account_id=pk, amount=amount) for pk, amount in moves if pk not in user_pks]
    )


def ledger_balances_move(*, net: dict[int, int], user_pks: set[int]) -> None:
    """Move the cached balances of the user accounts in ``user_pks`` by ``net`` (account id ->
    amount) and append one delta per shared account, for entries the caller has inserted in
    this transaction with the same checks as ``ledger_post`` (the usage batch,
    ``wallet.batch``)."""
    assert transaction.get_connection().in_atomic_block, "ledger_post needs a transaction"
    _balances_move(net=net, user_pks=user_pks)


# pg_try_advisory_xact_lock(namespace, key): one fold at a time.
FOLD_LOCK = (0x77610001, 0)


def balance_deltas_fold(*, limit: int = 10_000) -> int | None:
    """Fold up to ``limit`` deltas into their shared accounts' cached balances, in one
    transaction: the deltas it sees are deleted and their sums added to the cached rows
    together, so a delta counts once, in one place or the other, at every instant and
    whatever fails. Returns how many were folded, or None if another fold holds the lock.

    The UPDATE takes only the shared rows' no-key lock, which does not conflict with the
    key-share locks that concurrent postings' foreign keys take on them: postings never wait
    for a fold."""
    assert BalanceDelta._meta.db_table == "wallet_balancedelta"
    if connection.vendor != "postgresql":
        return _balance_deltas_fold_portable(limit=limit)
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", FOLD_LOCK)
        if not cursor.fetchone()[0]:
            return None
        cursor.execute(
            """WITH folded AS (
                DELETE FROM wallet_balancedelta WHERE id IN (
                    SELECT id FROM wallet_balancedelta ORDER BY id LIMIT %s
                ) RETURNING account_id, amount
            ), sums AS (
                SELECT account_id, SUM(amount) AS amount, COUNT(*) AS n
                FROM folded GROUP BY account_id
            )
            UPDATE wallet_ledgeraccount AS a SET balance = a.balance + sums.amount
            FROM sums WHERE a.id = sums.account_id
            RETURNING sums.n""",
            [limit],
        )
        return sum(int(n) for (n,) in cursor.fetchall())


def _balance_deltas_fold_portable(*, limit: int) -> int:
    """The fold for the local demo's SQLite, which has one writer at a time and neither
    advisory locks nor data-modifying CTEs: the same effect through the ORM."""
    with transaction.atomic(durable=True):
        deltas = list(
            BalanceDelta.objects.order_by("pk").values_list("pk", "account_id", "amount")[:limit]
        )
        sums: dict[int, int] = defaultdict(int)
        for _pk, account_id, amount in deltas:
            sums[account_id] += amount
        for account_id, amount in sorted(sums.items()):
            LedgerAccount.objects.filter(pk=account_id).update(balance=F("balance") + amount)
        BalanceDelta.objects.filter(pk__in=[pk for pk, _account, _amount in deltas]).delete()
    return len(deltas)
