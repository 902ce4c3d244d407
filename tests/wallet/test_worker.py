"""The beat tasks on a real Celery worker (a subprocess on the Redis broker) against
PostgreSQL: expired holds are released, expired buckets go to breakage, and the nightly audit
records its result."""

from datetime import timedelta

import pytest
from django.utils import timezone

from config.celery_app import app as celery_app
from tests.partners.settlement_worker import Worker, send, wait_for
from tests.wallet.conftest import balance, current_balance, fund, held
from tests.wallet.test_holds_and_charges import hold
from wallet.ledger import system_account
from wallet.models import BalanceDelta, Bucket, Hold, LedgerAccount, WalletAuditRun

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(tmp_path):
    celery_app.control.purge()
    started = Worker(tmp_path / "wallet-worker.log", {})
    yield started
    started.stop()
    celery_app.control.purge()


def test_beat_tasks_on_a_worker(worker, user, app, price):
    promo = fund(user, 300, expires_at=timezone.now() + timedelta(days=1))
    fund(user, 200)
    h = hold(user, app, 250)  # takes the 300-token promotion first
    past = timezone.now() - timedelta(minutes=1)
    Hold.objects.filter(pk=h.pk).update(expires_at=past)
    Bucket.objects.filter(pk=promo.pk).update(expires_at=past)

    send("wallet.tasks.holds_expire")
    wait_for(
        lambda: Hold.objects.get(pk=h.pk).status == Hold.Status.EXPIRED,
        timeout=90,
        what=f"the hold to expire; worker log:\n{worker.output()}",
    )
    send("wallet.tasks.buckets_expire")
    wait_for(
        lambda: Bucket.objects.get(pk=promo.pk).expired_at is not None,
        timeout=60,
        what="the bucket to expire",
    )
    # The 250 held from the expired promotion and its other 50 went to breakage.
    assert (balance(user), held(user)) == (200, 0)
    assert current_balance(system_account(LedgerAccount.Kind.BREAKAGE)) == 300

    send("wallet.tasks.audit")
    wait_for(lambda: WalletAuditRun.objects.exists(), timeout=60, what="the audit run")
    assert WalletAuditRun.objects.get().ok

    # The shared accounts' deltas are folded into their cached rows by the worker.
    assert BalanceDelta.objects.exists()
    send("wallet.tasks.balances_fold")
    wait_for(lambda: not BalanceDelta.objects.exists(), timeout=60, what="the deltas to be folded")
    breakage = system_account(LedgerAccount.Kind.BREAKAGE)
    assert breakage.balance == current_balance(breakage) == 300
