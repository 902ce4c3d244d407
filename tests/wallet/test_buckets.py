from datetime import timedelta

import pytest
from django.utils import timezone
from freezegun import freeze_time

from tests.wallet.conftest import balance, current_balance, fund, held, new_key
from tests.wallet.test_holds_and_charges import capture, charge, hold
from wallet import services
from wallet.exceptions import InsufficientBalance
from wallet.ledger import system_account
from wallet.models import Bucket, LedgerAccount, LedgerTransaction
from wallet.tasks import buckets_expire

pytestmark = pytest.mark.django_db


def breakage() -> int:
    return current_balance(system_account(LedgerAccount.Kind.BREAKAGE))


def remaining(bucket: Bucket) -> int:
    bucket.refresh_from_db()
    return bucket.remaining


def test_spending_takes_soonest_expiring_bucket_first(user, app, price):
    now = timezone.now()
    forever = fund(user, 100, source=Bucket.Source.COMPENSATION)
    later = fund(user, 100, expires_at=now + timedelta(days=20))
    soon = fund(user, 100, expires_at=now + timedelta(days=2))
    charge(user, app, i=150)
    assert (remaining(soon), remaining(later), remaining(forever)) == (0, 50, 100)
    charge(user, app, i=100)
    assert (remaining(soon), remaining(later), remaining(forever)) == (0, 0, 50)
    assert balance(user) == 50


def test_purchase_without_expiry_is_spent_last(user, app, price):
    topup = fund(user, 100)
    promo = fund(user, 100, expires_at=timezone.now() + timedelta(days=1))
    charge(user, app, i=30)
    purchase_bucket = Bucket.objects.get(credit_transaction=topup.transaction)
    assert (remaining(promo), remaining(purchase_bucket)) == (70, 100)


def test_expiry_task_moves_what_is_left_to_breakage_once(user, app, price):
    promo = fund(user, 100, expires_at=timezone.now() + timedelta(days=1))
    fund(user, 40)
    charge(user, app, i=30)
    assert buckets_expire.delay().get() == 0
    with freeze_time(timezone.now() + timedelta(days=2)):
        assert buckets_expire.delay().get() == 1
        assert buckets_expire.delay().get() == 0
    assert (remaining(promo), balance(user), breakage()) == (0, 40, 70)
    promo.refresh_from_db()
    assert promo.expired_at is not None
    assert LedgerTransaction.objects.filter(kind="expiry").count() == 1


def test_expired_bucket_is_not_spendable_before_the_task_runs(user, app, price):
    fund(user, 100, expires_at=timezone.now() + timedelta(hours=1))
    fund(user, 10)
    with freeze_time(timezone.now() + timedelta(hours=2)):
        with pytest.raises(InsufficientBalance):
            charge(user, app, i=11)
        charge(user, app, i=10)
    assert (balance(user), breakage()) == (0, 100)


def test_release_after_bucket_expiry_sends_the_held_part_to_breakage(user, app, price):
    promo = fund(user, 100, expires_at=timezone.now() + timedelta(minutes=5))
    fund(user, 100)
    h = hold(user, app, 150)  # 100 from the promotion, 50 from the purchase
    with freeze_time(timezone.now() + timedelta(minutes=6)):
        capture(h, app, i=20)  # 20 from the promotion; its other 80 expired while held
    assert (balance(user), held(user), breakage()) == (100, 0, 80)
    assert remaining(promo) == 0


def test_release_returns_tokens_to_their_buckets(user, app, price):
    promo = fund(user, 100, expires_at=timezone.now() + timedelta(days=5))
    h = hold(user, app, 60)
    assert remaining(promo) == 40
    services.wallet_hold_release(hold_id=h.pk, app=app, idempotency_key=new_key())
    assert remaining(promo) == 100


def test_staff_credit_cannot_expire_in_the_past(user):
    from wallet.exceptions import InvalidRequest

    with pytest.raises(InvalidRequest):
        fund(user, 10, expires_at=timezone.now() - timedelta(seconds=1))
    assert balance(user) == 0
