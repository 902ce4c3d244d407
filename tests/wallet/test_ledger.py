import pytest
from django.db import IntegrityError, InternalError, connection, connections, transaction
from django.db.utils import DatabaseError

from tests.wallet.conftest import balance, current_balance, fund
from wallet.audit import wallet_audit_run
from wallet.ledger import (
    FOLD_LOCK,
    UnbalancedTransaction,
    balance_deltas_fold,
    ledger_post,
    system_account,
)
from wallet.models import BalanceDelta, LedgerAccount, LedgerEntry, LedgerTransaction
from wallet.tasks import balances_fold

pytestmark = pytest.mark.django_db


def _raw_unbalanced_transaction() -> None:
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    tx = LedgerTransaction.objects.create(kind="charge", reference="raw:unbalanced")
    LedgerEntry.objects.create(transaction=tx, account=revenue, amount=5)


def entries_match_balances() -> bool:
    # These postings skip the buckets on purpose: only the balance check applies.
    return not [p for p in wallet_audit_run().problems if p["check"] in BALANCE_CHECKS]


BALANCE_CHECKS = {"balance_differs_from_entries", "user_account_deltas", "unbalanced_transactions"}


def test_balanced_post_moves_the_wallet_and_appends_a_delta_for_the_shared_account(user):
    # Given a funded wallet
    fund(user, 100)
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    # When a balanced transaction is posted
    with transaction.atomic():
        ledger_post(kind="charge", reference="t:1", legs=[(wallet, -30), (revenue, 30)])
    # Then the wallet's cached balance moved with its entry, in the same transaction
    assert balance(user) == 70
    # And the revenue row was left alone: its change waits in a delta, and readers see it
    revenue.refresh_from_db()
    assert revenue.balance == 0
    assert list(BalanceDelta.objects.filter(account=revenue).values_list("amount", flat=True)) == [
        30
    ]
    assert current_balance(revenue) == 30
    assert entries_match_balances()


def test_fold_moves_deltas_into_the_cached_rows_once(user):
    fund(user, 100)  # a delta for top-up clearing
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    clearing = system_account(LedgerAccount.Kind.TOPUP_CLEARING)
    for n in range(3):
        with transaction.atomic():
            ledger_post(kind="charge", reference=f"t:f{n}", legs=[(wallet, -10), (revenue, 10)])
    # The beat task folds every delta, in the same transaction as it moves the cached rows
    assert balances_fold.delay().get() == 4
    revenue.refresh_from_db()
    clearing.refresh_from_db()
    assert (revenue.balance, clearing.balance) == (30, -100)
    assert not BalanceDelta.objects.exists()
    assert (current_balance(revenue), current_balance(clearing)) == (30, -100)
    # Running it again changes nothing
    assert balances_fold.delay().get() == 0
    revenue.refresh_from_db()
    assert revenue.balance == 30
    assert entries_match_balances()


def test_fold_takes_its_lock_or_leaves_the_work_to_the_fold_holding_it(user):
    fund(user, 100)
    # Another fold holds the lock (taken here on a second connection)
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", FOLD_LOCK)
        assert balance_deltas_fold() is None
        assert BalanceDelta.objects.count() == 1
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", FOLD_LOCK)
    finally:
        other.close()
    assert balance_deltas_fold() == 1


def test_post_refuses_unbalanced_legs_before_writing(user):
    fund(user, 10)
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    with pytest.raises(UnbalancedTransaction), transaction.atomic():
        ledger_post(kind="charge", reference="t:2", legs=[(wallet, -3), (revenue, 2)])
    assert not LedgerTransaction.objects.filter(reference="t:2").exists()


def test_trigger_refuses_unbalanced_transaction_when_checked(user):
    # The constraint trigger is deferred; forcing it immediate makes it fire on the insert.
    with pytest.raises(IntegrityError, match="unbalanced"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        _raw_unbalanced_transaction()


@pytest.mark.django_db(transaction=True)
def test_trigger_refuses_unbalanced_transaction_at_commit():
    # Given a transaction whose entries do not sum to zero, when it commits, it is refused
    with pytest.raises(IntegrityError, match="unbalanced"), transaction.atomic():
        _raw_unbalanced_transaction()
    assert not LedgerTransaction.objects.filter(reference="raw:unbalanced").exists()


def test_entries_cannot_be_updated_or_deleted(user):
    fund(user, 10)
    entry = LedgerEntry.objects.filter(account__user=user).get()
    with pytest.raises(DatabaseError, match="insert-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=11)
    with pytest.raises(DatabaseError, match="insert-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(DatabaseError, match="insert-only"), transaction.atomic():
        LedgerTransaction.objects.filter(pk=entry.transaction_id).update(reference="x")
    entry.refresh_from_db()
    assert entry.amount == 10


def test_wallet_balance_cannot_go_negative(user):
    fund(user, 10)
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    with pytest.raises((IntegrityError, InternalError)), transaction.atomic():
        ledger_post(kind="charge", reference="t:3", legs=[(wallet, -11), (revenue, 11)])
    assert balance(user) == 10


def test_float_amounts_are_refused(user):
    fund(user, 10)
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    with pytest.raises(TypeError), transaction.atomic():
        ledger_post(kind="charge", reference="t:4", legs=[(wallet, -1.5), (revenue, 1.5)])
