import json
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from tests.factories import UserFactory
from tests.wallet.conftest import balance, fund
from wallet import services
from wallet.exceptions import CodeNotRedeemable, TooManyAttempts
from wallet.models import Bucket, PaymentTopUp, Plan, PlanGrant, RedemptionCode
from wallet.payments import payment_provider_get
from wallet.tasks import plan_grants

pytestmark = pytest.mark.django_db

SECRET = "whsec-test-0123456789"


def make_codes(count=3, amount=500, days_valid=None, expires_in=timedelta(days=30)):
    return services.redemption_batch_create(
        name="promo",
        amount=amount,
        count=count,
        codes_expire_at=timezone.now() + expires_in,
        credit_valid_days=days_valid,
        created_by=UserFactory(is_staff=True),
    )


# Redemption codes ------------------------------------------------------------------------------


def test_codes_are_random_and_stored_hashed(user):
    batch, codes = make_codes(count=20)
    assert len(set(codes)) == 20
    stored = set(RedemptionCode.objects.filter(batch=batch).values_list("code_hash", flat=True))
    assert not any(code in stored or code.replace("-", "") in stored for code in codes)
    assert stored == {services.code_hash(code) for code in codes}


def test_a_code_is_redeemed_once(user):
    _batch, codes = make_codes(days_valid=30)
    bucket = services.wallet_code_redeem(user=user, code=codes[0].lower().replace("-", " "))
    assert balance(user) == 500
    assert bucket.source == Bucket.Source.PROMOTION
    assert bucket.expires_at is not None
    with pytest.raises(CodeNotRedeemable):
        services.wallet_code_redeem(user=user, code=codes[0])
    with pytest.raises(CodeNotRedeemable):
        services.wallet_code_redeem(user=UserFactory(), code=codes[0])
    assert balance(user) == 500


def test_expired_and_unknown_codes_are_refused(user):
    _batch, codes = make_codes(expires_in=timedelta(hours=1))
    with pytest.raises(CodeNotRedeemable):
        services.wallet_code_redeem(user=user, code="AAAA-BBBB-CCCC-DDDD")
    with freeze_time(timezone.now() + timedelta(hours=2)), pytest.raises(CodeNotRedeemable):
        services.wallet_code_redeem(user=user, code=codes[0])
    assert balance(user) == 0


def test_guessing_codes_is_rate_limited(user, settings):
    settings.WALLET_REDEEM_FAILURE_LIMIT = 3
    _batch, codes = make_codes()
    for _ in range(3):
        with pytest.raises(CodeNotRedeemable):
            services.wallet_code_redeem(user=user, code="WRONG")
    with pytest.raises(TooManyAttempts):
        services.wallet_code_redeem(user=user, code=codes[0])
    assert balance(user) == 0


def test_redeem_page_credits_a_signed_in_user(client, user):
    _batch, codes = make_codes()
    assert client.get(reverse("wallet:redeem")).status_code == 302
    client.force_login(user)
    response = client.post(reverse("wallet:redeem"), {"code": codes[1]}, follow=True)
    assert "500 tokens were added to your wallet." in response.content.decode()
    assert balance(user) == 500
    response = client.post(reverse("wallet:redeem"), {"code": codes[1]})
    assert response.status_code == 200
    assert "not valid or was already used" in response.content.decode()
    assert balance(user) == 500


# Plans -----------------------------------------------------------------------------------------


def test_plan_grants_an_allotment_per_month_that_expires_at_its_end(user):
    plan = Plan.objects.create(name="Pro", allotment=10_000)
    with freeze_time("2031-03-10 12:00:00"):
        subscription = services.subscription_create(user=user, plan=plan)
        assert plan_grants.delay().get() == 0
    grant = PlanGrant.objects.get(subscription=subscription)
    assert grant.bucket.expires_at.isoformat() == "2031-04-01T00:00:00+00:00"
    assert balance(user) == 10_000
    with freeze_time("2031-04-01 00:05:00"):
        services.wallet_buckets_expire_due()
        assert balance(user) == 0
        assert plan_grants.delay().get() == 1
        assert plan_grants.delay().get() == 0
    assert balance(user) == 10_000
    assert PlanGrant.objects.filter(subscription=subscription).count() == 2


def test_ended_subscription_gets_no_more_grants(user):
    plan = Plan.objects.create(name="Pro", allotment=100)
    with freeze_time("2031-03-10"):
        subscription = services.subscription_create(user=user, plan=plan)
        subscription.ends_at = timezone.now() + timedelta(days=5)
        subscription.save()
    with freeze_time("2031-04-02"):
        assert plan_grants.delay().get() == 0


# Payment provider webhook ----------------------------------------------------------------------


@pytest.fixture
def provider(settings):
    settings.WALLET_PAYMENT_PROVIDERS = {
        "test": {"CLASS": "wallet.payments.HmacJsonProvider", "SECRET": SECRET}
    }
    return payment_provider_get("test")


def post_webhook(client, provider, payload, *, timestamp=None, signature=None, name="test"):
    body = json.dumps(payload).encode()
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = signature or provider.sign(timestamp=timestamp, body=body)
    return client.post(
        f"/wallet/webhooks/{name}/",
        data=body,
        content_type="application/json",
        headers={"X-Tokenpass-Timestamp": str(timestamp), "X-Tokenpass-Signature": signature},
    )


def test_signed_payment_is_credited_exactly_once(client, provider, user):
    payload = {"id": "pay_123", "user": user.public_id, "amount": 2500, "status": "succeeded"}
    first = post_webhook(client, provider, payload)
    assert first.status_code == 200
    assert first.json()["credited"] is True
    again = post_webhook(client, provider, payload)
    assert again.status_code == 200
    assert again.json()["credited"] is False
    assert balance(user) == 2500
    assert PaymentTopUp.objects.get().provider_transaction_id == "pay_123"


def test_bad_signature_and_stale_timestamp_are_refused(client, provider, user):
    payload = {"id": "pay_1", "user": user.public_id, "amount": 10, "status": "succeeded"}
    bad = post_webhook(client, provider, payload, signature="v1=" + "0" * 64)
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "payment_rejected"
    stale = post_webhook(client, provider, payload, timestamp=int(time.time()) - 3600)
    assert stale.status_code == 400
    assert balance(user) == 0


def test_webhook_rejects_unknown_provider_users_and_bad_amounts(client, provider, user):
    payload = {"id": "pay_2", "user": user.public_id, "amount": 10, "status": "succeeded"}
    assert post_webhook(client, provider, payload, name="nope").status_code == 404
    assert post_webhook(client, provider, {**payload, "user": "u_missing"}).status_code == 422
    assert post_webhook(client, provider, {**payload, "amount": -5}).status_code == 400
    assert post_webhook(client, provider, {**payload, "amount": "5"}).status_code == 400
    assert post_webhook(client, provider, {"id": "x"}).status_code == 400
    failed = post_webhook(client, provider, {**payload, "status": "failed"})
    assert failed.json() == {"credited": False, "status": "ignored"}
    assert client.get("/wallet/webhooks/test/").status_code == 405
    assert balance(user) == 0


def test_provider_without_secret_is_disabled(client, settings, user):
    settings.WALLET_PAYMENT_PROVIDERS = {
        "test": {"CLASS": "wallet.payments.HmacJsonProvider", "SECRET": ""}
    }
    response = client.post("/wallet/webhooks/test/", data=b"{}", content_type="application/json")
    assert response.status_code == 404


def test_wallet_overview_page(client, user, app, price):
    from tests.wallet.test_holds_and_charges import charge

    assert client.get(reverse("wallet:overview")).status_code == 302
    fund(user, 100, expires_at=timezone.now() + timedelta(days=3))
    fund(user, 50)
    charge(user, app, i=30)
    client.force_login(user)
    page = client.get(reverse("wallet:overview")).content.decode()
    assert 'data-testid="balance">120<' in page
    assert "gpt-test" in page
    assert page.index("promotion") < page.index("purchase")
