"""Real threads against PostgreSQL: every value-moving path under contention."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from tests.factories import PriceFactory, UserFactory, WalletAppFactory
from tests.wallet.conftest import balance, fund, held, new_key
from wallet import services
from wallet.audit import wallet_audit_run
from wallet.exceptions import HoldNotOpen, InsufficientBalance, RefundTooLarge, WalletError
from wallet.ledger import system_account
from wallet.models import BalanceDelta, Charge, LedgerAccount, LedgerEntry

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = 16


def run_concurrently(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(i) for i in range(count) on real threads that start together. Each returns
    its result or the WalletError it raised; each thread closes its own connection."""
    barrier = threading.Barrier(min(count, WORKERS))

    def call(i: int) -> Any:
        try:
            if i < WORKERS:
                barrier.wait(timeout=30)
            return work(i)
        except WalletError as error:
            return error
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(call, range(count)))


@pytest.fixture
def setup(db):
    user = UserFactory()
    app = WalletAppFactory()
    PriceFactory(model__name="gpt-test", input_per_million=1_000_000)
    return user, app


def test_fifty_concurrent_charges_never_overdraw(setup):
    user, app = setup
    fund(user, 1000)
    fund(user, 500, expires_at=timezone.now() + timedelta(days=1))

    def work(i: int):
        return services.wallet_charge(
            user=user,
            app=app,
            model="gpt-test",
            input_tokens=70,
            cached_input_tokens=0,
            output_tokens=0,
            idempotency_key=f"charge-{i}",
        )

    results = run_concurrently(50, work)
    accepted = [r for r in results if isinstance(r, Charge)]
    refused = [r for r in results if isinstance(r, InsufficientBalance)]
    assert len(accepted) == 1500 // 70 == 21
    assert len(refused) == 29
    assert balance(user) == 1500 - 21 * 70 == 30
    wallet_sum = LedgerEntry.objects.filter(account__user=user, account__kind="wallet").aggregate(
        total=Sum("amount")
    )["total"]
    assert wallet_sum == 30
    assert wallet_audit_run().ok


def test_same_idempotency_key_from_ten_threads_charges_once(setup):
    user, app = setup
    fund(user, 1000)

    def work(i: int):
        return services.wallet_charge(
            user=user,
            app=app,
            model="gpt-test",
            input_tokens=100,
            cached_input_tokens=0,
            output_tokens=0,
            idempotency_key="one-request",
        )

    results = run_concurrently(10, work)
    assert all(isinstance(r, Charge) for r in results), results
    assert len({r.pk for r in results}) == 1
    assert Charge.objects.count() == 1
    assert balance(user) == 900


def test_concurrent_holds_and_captures(setup):
    user, app = setup
    fund(user, 1000)

    def work(i: int):
        h = services.wallet_hold_create(user=user, app=app, amount=90, idempotency_key=f"h{i}")
        if i % 2:
            return services.wallet_hold_release(hold_id=h.pk, app=app, idempotency_key=f"r{i}")
        return services.wallet_hold_capture(
            hold_id=h.pk,
            app=app,
            model="gpt-test",
            input_tokens=40,
            cached_input_tokens=0,
            output_tokens=0,
            idempotency_key=f"c{i}",
        )

    results = run_concurrently(30, work)
    captured = [r for r in results if isinstance(r, Charge)]
    assert held(user) == 0
    assert balance(user) == 1000 - 40 * len(captured)
    assert all(not isinstance(r, Exception) or isinstance(r, InsufficientBalance) for r in results)
    assert wallet_audit_run().ok


def test_concurrent_capture_and_release_of_one_hold(setup):
    user, app = setup
    fund(user, 1000)
    h = services.wallet_hold_create(user=user, app=app, amount=500, idempotency_key="h")

    def work(i: int):
        if i % 2:
            return services.wallet_hold_release(hold_id=h.pk, app=app, idempotency_key=f"r{i}")
        return services.wallet_hold_capture(
            hold_id=h.pk,
            app=app,
            model="gpt-test",
            input_tokens=100,
            cached_input_tokens=0,
            output_tokens=0,
            idempotency_key=f"c{i}",
        )

    results = run_concurrently(10, work)
    winners = [r for r in results if not isinstance(r, HoldNotOpen)]
    assert len(winners) == 1
    assert balance(user) in (900, 1000)
    assert held(user) == 0
    assert wallet_audit_run().ok


def test_concurrent_refunds_never_exceed_the_charge(setup):
    user, app = setup
    fund(user, 1000)
    charge = services.wallet_charge(
        user=user,
        app=app,
        model="gpt-test",
        input_tokens=300,
        cached_input_tokens=0,
        output_tokens=0,
        idempotency_key="c",
    )

    def work(i: int):
        return services.wallet_refund(
            charge_id=charge.pk, app=app, amount=70, idempotency_key=f"refund-{i}"
        )

    results = run_concurrently(12, work)
    assert sum(1 for r in results if isinstance(r, RefundTooLarge)) == 8
    charge.refresh_from_db()
    assert charge.refunded_amount == 280
    assert balance(user) == 980
    assert wallet_audit_run().ok


def test_concurrent_redemption_of_one_code_credits_once(setup):
    _user, _app = setup
    staff = UserFactory(is_staff=True)
    _batch, codes = services.redemption_batch_create(
        name="launch",
        amount=500,
        count=1,
        codes_expire_at=timezone.now() + timedelta(days=1),
        credit_valid_days=None,
        created_by=staff,
    )
    users = [UserFactory() for _ in range(10)]

    def work(i: int):
        return services.wallet_code_redeem(user=users[i], code=codes[0])

    results = run_concurrently(10, work)
    credited = [u for u, r in zip(users, results, strict=True) if not isinstance(r, Exception)]
    assert len(credited) == 1
    assert sum(balance(u) for u in users) == 500
    assert wallet_audit_run().ok


def test_concurrent_payment_notifications_credit_once(setup):
    user, _app = setup

    def work(i: int):
        return services.wallet_topup_credit(
            provider="test", provider_transaction_id="pay_1", user=user, amount=250
        )

    results = run_concurrently(10, work)
    assert sum(1 for _topup, created in results if created) == 1
    assert balance(user) == 250


def test_concurrent_first_use_creates_one_wallet(db):
    fresh = UserFactory()
    run_concurrently(
        8,
        lambda i: services.wallet_topup_credit(
            provider="test", provider_transaction_id=new_key(), user=fresh, amount=10
        ),
    )
    assert balance(fresh) == 80


def test_concurrent_staff_credits_with_one_form_key_credit_once(setup):
    user, _app = setup
    staff = UserFactory(is_staff=True)

    def work(i: int):
        return services.wallet_staff_credit(
            user=user, amount=100, reason="outage", actor=staff, idempotency_key="form-1"
        )

    results = run_concurrently(10, work)
    assert len({bucket.pk for bucket in results}) == 1
    assert balance(user) == 100


def test_concurrent_plan_grants_grant_once_per_period(setup):
    from wallet.models import Plan, PlanGrant, Subscription

    user, _app = setup
    plan = Plan.objects.create(name="Pro", allotment=1000)
    subscription = Subscription.objects.create(user=user, plan=plan)

    results = run_concurrently(8, lambda i: services.subscriptions_grant_due())
    assert sum(results) == 1
    assert PlanGrant.objects.filter(subscription=subscription).count() == 1
    assert balance(user) == 1000


def test_bucket_expiry_racing_charges_keeps_the_ledger_whole(setup):
    from freezegun import freeze_time

    user, app = setup
    fund(user, 500, expires_at=timezone.now() + timedelta(minutes=1))
    fund(user, 500)
    later = timezone.now() + timedelta(minutes=2)

    def work(i: int):
        if i % 3 == 0:
            return services.wallet_buckets_expire_due()
        return services.wallet_charge(
            user=user,
            app=app,
            model="gpt-test",
            input_tokens=60,
            cached_input_tokens=0,
            output_tokens=0,
            idempotency_key=f"e{i}",
        )

    with freeze_time(later):
        results = run_concurrently(24, work)
    charged = sum(1 for r in results if isinstance(r, Charge))
    # The 500 promotional tokens expired before any charge could use them.
    assert charged == 500 // 60
    assert balance(user) == 500 - 60 * charged
    assert wallet_audit_run().ok


def test_concurrent_captures_and_folds_leave_balances_equal_to_entries(setup):
    """Shared accounts' balances move through deltas that folds move into the cached rows
    while captures keep posting: nothing is lost or counted twice."""
    from partners.agreements.models import Agreement, SplitLine
    from partners.agreements.services import agreement_create

    user, app = setup
    agreement_create(
        partner_id=app.partner_id,
        kind=Agreement.Kind.REVENUE_SHARE,
        effective_from=timezone.now() - timedelta(days=1),
        share_bps=2_000,
    )
    others = [UserFactory() for _ in range(3)]
    for person in [user, *others]:
        fund(person, 10_000)
    holds = [
        services.wallet_hold_create(
            user=person, app=app, amount=500, idempotency_key=f"fold-hold-{n}-{person.pk}"
        )
        for n in range(8)
        for person in [user, *others]
    ]

    def work(i: int):
        if i % 4 == 3:
            return services.wallet_balances_fold()
        hold = holds[i - (i + 1) // 4]  # every fourth thread folds
        return services.wallet_hold_capture(
            hold_id=hold.pk,
            app=app,
            model="gpt-test",
            input_tokens=100 + i,
            cached_input_tokens=0,
            output_tokens=0,
            idempotency_key=f"fold-capture-{hold.pk}",
        )

    results = run_concurrently(len(holds) * 4 // 3, work)
    captured = [r for r in results if isinstance(r, Charge)]
    assert len(captured) == len(holds)
    # Mid-flight, readers see the entries' sum whatever has been folded
    assert wallet_audit_run().ok
    services.wallet_balances_fold()
    assert not BalanceDelta.objects.exists()
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    payable = LedgerAccount.objects.get(kind="partner_payable", partner_id=app.partner_id)
    for account in (revenue, payable):
        account.refresh_from_db()
        entries = LedgerEntry.objects.filter(account=account).aggregate(total=Sum("amount"))
        assert account.balance == entries["total"]
    total = sum(charge.amount for charge in captured)
    assert revenue.balance + payable.balance == total
    lines = SplitLine.objects.filter(partner_id=app.partner_id).aggregate(total=Sum("amount"))
    assert payable.balance == lines["total"] > 0
    assert wallet_audit_run().ok
