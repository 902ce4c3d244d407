import pytest
from django.core.management import call_command
from django.db import connection

from tests.wallet.conftest import fund
from tests.wallet.test_holds_and_charges import charge, hold
from wallet.models import LedgerAccount, WalletAuditRun
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
