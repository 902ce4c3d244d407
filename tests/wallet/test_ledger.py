import pytest
from django.db import IntegrityError, InternalError, connection, transaction
from django.db.utils import DatabaseError

from tests.wallet.conftest import balance, fund
from wallet.ledger import UnbalancedTransaction, ledger_post, system_account
from wallet.models import LedgerAccount, LedgerEntry, LedgerTransaction

pytestmark = pytest.mark.django_db


def _raw_unbalanced_transaction() -> None:
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    tx = LedgerTransaction.objects.create(kind="charge", reference="raw:unbalanced")
    LedgerEntry.objects.create(transaction=tx, account=revenue, amount=5)


def test_balanced_post_moves_cached_balances(user):
    # Given a funded wallet
    fund(user, 100)
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    # When a balanced transaction is posted
    with transaction.atomic():
        ledger_post(kind="charge", reference="t:1", legs=[(wallet, -30), (revenue, 30)])
    # Then both cached balances moved by their entries
    assert balance(user) == 70
    revenue.refresh_from_db()
    assert revenue.balance == 30


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
