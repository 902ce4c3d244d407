"""Posting to the ledger: the only code that inserts entries or changes a cached balance.

Lock order (to stay free of deadlocks): a service first locks the user's own accounts with
``select_for_update`` in primary-key order, then the rows it changes (hold, charge, code);
``ledger_post`` then updates the remaining (system and partner) accounts in primary-key order.
A transaction therefore never waits for a user's account while holding a system account.
"""

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import User
from partners.models import Partner
from wallet.models import LedgerAccount, LedgerEntry, LedgerTransaction

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
        kind=LedgerAccount.Kind.PARTNER_PAYABLE, partner=partner
    )
    return account


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


def ledger_post(
    *,
    kind: str,
    reference: str,
    legs: Iterable[Leg],
    metadata: dict[str, Any] | None = None,
) -> LedgerTransaction:
    """Insert one balanced transaction and move the cached balances by the same amounts.

    Legs on the same account are merged and zero legs dropped. Raises UnbalancedTransaction
    if they do not sum to zero (PostgreSQL would refuse it at commit anyway), and
    IntegrityError if the reference was used before or a wallet would go negative."""
    assert transaction.get_connection().in_atomic_block, "ledger_post needs a transaction"
    totals: dict[int, int] = defaultdict(int)
    for account, amount in legs:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise TypeError("ledger amounts are integers")
        totals[account.pk] += amount
    totals = {pk: amount for pk, amount in totals.items() if amount}
    if sum(totals.values()) != 0:
        raise UnbalancedTransaction(f"legs of {reference} sum to {sum(totals.values())}")
    ledger_tx = LedgerTransaction.objects.create(
        kind=kind, reference=reference, metadata=metadata or {}
    )
    LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(transaction=ledger_tx, account_id=pk, amount=amount)
            for pk, amount in sorted(totals.items())
        ]
    )
    for pk, amount in sorted(totals.items()):
        LedgerAccount.objects.filter(pk=pk).update(balance=F("balance") + amount)
    return ledger_tx


Posting = tuple[str, str, list[Leg], dict[str, Any]]  # (kind, reference, legs, metadata)


def ledger_post_many(*, postings: list[Posting]) -> list[LedgerTransaction]:
    """``ledger_post`` for the many transactions of one batch: every transaction is checked
    and merged the same way, then all are inserted with one INSERT per table, and each touched
    account's cached balance moves once by the batch's net amount, in primary-key order (the
    same lock order as ``ledger_post``). Returns the transactions in the order given."""
    assert transaction.get_connection().in_atomic_block, "ledger_post needs a transaction"
    merged: list[dict[int, int]] = []
    for _kind, reference, legs, _metadata in postings:
        totals: dict[int, int] = defaultdict(int)
        for account, amount in legs:
            if not isinstance(amount, int) or isinstance(amount, bool):
                raise TypeError("ledger amounts are integers")
            totals[account.pk] += amount
        totals = {pk: amount for pk, amount in totals.items() if amount}
        if sum(totals.values()) != 0:
            raise UnbalancedTransaction(f"legs of {reference} sum to {sum(totals.values())}")
        merged.append(totals)
    if not postings:
        return []
    now = timezone.now()
    ledger_txs = [
        LedgerTransaction(kind=kind, reference=reference, metadata=metadata or {}, created_at=now)
        for kind, reference, _legs, metadata in postings
    ]
    # Inserted from arrays, ids returned in the arrays' order (WITH ORDINALITY ... ORDER BY).
    assert LedgerTransaction._meta.db_table == "wallet_ledgertransaction"
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO wallet_ledgertransaction (kind, reference, metadata, created_at)
            SELECT t.kind, t.reference, t.metadata::jsonb, %s
            FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY
                AS t(kind, reference, metadata, n)
            ORDER BY t.n
            RETURNING id""",
            [
                now,
                [tx.kind for tx in ledger_txs],
                [tx.reference for tx in ledger_txs],
                [json.dumps(tx.metadata) for tx in ledger_txs],
            ],
        )
        ids = [row[0] for row in cursor.fetchall()]
    for ledger_tx, pk in zip(ledger_txs, ids, strict=True):
        ledger_tx.pk = pk
        ledger_tx._state.adding = False
    net: dict[int, int] = defaultdict(int)
    tx_ids: list[int] = []
    account_ids: list[int] = []
    amounts: list[int] = []
    for ledger_tx, totals in zip(ledger_txs, merged, strict=True):
        for pk, amount in sorted(totals.items()):
            tx_ids.append(ledger_tx.pk)
            account_ids.append(pk)
            amounts.append(amount)
            net[pk] += amount
    if tx_ids:
        # One INSERT from three arrays: a batch has thousands of entries, and building a model
        # instance for each costs more than the database takes to write them.
        assert LedgerEntry._meta.db_table == "wallet_ledgerentry"
        with connection.cursor() as cursor:
            cursor.execute(
                """INSERT INTO wallet_ledgerentry (transaction_id, account_id, amount)
                SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[])""",
                [tx_ids, account_ids, amounts],
            )
    for pk, amount in sorted(net.items()):
        if amount:
            LedgerAccount.objects.filter(pk=pk).update(balance=F("balance") + amount)
    return ledger_txs


def ledger_balances_move(*, net: dict[int, int]) -> None:
    """Move cached balances by ``net`` (account id -> amount), in primary-key order, for
    entries the caller has inserted in this transaction with the same checks as
    ``ledger_post_many`` (the usage batch, ``wallet.batch``). The batch calls it last, right
    before commit, so that the platform and partner rows every charge touches stay locked for
    as short a time as possible."""
    assert transaction.get_connection().in_atomic_block, "ledger_post needs a transaction"
    for pk, amount in sorted(net.items()):
        if amount:
            LedgerAccount.objects.filter(pk=pk).update(balance=F("balance") + amount)
