from datetime import timedelta

import pytest
from django.utils import timezone
from freezegun import freeze_time

from tests.factories import PriceFactory, WalletAppFactory
from tests.wallet.conftest import balance, current_balance, fund, held, new_key
from wallet import services
from wallet.exceptions import (
    AllowanceExceeded,
    HoldNotOpen,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidRequest,
    NotFound,
    RefundTooLarge,
    UnknownModel,
)
from wallet.ledger import system_account
from wallet.models import Charge, Hold, IdempotencyKey, LedgerAccount, LedgerTransaction

pytestmark = pytest.mark.django_db


def revenue() -> int:
    return current_balance(system_account(LedgerAccount.Kind.PLATFORM_REVENUE))


def hold(user, app, amount, key=None):
    return services.wallet_hold_create(
        user=user, app=app, amount=amount, idempotency_key=key or new_key()
    )


def capture(h, app, i=0, c=0, o=0, model="gpt-test", key=None):
    return services.wallet_hold_capture(
        hold_id=h.pk,
        app=app,
        model=model,
        input_tokens=i,
        cached_input_tokens=c,
        output_tokens=o,
        idempotency_key=key or new_key(),
    )


def charge(user, app, i=0, c=0, o=0, model="gpt-test", key=None):
    return services.wallet_charge(
        user=user,
        app=app,
        model=model,
        input_tokens=i,
        cached_input_tokens=c,
        output_tokens=o,
        idempotency_key=key or new_key(),
    )


def test_hold_moves_tokens_to_holds_in_flight(user, app, price):
    fund(user, 1000)
    h = hold(user, app, 300)
    assert h.status == Hold.Status.OPEN
    assert (balance(user), held(user)) == (700, 300)
    assert h.expires_at > timezone.now()


def test_hold_beyond_balance_is_refused_and_writes_nothing(user, app, price):
    fund(user, 100)
    before = LedgerTransaction.objects.count()
    with pytest.raises(InsufficientBalance) as error:
        hold(user, app, 101)
    assert error.value.details == {"available": 100, "required": 101}
    assert LedgerTransaction.objects.count() == before
    assert not IdempotencyKey.objects.exists()
    assert (balance(user), held(user)) == (100, 0)


@pytest.mark.parametrize("amount", [0, -5, 1.0, "10", True, 10**16])
def test_hold_amount_must_be_a_positive_integer(user, app, amount):
    with pytest.raises(InvalidRequest):
        hold(user, app, amount)


def test_capture_prices_usage_releases_rest_and_pays_platform(user, app, price):
    fund(user, 10_000)
    h = hold(user, app, 5000)
    # 1000 input * 1 + 1000 cached * 0.1 + 500 output * 2 = 2100
    c = capture(h, app, i=1000, c=1000, o=500)
    assert (c.cost, c.amount, c.price_id) == (2100, 2100, price.pk)
    assert (balance(user), held(user), revenue()) == (7900, 0, 2100)
    h.refresh_from_db()
    assert h.status == Hold.Status.CAPTURED
    entries = {e.account.kind: e.amount for e in c.transaction.entries.select_related("account")}
    assert entries == {"holds": -5000, "wallet": 2900, "platform_revenue": 2100}


def test_capture_takes_at_most_the_hold(user, app, price):
    fund(user, 10_000)
    h = hold(user, app, 100)
    c = capture(h, app, o=1000)
    assert (c.cost, c.amount) == (2000, 100)
    assert (balance(user), held(user), revenue()) == (9900, 0, 100)


def test_cost_rounds_up(user, app, price):
    fund(user, 10)
    c = charge(user, app, c=1)  # 0.1 token
    assert c.amount == 1
    assert balance(user) == 9


def test_charge_records_the_price_version_in_force(user, app, price):
    fund(user, 10_000)
    first = charge(user, app, i=100)
    newer = PriceFactory(
        model=price.model, effective_from=timezone.now(), input_per_million=3_000_000
    )
    second = charge(user, app, i=100)
    assert (first.price, first.amount) == (price, 100)
    assert (second.price, second.amount) == (newer, 300)


def test_release_returns_everything(user, app, price):
    fund(user, 1000)
    h = hold(user, app, 400)
    services.wallet_hold_release(hold_id=h.pk, app=app, idempotency_key=new_key())
    h.refresh_from_db()
    assert h.status == Hold.Status.RELEASED
    assert (balance(user), held(user)) == (1000, 0)
    with pytest.raises(HoldNotOpen):
        capture(h, app, i=1)
    with pytest.raises(HoldNotOpen):
        services.wallet_hold_release(hold_id=h.pk, app=app, idempotency_key=new_key())


def test_captured_hold_cannot_be_captured_again(user, app, price):
    fund(user, 1000)
    h = hold(user, app, 400)
    capture(h, app, i=10)
    with pytest.raises(HoldNotOpen):
        capture(h, app, i=10)
    assert Charge.objects.count() == 1


def test_another_app_cannot_touch_a_hold(user, app, price):
    fund(user, 1000)
    h = hold(user, app, 400)
    other = WalletAppFactory()
    with pytest.raises(NotFound):
        capture(h, other, i=1)
    with pytest.raises(NotFound):
        services.wallet_hold_release(hold_id=h.pk, app=other, idempotency_key=new_key())
    with pytest.raises(NotFound):
        services.wallet_hold_release(hold_id="nonsense", app=app, idempotency_key=new_key())


def test_capture_with_unknown_model_keeps_hold_open(user, app, price):
    fund(user, 1000)
    h = hold(user, app, 400)
    with pytest.raises(UnknownModel):
        capture(h, app, i=1, model="no-such-model")
    h.refresh_from_db()
    assert h.status == Hold.Status.OPEN


def test_expired_holds_are_released_by_the_task(user, app, price, settings):
    fund(user, 1000)
    h = hold(user, app, 400)
    from wallet.tasks import holds_expire

    assert holds_expire.delay().get() == 0
    with freeze_time(timezone.now() + settings.WALLET_HOLD_TTL + timedelta(seconds=1)):
        with pytest.raises(HoldNotOpen):
            capture(h, app, i=1)
        assert holds_expire.delay().get() == 1
        assert holds_expire.delay().get() == 0
    h.refresh_from_db()
    assert h.status == Hold.Status.EXPIRED
    assert (balance(user), held(user)) == (1000, 0)


def test_idempotent_replay_returns_first_result_and_conflict_on_other_body(user, app, price):
    fund(user, 1000)
    first = hold(user, app, 100, key="same")
    again = hold(user, app, 100, key="same")
    assert again.pk == first.pk
    assert (balance(user), held(user)) == (900, 100)
    with pytest.raises(IdempotencyConflict):
        hold(user, app, 200, key="same")
    # The key belongs to the app: another app may use the same string.
    other = WalletAppFactory()
    hold(user, other, 50, key="same")
    assert held(user) == 150


def test_charge_replay_charges_once(user, app, price):
    fund(user, 1000)
    a = charge(user, app, i=100, key="c1")
    b = charge(user, app, i=100, key="c1")
    assert a.pk == b.pk
    assert balance(user) == 900
    with pytest.raises(IdempotencyConflict):
        charge(user, app, i=101, key="c1")


def test_refunds_partial_and_full_never_beyond_the_charge(user, app, price):
    fund(user, 1000)
    c = charge(user, app, i=300)
    services.wallet_refund(charge_id=c.pk, app=app, amount=100, idempotency_key=new_key())
    assert (balance(user), revenue()) == (800, 200)
    with pytest.raises(RefundTooLarge):
        services.wallet_refund(charge_id=c.pk, app=app, amount=201, idempotency_key=new_key())
    services.wallet_refund(charge_id=c.pk, app=app, amount=200, idempotency_key=new_key())
    assert (balance(user), revenue()) == (1000, 0)
    with pytest.raises(RefundTooLarge):
        services.wallet_refund(charge_id=c.pk, app=app, amount=1, idempotency_key=new_key())
    c.refresh_from_db()
    assert c.refunded_amount == 300


def test_refund_replay_refunds_once(user, app, price):
    fund(user, 1000)
    c = charge(user, app, i=300)
    for _ in range(3):
        services.wallet_refund(charge_id=c.pk, app=app, amount=50, idempotency_key="r")
    assert balance(user) == 750


def test_refund_of_a_capture(user, app, price):
    fund(user, 1000)
    c = capture(hold(user, app, 500), app, i=200)
    services.wallet_refund(charge_id=c.pk, app=app, amount=200, idempotency_key=new_key())
    assert (balance(user), held(user), revenue()) == (1000, 0, 0)


def test_monthly_allowance_counts_charges_and_open_holds(user, app, price):
    fund(user, 10_000)
    services.allowance_set(user=user, app=app, monthly_limit=500)
    charge(user, app, i=200)
    hold(user, app, 250)
    with pytest.raises(AllowanceExceeded) as error:
        hold(user, app, 51)
    assert error.value.details["used"] == 450
    with pytest.raises(AllowanceExceeded):
        charge(user, app, i=51)
    charge(user, app, i=50)
    # Another app has its own allowance (the default).
    services.wallet_charge(
        user=user,
        app=WalletAppFactory(),
        model="gpt-test",
        input_tokens=1000,
        cached_input_tokens=0,
        output_tokens=0,
        idempotency_key=new_key(),
    )


def test_default_allowance_comes_from_settings(user, app, price, settings):
    settings.WALLET_DEFAULT_MONTHLY_ALLOWANCE = 100
    fund(user, 10_000)
    charge(user, app, i=100)
    with pytest.raises(AllowanceExceeded):
        charge(user, app, i=1)


def test_allowance_resets_each_calendar_month(user, app, price):
    fund(user, 10_000)
    services.allowance_set(user=user, app=app, monthly_limit=100)
    with freeze_time("2031-01-31 23:59:00"):
        charge(user, app, i=100)
        with pytest.raises(AllowanceExceeded):
            charge(user, app, i=1)
    with freeze_time("2031-02-01 00:00:01"):
        charge(user, app, i=100)


def test_refund_tells_the_apps_partner_through_the_webhook_outbox(user, app, price):
    from partners.webhooks.models import WebhookEvent
    from partners.webhooks.services import webhook_endpoint_create

    webhook_endpoint_create(
        partner=app.partner, url="https://partner.example/hooks", event_types=["charge.refunded"]
    )
    fund(user, 1000)
    c = charge(user, app, i=300)
    with pytest.raises(RefundTooLarge):
        services.wallet_refund(charge_id=c.pk, app=app, amount=301, idempotency_key=new_key())
    assert not WebhookEvent.objects.exists()
    refund = services.wallet_refund(
        charge_id=c.pk, app=app, amount=100, idempotency_key="r", reason="bad answer"
    )
    event = WebhookEvent.objects.get(event_type="charge.refunded")
    assert event.partner == app.partner
    assert f'"id": {refund.pk}' in event.body or f'"id":{refund.pk}' in event.body
    # A replay of the refund sends nothing more.
    services.wallet_refund(
        charge_id=c.pk, app=app, amount=100, idempotency_key="r", reason="bad answer"
    )
    assert WebhookEvent.objects.count() == 1
