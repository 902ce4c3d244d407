"""The set-based usage batch (wallet.batch.wallet_usage_batch_charge): every record gets the outcome
it would get if charged on its own in order, in one transaction with a bounded number of
queries, and concurrent batches on one wallet neither overdraw it nor charge a key twice."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from partners.agreements import services as agreements
from partners.agreements.models import Agreement, SplitLine
from tests.factories import PartnerFactory, PriceFactory, UserFactory, WalletAppFactory
from tests.wallet.conftest import balance, current_balance, fund, new_key
from wallet import batch as wallet_batch
from wallet import services
from wallet.audit import wallet_audit_run
from wallet.exceptions import (
    AllowanceExceeded,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidRequest,
    UnknownModel,
    WalletError,
)
from wallet.ledger import system_account
from wallet.models import Bucket, Charge, IdempotencyKey, LedgerAccount, LedgerEntry


def usage(model="gpt-test", i=0, c=0, o=0):
    return {"model": model, "input_tokens": i, "cached_input_tokens": c, "output_tokens": o}


def batch(user, app, records):
    return wallet_batch.wallet_usage_batch_charge(user=user, app=app, records=records)


def agreements_for(*, app_partner, vendor, model_name):
    """A tiered revenue share, a capability purchase and a co-building commitment with a
    share: every tally that a record carries to the next one."""
    since = timezone.now() - timedelta(days=40)
    agreements.agreement_create(
        partner_id=app_partner.pk,
        kind=Agreement.Kind.REVENUE_SHARE,
        share_bps=7000,
        tiers=[{"from": 1500, "bps": 8500}],
        effective_from=since,
    )
    agreements.agreement_create(
        partner_id=vendor.pk,
        kind=Agreement.Kind.CAPABILITY_PURCHASE,
        model_name=model_name,
        input_per_million=100_000,
        output_per_million=200_000,
        effective_from=since,
    )
    builder = PartnerFactory()
    agreements.agreement_create(
        partner_id=builder.pk,
        kind=Agreement.Kind.CO_BUILDING,
        model_name=model_name,
        input_per_million=50_000,
        output_per_million=50_000,
        committed_amount=120,
        share_bps=300,
        effective_from=since,
    )


@pytest.mark.django_db
def test_a_batch_splits_exactly_as_the_same_charges_one_by_one():
    amounts = [(1000, 0), (777, 33), (1000, 10), (5, 0), (2000, 1)]
    worlds = []
    for name in ("one-by-one", "batched"):
        app_partner, vendor = PartnerFactory(), PartnerFactory()
        PriceFactory(model__name=name, model__vendor=vendor)
        agreements_for(app_partner=app_partner, vendor=vendor, model_name=name)
        user = UserFactory()
        fund(user, 100_000)
        worlds.append((WalletAppFactory(partner=app_partner), user, name))

    (app1, user1, m1), (app2, user2, m2) = worlds
    single = [
        services.wallet_charge(
            user=user1,
            app=app1,
            model=m1,
            input_tokens=i,
            cached_input_tokens=0,
            output_tokens=o,
            idempotency_key=new_key(),
        )
        for i, o in amounts
    ]
    batched = batch(user2, app2, [(new_key(), usage(m2, i=i, o=o)) for i, o in amounts])

    assert [c.amount for c in batched] == [c.amount for c in single]
    assert [[share for _pk, share in c.split] for c in batched] == [
        [share for _pk, share in c.split] for c in single
    ]

    def lines(app):
        rows = SplitLine.objects.filter(app_id=app.pk).order_by("ledger_transaction_id", "pk")
        return [(r.role, r.gross, r.amount, r.agreement_version) for r in rows]

    assert lines(app2) == lines(app1)
    assert len(lines(app2)) == 4 * len(amounts)
    assert balance(user2) == balance(user1)
    for charge in batched:
        legs = LedgerEntry.objects.filter(transaction_id=charge.transaction_id)
        assert legs.aggregate(t=Sum("amount"))["t"] == 0
        assert charge.price.model.name == m2
    assert wallet_audit_run().ok


@pytest.mark.django_db
def test_each_record_gets_its_own_outcome(user, app, price):
    fund(user, 1000)
    services.allowance_set(user=user, app=app, monthly_limit=900)
    earlier = services.wallet_charge(
        user=user,
        app=app,
        model="gpt-test",
        input_tokens=100,
        cached_input_tokens=0,
        output_tokens=0,
        idempotency_key="earlier",
    )
    records = [
        ("earlier", usage(i=100)),  # replay of a charge made before: the same charge
        ("conflict", usage(i=1)),
        ("a", usage(i=300)),
        ("unknown", usage("no-such-model", i=1)),
        ("bad", usage(i=-1)),
        ("too-much-for-allowance", usage(i=600)),
        ("b", usage(i=400)),
        ("a", usage(i=300)),  # the same key twice in a batch: the same charge
        ("a", usage(i=301)),  # ... or a conflict with another body
        ("", usage(i=1)),
        ("no-model", {"input_tokens": 1}),
    ]
    IdempotencyKey.objects.create(app=app, key="conflict", operation="charge", request_hash="x")

    outcomes = batch(user, app, records)

    assert outcomes[0] == earlier
    assert isinstance(outcomes[1], IdempotencyConflict)
    assert isinstance(outcomes[2], Charge) and outcomes[2].amount == 300
    assert isinstance(outcomes[3], UnknownModel)
    assert isinstance(outcomes[4], InvalidRequest)
    assert isinstance(outcomes[5], AllowanceExceeded)
    assert outcomes[5].details == {"monthly_limit": 900, "used": 400, "requested": 600}
    assert isinstance(outcomes[6], Charge) and outcomes[6].amount == 400
    assert outcomes[7] == outcomes[2]
    assert isinstance(outcomes[8], IdempotencyConflict)
    assert isinstance(outcomes[9], InvalidRequest)
    assert isinstance(outcomes[10], InvalidRequest)
    assert balance(user) == 200
    # A failed record stores nothing: its key may be used again.
    assert not IdempotencyKey.objects.filter(app=app, key="too-much-for-allowance").exists()
    assert IdempotencyKey.objects.get(app=app, key="b").result == {"charge": outcomes[6].pk}
    services.allowance_set(user=user, app=app, monthly_limit=10_000)
    fund(user, 1000)
    (retried,) = batch(user, app, [("too-much-for-allowance", usage(i=600))])
    assert isinstance(retried, Charge)
    (short,) = batch(user, app, [(new_key(), usage(i=601))])
    assert isinstance(short, InsufficientBalance)
    assert short.details == {"available": 600, "required": 601}
    assert wallet_audit_run().ok


@pytest.mark.django_db
def test_records_draw_the_soonest_expiring_bucket_first(user, app, price):
    fund(user, 100)  # never expires
    later = fund(user, 100, expires_at=timezone.now() + timedelta(days=9))
    sooner = fund(user, 50, expires_at=timezone.now() + timedelta(days=1))
    expired = fund(user, 70, expires_at=timezone.now() + timedelta(days=1))
    Bucket.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    outcomes = batch(user, app, [(new_key(), usage(i=40)), (new_key(), usage(i=40))])

    assert all(isinstance(o, Charge) for o in outcomes)
    remaining = dict(Bucket.objects.values_list("pk", "remaining"))
    assert remaining[sooner.pk] == 0
    assert remaining[later.pk] == 70
    assert remaining[expired.pk] == 0  # moved to breakage, never spent
    assert balance(user) == 170
    assert current_balance(system_account(LedgerAccount.Kind.BREAKAGE)) == 70
    assert wallet_audit_run().ok


@pytest.mark.django_db
def test_a_full_batch_takes_a_bounded_number_of_queries(
    user, app, price, django_assert_max_num_queries
):
    fund(user, 100_000)
    records = [(f"q{i}", usage(i=10)) for i in range(1000)]
    with django_assert_max_num_queries(40):
        outcomes = batch(user, app, records)
    assert sum(isinstance(o, Charge) for o in outcomes) == 1000
    assert balance(user) == 90_000


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_on_one_wallet_never_overdraw_nor_charge_a_key_twice():
    user = UserFactory()
    app = WalletAppFactory()
    PriceFactory(model__name="gpt-test", input_per_million=1_000_000)
    fund(user, 1000)
    fund(user, 500, expires_at=timezone.now() + timedelta(days=1))
    workers = 8
    barrier = threading.Barrier(workers)

    def work(n: int):
        try:
            barrier.wait(timeout=30)
            # Overlapping keys in different orders: the same record reaches several batches.
            keys = [f"k{(n + j) % 12}" for j in range(6)]
            if n % 2:
                keys.reverse()
            return batch(user, app, [(key, usage(i=100)) for key in keys])
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(work, range(workers)))

    charges = Charge.objects.filter(user=user)
    assert charges.count() == 12  # each of the 12 keys charged exactly once
    assert balance(user) == 1500 - 1200
    by_key = {}
    for outcomes in results:
        for outcome in outcomes:
            assert isinstance(outcome, Charge)
            by_key.setdefault(outcome.pk, 0)
    assert set(by_key) == set(charges.values_list("pk", flat=True))
    assert wallet_audit_run().ok


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_and_single_charges_stop_at_zero():
    user = UserFactory()
    app = WalletAppFactory()
    PriceFactory(model__name="gpt-test", input_per_million=1_000_000)
    fund(user, 2000)
    workers = 8
    barrier = threading.Barrier(workers)

    def work(n: int):
        try:
            barrier.wait(timeout=30)
            if n % 2:
                try:
                    services.wallet_charge(
                        user=user,
                        app=app,
                        model="gpt-test",
                        input_tokens=100,
                        cached_input_tokens=0,
                        output_tokens=0,
                        idempotency_key=f"s{n}",
                    )
                    return 1
                except InsufficientBalance:
                    return 0
            outcomes = batch(user, app, [(f"b{n}-{j}", usage(i=100)) for j in range(8)])
            return sum(isinstance(o, Charge) for o in outcomes)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        charged = sum(pool.map(work, range(workers)))

    assert charged == 20
    assert balance(user) == 0
    assert Charge.objects.filter(user=user).count() == 20
    assert wallet_audit_run().ok


@pytest.mark.django_db
def test_batch_charges_are_represented_as_the_charge_endpoint_does(user, app, price):
    from rest_framework.test import APIClient

    from tests.wallet.test_api import token_for

    fund(user, 10_000)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, app)}")
    records = [{"model": "gpt-test", "input_tokens": 10, "output_tokens": n} for n in range(3)]
    body = api.post(
        "/api/wallet/usage/batch/", {"records": records}, format="json", HTTP_IDEMPOTENCY_KEY="r"
    ).json()
    for result in body["results"]:
        charge = result["charge"]
        assert charge == api.get(f"/api/wallet/charges/{charge['id']}/").json()


@pytest.mark.django_db
def test_a_record_replays_or_conflicts_with_a_single_charge_on_an_unusual_model_name(user, app):
    # The batch writes the request hash out by hand: it must be the single charge's, byte for
    # byte, whatever the model name holds (quotes, backslashes, non-ASCII).
    name = 'модель "q" \\ 模型'
    PriceFactory(model__name=name, input_per_million=1_000_000)
    fund(user, 1000)
    single = services.wallet_charge(
        user=user,
        app=app,
        model=name,
        input_tokens=7,
        cached_input_tokens=0,
        output_tokens=0,
        idempotency_key="same",
    )

    replay, conflict = batch(user, app, [("same", usage(name, i=7)), ("same", usage(name, i=8))])

    assert replay == single
    assert isinstance(conflict, IdempotencyConflict)
    assert balance(user) == 993


@pytest.mark.django_db
def test_array_literals_carry_any_text_and_integer_to_the_database():
    texts = ["a", "", "NULL", "a,b", "{x}", '"q"', "back\\slash", " s ", "ü 模型", "it's", "\t\n"]
    integers = [0, -1, 2**62, 5]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT %s::text[], %s::bigint[]",
            [wallet_batch.text_array(texts), wallet_batch.int_array(integers)],
        )
        assert cursor.fetchone() == (texts, integers)


def _world(name, *, agreements):
    app_partner, vendor = PartnerFactory(), PartnerFactory()
    tiered = f"{name}-tiered"
    PriceFactory(model__name=tiered, model__vendor=vendor)
    PriceFactory(model__name=f"{name}-plain", model__vendor=vendor)
    if agreements:
        agreements_for(app_partner=app_partner, vendor=vendor, model_name=tiered)
    user = UserFactory()
    fund(user, 26_000)
    app = WalletAppFactory(partner=app_partner)
    services.allowance_set(user=user, app=app, monthly_limit=28_000)
    return user, app


def _mixed_records(name):
    """Records on a model with a tiered share and a commitment (each record moves the month's
    tallies) and on a model without agreements, some of them equal, replays of earlier keys,
    a duplicate, a conflict and failures."""
    records = []
    for n in range(24):
        if n % 3 == 0:
            records.append((f"t{n}", usage(f"{name}-tiered", i=300, o=10)))  # equal records
        elif n % 3 == 1:
            records.append((f"p{n}", usage(f"{name}-plain", i=200, o=5)))  # equal records
        else:
            records.append((f"v{n}", usage(f"{name}-tiered", i=100 + n, c=n, o=n)))
    records[5] = ("t0", usage(f"{name}-tiered", i=300, o=10))  # the same key twice
    records[8] = ("p1", usage(f"{name}-plain", i=1))  # the same key, another body
    records[11] = ("unknown", usage("no-such-model", i=1))
    records[14] = ("bad", usage(f"{name}-plain", i=-1))
    records.append(("too-much", usage(f"{name}-plain", i=22_000)))  # balance
    records.append(("over-allowance", usage(f"{name}-plain", i=23_500)))
    return records


def _lines(app):
    rows = SplitLine.objects.filter(app_id=app.pk).order_by("ledger_transaction_id", "pk")
    return [
        (
            r.role,
            r.model_name.split("-")[-1],
            r.gross,
            r.amount,
            r.agreement_version,
            r.input_tokens,
            r.cached_input_tokens,
            r.output_tokens,
        )
        for r in rows
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("agreements", [True, False])
def test_a_mixed_batch_gives_what_charging_its_records_one_by_one_gives(agreements):
    revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
    (user1, app1), (user2, app2) = (
        _world("single", agreements=agreements),
        _world("batched", agreements=agreements),
    )
    # A charge made earlier through the single endpoint, which both replay.
    for user, app, name in ((user1, app1, "single"), (user2, app2, "batched")):
        services.wallet_charge(
            user=user,
            app=app,
            model=f"{name}-plain",
            input_tokens=50,
            cached_input_tokens=0,
            output_tokens=0,
            idempotency_key="earlier",
        )
    revenue.refresh_from_db()
    revenue_before = revenue.balance

    one_by_one = []
    for key, record in [*_mixed_records("single"), ("earlier", usage("single-plain", i=50))]:
        try:
            one_by_one.append(
                services.wallet_charge(user=user1, app=app1, idempotency_key=key, **record)
            )
        except WalletError as error:
            one_by_one.append(error)
    revenue.refresh_from_db()
    revenue_single, revenue_before = revenue.balance - revenue_before, revenue.balance

    batched = batch(
        user2, app2, [*_mixed_records("batched"), ("earlier", usage("batched-plain", i=50))]
    )
    revenue.refresh_from_db()

    def shape(outcome):
        if isinstance(outcome, Charge):
            return ("charge", outcome.amount, [share for _pk, share in outcome.split])
        return (type(outcome).__name__, outcome.details and sorted(outcome.details))

    assert [shape(o) for o in batched] == [shape(o) for o in one_by_one]
    failed = {i: type(o) for i, o in enumerate(batched) if not isinstance(o, Charge)}
    assert failed == {
        8: IdempotencyConflict,
        11: UnknownModel,
        14: InvalidRequest,
        24: InsufficientBalance,
        25: AllowanceExceeded,
    }
    assert batched[5] == batched[0] and batched[-1].pk < batched[0].pk  # replays
    assert _lines(app2) == _lines(app1)
    assert bool(_lines(app2)) is agreements
    assert balance(user2) == balance(user1)
    assert revenue.balance - revenue_before == revenue_single
    payables = [
        sorted(
            LedgerAccount.objects.filter(
                kind=LedgerAccount.Kind.PARTNER_PAYABLE, entries__transaction__metadata__app=a.pk
            )
            .distinct()
            .values_list("balance", flat=True)
        )
        for a in (app1, app2)
    ]
    assert payables[0] == payables[1]
    for outcome in batched:
        if isinstance(outcome, Charge):
            stored = Charge.objects.get(pk=outcome.pk)
            assert (stored.split, stored.transaction_id) == (outcome.split, outcome.transaction_id)
    # A refund reverses the split the batch stored, as for any charge.
    services.wallet_refund(
        charge_id=batched[2].pk, app=app2, amount=batched[2].amount // 2, idempotency_key="r"
    )
    audit = wallet_audit_run()
    assert audit.ok, audit.problems


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_a_batch_whose_entries_do_not_balance(monkeypatch):
    # The batch checks its legs in Python; the deferred trigger must still refuse what slips
    # through, before any balance moves, and the whole batch rolls back.
    from django.db import DatabaseError

    user, app = UserFactory(), WalletAppFactory()
    PriceFactory(model__name="gpt-test", input_per_million=1_000_000)
    fund(user, 1000)
    real = wallet_batch._posting_of

    def unbalanced(**kwargs):
        posting = real(**kwargs)
        return posting._replace(entries=posting.entries[:1])

    monkeypatch.setattr(wallet_batch, "_posting_of", unbalanced)

    with pytest.raises(DatabaseError, match="unbalanced"):
        batch(user, app, [(new_key(), usage(i=100)), (new_key(), usage(i=200))])

    assert balance(user) == 1000
    assert not Charge.objects.exists()
    assert not IdempotencyKey.objects.filter(app=app).exists()
    assert wallet_audit_run().ok


@pytest.mark.django_db(transaction=True)
def test_a_batch_leaves_the_platform_revenue_row_free_until_it_is_about_to_commit(monkeypatch):
    # Every charge on the platform pays the revenue account; a batch must not hold that row's
    # lock while it writes its rows, or every other charge would wait for it (postings append
    # deltas to shared accounts instead of updating them).
    PriceFactory(model__name="gpt-test", input_per_million=1_000_000)
    app = WalletAppFactory()
    batch_user, other_user = UserFactory(), UserFactory()
    fund(batch_user, 10_000)
    fund(other_user, 10_000)
    system_account(LedgerAccount.Kind.PLATFORM_REVENUE)  # as on any platform that has charged
    written, resume = threading.Event(), threading.Event()
    real_post = wallet_batch._post

    def post_then_wait(**kwargs):
        real_post(**kwargs)
        written.set()
        assert resume.wait(timeout=30)

    monkeypatch.setattr(wallet_batch, "_post", post_then_wait)

    def run_batch():
        try:
            return batch(batch_user, app, [(f"b{n}", usage(i=10)) for n in range(100)])
        finally:
            connection.close()

    def run_single():
        try:
            return services.wallet_charge(
                user=other_user,
                app=app,
                model="gpt-test",
                input_tokens=7,
                cached_input_tokens=0,
                output_tokens=0,
                idempotency_key="single",
            )
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        batched = pool.submit(run_batch)
        assert written.wait(timeout=30)
        # The batch has written all its rows and still holds its transaction open.
        single = pool.submit(run_single)
        charge = single.result(timeout=15)
        assert not batched.done()
        resume.set()
        outcomes = batched.result(timeout=30)

    assert charge.amount == 7
    assert all(isinstance(o, Charge) for o in outcomes)
    assert balance(batch_user) == 9000
    assert current_balance(system_account(LedgerAccount.Kind.PLATFORM_REVENUE)) == 1007
    assert wallet_audit_run().ok
