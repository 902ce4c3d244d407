"""Settlement on a real Celery worker (a subprocess on the Redis broker) against PostgreSQL:
a month of charges under each cooperation model settles to amounts computed here
independently; a worker SIGKILLed mid-run and restarted leaves exactly one statement; two
runs at once yield one; a rerun of a closed period changes nothing."""

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from freezegun import freeze_time

from config.celery_app import app as celery_app
from partners.agreements import services as agreements
from partners.agreements.models import Agreement
from partners.settlement.models import Statement, StatementLine
from partners.settlement.selectors import settlement_reconcile
from partners.settlement.services import CLOSE_LOCK_NAMESPACE
from tests.factories import PartnerFactory, PriceFactory, UserFactory, WalletAppFactory
from tests.partners.settlement_worker import Worker, send, wait_for
from tests.wallet.conftest import fund, new_key
from wallet import services as wallet

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)
CLOSE = "partners.settlement.close"


@pytest.fixture
def workers(tmp_path):
    """start(**env) -> Worker; every worker is stopped (or already killed) at the end."""
    celery_app.control.purge()
    started: list[Worker] = []

    def start(**env: str) -> Worker:
        worker = Worker(tmp_path / f"worker-{len(started)}.log", env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    celery_app.control.purge()


def statements(partner, period_kind="month"):
    return Statement.objects.filter(partner=partner, period_kind=period_kind)


def retail(i: int, c: int, o: int) -> int:
    """The wallet's price of the test models: 1, 0.1 and 2 tokens per input, cached and
    output token, rounded up."""
    return -(-(i * 1_000_000 + c * 100_000 + o * 2_000_000) // 1_000_000)


@pytest.fixture
def month_of_charges():
    """October 2026: two app partners (tiered and flat revenue share), a model vendor
    (capability purchase) and a co-builder (cost up to a commitment plus a share), and a
    charge or capture for each app on each day. Returns the partners and the amounts each one
    should get, computed here independently of the services."""
    house = PartnerFactory(name="Platform models")
    tiered = PartnerFactory(name="Tiered apps")
    flat = PartnerFactory(name="Flat apps")
    vendor = PartnerFactory(name="Vendor")
    builder = PartnerFactory(name="Builder")
    app_t = WalletAppFactory(partner=tiered)
    app_f = WalletAppFactory(partner=flat)
    since = datetime(2026, 9, 1, tzinfo=UTC)
    PriceFactory(model__name="vendor-model", model__vendor=vendor, effective_from=since)
    PriceFactory(model__name="cobuilt-model", model__vendor=house, effective_from=since)
    agreements.agreement_create(
        partner_id=tiered.pk,
        kind=Agreement.Kind.REVENUE_SHARE,
        share_bps=5000,
        tiers=[{"from": 40_000, "bps": 6000}],
        effective_from=since,
    )
    agreements.agreement_create(
        partner_id=flat.pk,
        kind=Agreement.Kind.REVENUE_SHARE,
        app_id=app_f.pk,
        share_bps=4500,
        effective_from=since,
    )
    agreements.agreement_create(
        partner_id=vendor.pk,
        kind=Agreement.Kind.CAPABILITY_PURCHASE,
        model_name="vendor-model",
        input_per_million=300_000,
        cached_input_per_million=30_000,
        output_per_million=600_000,
        effective_from=since,
    )
    agreements.agreement_create(
        partner_id=builder.pk,
        kind=Agreement.Kind.CO_BUILDING,
        model_name="cobuilt-model",
        input_per_million=200_000,
        cached_input_per_million=200_000,
        output_per_million=200_000,
        committed_amount=12_000,
        share_bps=500,
        effective_from=since,
    )
    users = [UserFactory() for _ in range(3)]
    for user in users:
        fund(user, 500_000)

    expected = {tiered.pk: 0, flat.pk: 0, vendor.pk: 0, builder.pk: 0}
    tier_spent = 0
    builder_cost_paid = 0
    day_15 = {tiered.pk: 0, flat.pk: 0, vendor.pk: 0, builder.pk: 0}
    for day in range(31):
        for n, (app, model) in enumerate([(app_t, "vendor-model"), (app_f, "cobuilt-model")]):
            user = users[(day + n) % 3]
            i, c, o = 1000 + 37 * day, 500 + day, 300 + 11 * day
            with freeze_time(OCTOBER + timedelta(days=day, hours=10 + n)):
                if day % 5 == 0:
                    held = wallet.wallet_hold_create(
                        user=user, app=app, amount=20_000, idempotency_key=new_key()
                    )
                    wallet.wallet_hold_capture(
                        hold_id=held.pk,
                        app=app,
                        model=model,
                        input_tokens=i,
                        cached_input_tokens=c,
                        output_tokens=o,
                        idempotency_key=new_key(),
                    )
                else:
                    wallet.wallet_charge(
                        user=user,
                        app=app,
                        model=model,
                        input_tokens=i,
                        cached_input_tokens=c,
                        output_tokens=o,
                        idempotency_key=new_key(),
                    )
            amount = retail(i, c, o)
            shares = {}
            # Supply first: the vendor's price, or the co-builder's cost within the commitment.
            if model == "vendor-model":
                shares[vendor.pk] = (i * 300_000 + c * 30_000 + o * 600_000) // 1_000_000
            else:
                cost = (i + c + o) * 200_000 // 1_000_000
                cost = min(cost, 12_000 - builder_cost_paid)
                builder_cost_paid += cost
                shares[builder.pk] = cost
            # Then the app partner's revenue share (tiers cut at the threshold).
            if app == app_t:
                low = max(0, min(tier_spent + amount, 40_000) - tier_spent)
                high = amount - low
                shares[tiered.pk] = (low * 5000 + high * 6000) // 10_000
                tier_spent += amount
            else:
                shares[flat.pk] = amount * 4500 // 10_000
            # Then the co-builder's revenue share.
            if model == "cobuilt-model":
                shares[builder.pk] += amount * 500 // 10_000
            assert sum(shares.values()) <= amount  # no capping in this scenario
            for pk, share in shares.items():
                expected[pk] += share
                if day == 14:
                    day_15[pk] += share
    return {
        "partners": {"tiered": tiered, "flat": flat, "vendor": vendor, "builder": builder},
        "expected": expected,
        "day_15": day_15,
    }


def test_a_month_of_charges_settles_to_the_independently_computed_amounts(
    workers, month_of_charges
):
    partners = month_of_charges["partners"]
    expected = month_of_charges["expected"]
    workers()

    # The beat's task queues every partner's missing periods; the October close is one on
    # the first of November. (The worker keeps the real clock, so the test says when.)
    send("partners.settlement.close_due", "2026-11-01T01:00:00+00:00")
    send(CLOSE, partners["tiered"].pk, "2026-10-15")
    wait_for(
        lambda: (
            Statement.objects.filter(period_kind="month", period_start="2026-10-01").count() == 4
        ),
        what="four October statements",
    )
    wait_for(
        lambda: statements(partners["tiered"], "day").filter(period_start="2026-10-15").exists(),
        what="the daily statement",
    )

    for name, partner in partners.items():
        statement = statements(partner).get(period_start="2026-10-01")
        assert statement.status == Statement.Status.DRAFT
        assert statement.earnings == statement.total == expected[partner.pk], name
        lines = statement.lines.all()
        assert sum(line.amount for line in lines) == expected[partner.pk]
        assert not lines.filter(kind=StatementLine.Kind.UNATTRIBUTED).exists()
        assert all(line.agreement_id and line.app_id and line.model_name for line in lines)
    # Lines by app, model and agreement: the co-builder has a cost line and a share line.
    builder_lines = statements(partners["builder"]).get().lines.order_by("role")
    assert [line.role for line in builder_lines] == ["cobuild_cost", "cobuild_share"]
    assert builder_lines[0].amount == 12_000  # the commitment was reached during the month
    daily = statements(partners["tiered"], "day").get(period_start="2026-10-15")
    assert daily.status == Statement.Status.CLOSED
    assert daily.total == month_of_charges["day_15"][partners["tiered"].pk]
    assert settlement_reconcile(period="2026-10").ok


def _lock_held(partner_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
            "AND objid = %s AND granted",
            [CLOSE_LOCK_NAMESPACE, partner_id],
        )
        return cursor.fetchone()[0] > 0


def test_a_worker_killed_mid_run_and_restarted_leaves_exactly_one_statement(
    workers, month_of_charges
):
    tiered = month_of_charges["partners"]["tiered"]
    slow = workers(SETTLEMENT_STEP_DELAY_SECONDS="3")
    send(CLOSE, tiered.pk, "2026-10")
    wait_for(lambda: _lock_held(tiered.pk), what="the run to start")
    time.sleep(4)  # past the aggregation and the statement insert, into the second pause

    slow.kill()

    assert not statements(tiered).exists()  # the open transaction died with the worker
    wait_for(lambda: not _lock_held(tiered.pk), what="PostgreSQL to end the dead session")
    time.sleep(2.5)  # the visibility timeout: the unacknowledged task is due again
    workers()
    wait_for(lambda: statements(tiered).exists(), what="the redelivered run")
    time.sleep(2)
    statement = statements(tiered).get()
    assert statement.total == month_of_charges["expected"][tiered.pk]
    assert statement.lines.count() == 1


def test_two_runs_at_once_yield_one_statement(workers, month_of_charges):
    vendor = month_of_charges["partners"]["vendor"]
    first = workers(SETTLEMENT_STEP_DELAY_SECONDS="1")
    second = workers(SETTLEMENT_STEP_DELAY_SECONDS="1")
    time.sleep(3)  # both consuming

    send(CLOSE, vendor.pk, "2026-10")
    send(CLOSE, vendor.pk, "2026-10")

    wait_for(
        lambda: first.output().count("succeeded") + second.output().count("succeeded") >= 2,
        what="both runs to finish",
    )
    statement = statements(vendor).get()
    assert statement.total == month_of_charges["expected"][vendor.pk]
    assert statement.lines.count() == 1
    assert "succeeded" in first.output() and "succeeded" in second.output()


def test_rerunning_a_closed_period_changes_nothing(workers, month_of_charges):
    flat = month_of_charges["partners"]["flat"]
    workers()
    send(CLOSE, flat.pk, "2026-10")
    wait_for(lambda: statements(flat).exists(), what="the first run")
    before = statements(flat).get()
    lines_before = list(before.lines.values())

    send(CLOSE, flat.pk, "2026-10")
    send(CLOSE, flat.pk, "2026-10")
    time.sleep(3)

    after = statements(flat).get()
    assert (after.pk, after.total, after.created_at) == (before.pk, before.total, before.created_at)
    assert list(after.lines.values()) == lines_before
