from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from tests.wallet.conftest import fund
from tests.wallet.test_holds_and_charges import charge, hold
from wallet import services
from wallet.audit import wallet_audit_run
from wallet.ledger import system_account
from wallet.models import BalanceDelta, LedgerAccount, WalletAuditRun
from wallet.tasks import audit

pytestmark = pytest.mark.django_db


def test_audit_passes_on_good_data(user, app, price, capsys):
    fund(user, 1000)
    charge(user, app, i=100)
    hold(user, app, 50)
    call_command("wallet_audit")
    out = capsys.readouterr().out
    assert "wallet audit passed" in out
    assert WalletAuditRun.objects.get().ok


def test_audit_fails_on_a_balance_changed_behind_the_ledger(user, app, price, capsys):
    fund(user, 1000)
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    # Bypass every service: change the cached balance directly.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE wallet_ledgeraccount SET balance = balance + 5 WHERE id = %s", [wallet.pk]
        )
    with pytest.raises(SystemExit) as exit_info:
        call_command("wallet_audit")
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert f"FAIL  balance_differs_from_entries  [[{wallet.pk}, 1005, 1000]]" in out
    assert "FAIL  wallet_differs_from_buckets" in out
    assert not WalletAuditRun.objects.get().ok


def test_audit_reports_open_holds_long_expired(user, app, price):
    fund(user, 1000)
    h = hold(user, app, 10)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE wallet_hold SET expires_at = now() - interval '1 day' WHERE id = %s", [h.pk]
        )
    result = audit.delay().get()
    assert result["ok"] is False
    run = WalletAuditRun.objects.get(pk=result["run"])
    assert run.problems == [{"check": "expired_holds_open", "row": [h.pk]}]


def test_audit_counts_unfolded_deltas_in_shared_balances(user, app, price):
    fund(user, 1000)
    charge(user, app, i=100)
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    revenue.refresh_from_db()
    # Nothing folded yet: the cached row is behind its entries by exactly the deltas
    assert revenue.balance == 0 and BalanceDelta.objects.filter(account=revenue).exists()
    assert wallet_audit_run().ok
    services.wallet_balances_fold()
    assert wallet_audit_run().ok


def test_audit_fails_on_a_shared_balance_changed_behind_the_ledger(user, app, price, capsys):
    fund(user, 1000)
    charge(user, app, i=100)
    services.wallet_balances_fold()
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    # A delta nobody posted, then a cached row changed directly
    BalanceDelta.objects.create(account=revenue, amount=7)
    with pytest.raises(SystemExit):
        call_command("wallet_audit")
    assert (
        f"FAIL  balance_differs_from_entries  [[{revenue.pk}, 107, 100]]" in capsys.readouterr().out
    )
    services.wallet_balances_fold()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE wallet_ledgeraccount SET balance = balance - 7 WHERE id = %s", [revenue.pk]
        )
    assert wallet_audit_run().ok  # the two wrongs cancel out: 100 again
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE wallet_ledgeraccount SET balance = balance - 1 WHERE id = %s", [revenue.pk]
        )
    run = wallet_audit_run()
    assert run.problems == [{"check": "balance_differs_from_entries", "row": [revenue.pk, 99, 100]}]


def test_audit_fails_on_a_delta_on_a_user_account(user, app, price):
    fund(user, 1000)
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    delta = BalanceDelta.objects.create(account=wallet, amount=-5)
    run = wallet_audit_run()
    assert not run.ok
    assert {"check": "user_account_deltas", "row": [delta.pk, wallet.pk, -5]} in run.problems
    assert {"check": "balance_differs_from_entries", "row": [wallet.pk, 995, 1000]} in run.problems


def test_audit_reports_deltas_the_fold_left_too_long(user, app, price, settings):
    fund(user, 1000)
    delta = BalanceDelta.objects.get()
    BalanceDelta.objects.filter(pk=delta.pk).update(
        created_at=timezone.now() - settings.WALLET_AUDIT_DELTA_GRACE - timedelta(seconds=1)
    )
    result = audit.delay().get()
    assert result["ok"] is False
    run = WalletAuditRun.objects.get(pk=result["run"])
    assert run.problems == [{"check": "deltas_not_folded", "row": [delta.pk]}]


def test_a_charge_that_costs_nothing_passes_the_audit(user, app, price):
    # No tokens used (a request that failed upstream), one-shot and in a batch: the charge is
    # recorded with an amount of 0 and a ledger transaction that moves nothing.
    from wallet.batch import wallet_usage_batch_charge

    fund(user, 1000)
    free = charge(user, app, i=0)
    assert free.amount == 0
    wallet_usage_batch_charge(
        user=user,
        app=app,
        records=[("zero", {"model": "gpt-test", "input_tokens": 0})],
    )
    assert wallet_audit_run().ok


def test_audit_fails_on_a_transaction_without_entries_that_is_no_free_charge(user, app, price):
    fund(user, 1000)
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO wallet_ledgertransaction (kind, reference, metadata, created_at)
            VALUES ('charge', 'lost-entries', '{}', now()) RETURNING id"""
        )
        (tx_id,) = cursor.fetchone()
    result = wallet_audit_run()
    assert not result.ok
    assert {"check": "unbalanced_transactions", "row": [tx_id, 0]} in result.problems
