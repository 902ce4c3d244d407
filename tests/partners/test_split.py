"""The capture split through the wallet's real services: each agreement model, tiers that a
capture crosses, commitments, precedence, attribution rows, and concurrency on a tier."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone
from freezegun import freeze_time

from partners.agreements import services as agreements
from partners.agreements.models import Agreement, SplitLine
from tests.factories import PartnerFactory, PriceFactory, UserFactory, WalletAppFactory
from tests.wallet.conftest import current_balance, fund, new_key
from wallet import services
from wallet.ledger import system_account
from wallet.models import Charge, LedgerAccount, LedgerEntry

pytestmark = pytest.mark.django_db

RS = Agreement.Kind.REVENUE_SHARE
CP = Agreement.Kind.CAPABILITY_PURCHASE
CB = Agreement.Kind.CO_BUILDING


def payable(partner) -> int:
    account = LedgerAccount.objects.filter(partner=partner, kind="partner_payable").first()
    return current_balance(account) if account else 0


def revenue() -> int:
    return current_balance(system_account(LedgerAccount.Kind.PLATFORM_REVENUE))


def since_last_month():
    return timezone.now() - timedelta(days=40)


@pytest.fixture
def world(db):
    """An app partner with one app; a vendor whose model costs 1 token per input token and
    2 per output token; a user with 1,000,000 tokens."""
    app_partner = PartnerFactory(name="App Co")
    vendor = PartnerFactory(name="Vendor Co")
    app = WalletAppFactory(partner=app_partner)
    PriceFactory(
        model__name="m1",
        model__vendor=vendor,
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        input_per_million=1_000_000,
        cached_input_per_million=100_000,
        output_per_million=2_000_000,
    )
    user = UserFactory()
    fund(user, 1_000_000)
    return app_partner, vendor, app, user


def charge(user, app, i=0, c=0, o=0):
    return services.wallet_charge(
        user=user,
        app=app,
        model="m1",
        input_tokens=i,
        cached_input_tokens=c,
        output_tokens=o,
        idempotency_key=new_key(),
    )


def test_without_agreements_the_platform_keeps_everything(world):
    app_partner, vendor, app, user = world

    result = charge(user, app, i=1000)

    assert result.amount == 1000
    assert revenue() == 1000
    assert payable(app_partner) == payable(vendor) == 0
    assert not SplitLine.objects.exists()


def test_revenue_share_pays_the_app_partner_rounded_down_in_the_same_transaction(world):
    app_partner, _vendor, app, user = world
    agreement = agreements.agreement_create(
        partner_id=app_partner.pk, kind=RS, share_bps=7000, effective_from=since_last_month()
    )

    result = charge(user, app, i=999)  # 999 tokens: 69.93% is 699.3

    assert payable(app_partner) == 699
    assert revenue() == 300
    [line] = SplitLine.objects.all()
    assert line.ledger_transaction_id == result.transaction_id
    assert (line.partner_id, line.app_id, line.model_name) == (app_partner.pk, app.pk, "m1")
    assert (line.agreement_id, line.agreement_version, line.role) == (
        agreement.pk,
        1,
        SplitLine.Role.APP_SHARE,
    )
    assert (line.gross, line.amount, line.input_tokens) == (999, 699, 999)
    # The payable leg is in the charge's own ledger transaction.
    assert (
        LedgerEntry.objects.get(
            transaction_id=result.transaction_id, account__partner=app_partner
        ).amount
        == 699
    )


def test_a_capture_that_crosses_a_tier_is_cut_at_the_threshold(world):
    app_partner, _vendor, app, user = world
    agreements.agreement_create(
        partner_id=app_partner.pk,
        kind=RS,
        share_bps=7000,
        tiers=[{"from": 1500, "bps": 8500}],
        effective_from=since_last_month(),
    )

    charge(user, app, i=1000)  # all below 1500: 700
    assert payable(app_partner) == 700
    charge(user, app, i=1000)  # 500 at 70% + 500 at 85% = 350 + 425
    assert payable(app_partner) == 700 + 775
    charge(user, app, i=333)  # all above: 283.05 -> 283
    assert payable(app_partner) == 700 + 775 + 283
    assert revenue() == 2333 - (700 + 775 + 283)


def test_tier_volume_restarts_each_calendar_month(world):
    app_partner, _vendor, app, user = world
    with freeze_time("2026-09-30 23:00:00"):
        agreements.agreement_create(
            partner_id=app_partner.pk,
            kind=RS,
            share_bps=5000,
            tiers=[{"from": 1000, "bps": 9000}],
            effective_from=timezone.now() - timedelta(days=1),
        )
        charge(user, app, i=1000)
    with freeze_time("2026-10-01 00:30:00"):
        charge(user, app, i=1000)  # a new month: back in the first band

    assert payable(app_partner) == 500 + 500


def test_capability_purchase_pays_the_vendor_its_price_whatever_the_retail_price(world):
    _app_partner, vendor, app, user = world
    agreements.agreement_create(
        partner_id=vendor.pk,
        kind=CP,
        model_name="m1",
        input_per_million=400_000,
        cached_input_per_million=50_000,
        output_per_million=900_000,
        effective_from=since_last_month(),
    )

    result = charge(user, app, i=1000, c=1000, o=500)

    # Retail: 1000 + 100 + 1000 = 2100. Vendor: (400M + 50M + 450M) / 1M = 900.
    assert result.amount == 2100
    assert payable(vendor) == 900
    assert revenue() == 1200
    assert SplitLine.objects.get().role == SplitLine.Role.VENDOR_COST


def test_co_building_pays_cost_up_to_the_commitment_plus_a_share(world):
    _app_partner, _vendor, app, user = world
    builder = PartnerFactory(name="Compute Co")
    agreements.agreement_create(
        partner_id=builder.pk,
        kind=CB,
        model_name="m1",
        input_per_million=300_000,
        output_per_million=300_000,
        committed_amount=500,
        share_bps=1000,
        effective_from=since_last_month(),
    )

    charge(user, app, i=1000)  # cost 300 (of 500 committed) + 10% of 1000
    assert payable(builder) == 300 + 100
    charge(user, app, i=1000)  # only 200 of the commitment left
    assert payable(builder) == 300 + 100 + 200 + 100
    charge(user, app, i=1000)  # commitment used up: the share only
    assert payable(builder) == 300 + 100 + 200 + 100 + 0 + 100
    costs = SplitLine.objects.filter(role=SplitLine.Role.COBUILD_COST).order_by("pk")
    assert [line.amount for line in costs] == [300, 200, 0]


def test_supply_cost_comes_first_when_payouts_would_exceed_the_charge(world):
    app_partner, vendor, app, user = world
    agreements.agreement_create(
        partner_id=app_partner.pk, kind=RS, share_bps=6000, effective_from=since_last_month()
    )
    agreements.agreement_create(
        partner_id=vendor.pk,
        kind=CP,
        input_per_million=700_000,
        effective_from=since_last_month(),
    )

    charge(user, app, i=1000)  # vendor 700 first; the app wanted 600 and gets the 300 left

    assert payable(vendor) == 700
    assert payable(app_partner) == 300
    assert revenue() == 0
    charged = Charge.objects.get()
    assert sum(share for _account, share in charged.split) == charged.amount


def test_a_capture_splits_only_what_it_took_from_the_hold(world):
    app_partner, _vendor, app, user = world
    agreements.agreement_create(
        partner_id=app_partner.pk, kind=RS, share_bps=5000, effective_from=since_last_month()
    )
    held = services.wallet_hold_create(user=user, app=app, amount=600, idempotency_key=new_key())

    captured = services.wallet_hold_capture(
        hold_id=held.pk,
        app=app,
        model="m1",
        input_tokens=1000,
        cached_input_tokens=0,
        output_tokens=0,
        idempotency_key=new_key(),
    )

    assert (captured.cost, captured.amount) == (1000, 600)
    assert payable(app_partner) == 300
    assert SplitLine.objects.get().ledger_transaction_id == captured.transaction_id


def test_the_version_in_force_at_capture_time_applies(world):
    app_partner, _vendor, app, user = world
    start = timezone.now() - timedelta(days=10)
    first = agreements.agreement_create(
        partner_id=app_partner.pk, kind=RS, share_bps=5000, effective_from=start
    )
    with freeze_time(timezone.now() - timedelta(days=5)):
        charge(user, app, i=1000)
    second = agreements.agreement_create(
        partner_id=app_partner.pk,
        kind=RS,
        share_bps=8000,
        effective_from=timezone.now() - timedelta(days=1),
        supersede=True,
    )
    charge(user, app, i=1000)

    first.refresh_from_db()
    assert first.effective_to == second.effective_from
    assert second.version == 2
    lines = SplitLine.objects.order_by("pk")
    assert [(line.agreement_version, line.amount) for line in lines] == [(1, 500), (2, 800)]


def test_an_app_specific_share_wins_over_the_partner_wide_one(world):
    app_partner, _vendor, app, user = world
    other_app = WalletAppFactory(partner=app_partner)
    agreements.agreement_create(
        partner_id=app_partner.pk, kind=RS, share_bps=5000, effective_from=since_last_month()
    )
    agreements.agreement_create(
        partner_id=app_partner.pk,
        kind=RS,
        app_id=app.pk,
        share_bps=9000,
        effective_from=since_last_month(),
    )

    charge(user, app, i=1000)
    charge(user, other_app, i=1000)

    assert payable(app_partner) == 900 + 500


def test_a_refund_reverses_the_partner_legs_in_proportion(world):
    app_partner, _vendor, app, user = world
    agreements.agreement_create(
        partner_id=app_partner.pk, kind=RS, share_bps=7000, effective_from=since_last_month()
    )
    result = charge(user, app, i=1000)

    services.wallet_refund(charge_id=result.pk, app=app, amount=250, idempotency_key=new_key())

    assert payable(app_partner) == 700 - 175
    assert revenue() == 300 - 75


@pytest.mark.django_db(transaction=True)
def test_concurrent_captures_count_the_tier_volume_one_after_the_other():
    app_partner = PartnerFactory()
    app = WalletAppFactory(partner=app_partner)
    PriceFactory(model__name="m1", input_per_million=1_000_000)
    agreements.agreement_create(
        partner_id=app_partner.pk,
        kind=RS,
        share_bps=7000,
        tiers=[{"from": 4500, "bps": 8500}, {"from": 9000, "bps": 9500}],
        effective_from=since_last_month(),
    )
    users = [UserFactory() for _ in range(12)]
    for user in users:
        fund(user, 5000)
    barrier = threading.Barrier(len(users))

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            charge(users[i], app, i=1000)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        list(pool.map(work, range(len(users))))

    # Every band portion is a multiple of 100 tokens, so no capture rounds: serialized
    # captures add up to the share of the month's whole volume, whatever their order.
    expected = (4500 * 7000 + 4500 * 8500 + 3000 * 9500) // 10_000
    assert payable(app_partner) == expected
    assert SplitLine.objects.aggregate(t=Sum("amount"))["t"] == expected
