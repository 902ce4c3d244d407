import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent
from tests.wallet.conftest import balance, fund
from wallet import services
from wallet.models import LedgerAccount, LedgerEntry, RedemptionCode

pytestmark = pytest.mark.django_db


def test_staff_credit_action_asks_amount_and_reason_and_audits(staff_client, user):
    fund(user, 10)
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    url = reverse("admin:wallet_wallet_changelist")
    form_page = staff_client.post(url, {"action": "credit_tokens", "_selected_action": [wallet.pk]})
    assert form_page.status_code == 200
    assert "Reason" in form_page.content.decode()
    key = form_page.context["form"].initial["idempotency_key"]
    data = {
        "action": "credit_tokens",
        "_selected_action": [wallet.pk],
        "apply": "1",
        "amount": "250",
        "reason": "Outage on 2026-11-20",
        "source": "compensation",
        "idempotency_key": key,
    }
    done = staff_client.post(url, data, follow=True)
    assert "Credited 250 tokens" in done.content.decode()
    # A double submission of the same form credits once.
    staff_client.post(url, data, follow=True)
    assert balance(user) == 260
    event = AuditEvent.objects.get(action=AuditEvent.Action.WALLET_CREDIT)
    assert (event.user, event.actor) == (user, staff_client.staff)
    assert event.data["reason"] == "Outage on 2026-11-20"


def test_staff_credit_without_reason_is_refused(staff_client, user):
    fund(user, 10)
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    response = staff_client.post(
        reverse("admin:wallet_wallet_changelist"),
        {
            "action": "credit_tokens",
            "_selected_action": [wallet.pk],
            "apply": "1",
            "amount": "250",
            "reason": "",
            "source": "compensation",
            "idempotency_key": "k",
        },
    )
    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    assert balance(user) == 10


def test_ledger_is_read_only_in_the_admin(staff_client, user):
    fund(user, 10)
    entry = LedgerEntry.objects.first()
    change = reverse("admin:wallet_ledgerentry_change", args=[entry.pk])
    page = staff_client.get(change)
    assert page.status_code == 200
    assert 'name="amount"' not in page.content.decode()
    assert staff_client.get(reverse("admin:wallet_ledgerentry_add")).status_code == 403
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    staff_client.post(
        reverse("admin:wallet_ledgeraccount_change", args=[wallet.pk]), {"balance": 999}
    )
    wallet.refresh_from_db()
    assert wallet.balance == 10
    assert (
        staff_client.get(reverse("admin:wallet_ledgeraccount_delete", args=[wallet.pk])).status_code
        == 403
    )


def test_generate_batch_downloads_codes_that_redeem(staff_client, user):
    response = staff_client.post(
        reverse("admin:wallet_redemptionbatch_generate"),
        {
            "name": "Launch",
            "amount": "300",
            "count": "5",
            "codes_expire_at": (timezone.now() + timedelta(days=10)).strftime("%Y-%m-%d %H:%M:%S"),
            "credit_valid_days": "",
        },
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 5
    services.wallet_code_redeem(user=user, code=rows[0]["code"])
    assert balance(user) == 300
    # The status export shows which code was used without revealing any code.
    batch_id = RedemptionCode.objects.first().batch_id
    export = staff_client.post(
        reverse("admin:wallet_redemptionbatch_changelist"),
        {"action": "export_status_csv", "_selected_action": [batch_id]},
    )
    status_rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert len(status_rows) == 5
    assert sum(1 for r in status_rows if r["redeemed_by"] == user.public_id) == 1
    assert not any(row["code"] in export.content.decode() for row in rows)


@pytest.mark.parametrize(
    "model",
    [
        "wallet",
        "ledgeraccount",
        "ledgertransaction",
        "ledgerentry",
        "bucket",
        "hold",
        "charge",
        "refund",
        "pricemodel",
        "plan",
        "subscription",
        "redemptionbatch",
        "paymenttopup",
        "walletauditrun",
        "spendingallowance",
    ],
)
def test_wallet_admin_pages_render(staff_client, user, model):
    fund(user, 10)
    assert staff_client.get(reverse(f"admin:wallet_{model}_changelist")).status_code == 200


def test_subscription_added_in_admin_grants_the_allotment(staff_client, user):
    from wallet.models import Plan, PlanGrant

    plan = Plan.objects.create(name="Pro", allotment=700)
    response = staff_client.post(
        reverse("admin:wallet_subscription_add"), {"user": user.pk, "plan": plan.pk}
    )
    assert response.status_code == 302
    assert PlanGrant.objects.filter(subscription__user=user).count() == 1
    assert balance(user) == 700


def test_price_versions_are_added_not_rewritten(staff_client):
    from tests.factories import PartnerFactory
    from wallet.models import Price, PriceModel

    vendor = PartnerFactory()

    def add(effective_from):
        return staff_client.post(
            reverse("admin:wallet_pricemodel_add"),
            {
                "vendor": vendor.pk,
                "name": f"m-{effective_from.timestamp()}",
                "context_window": 8000,
                "is_active": "on",
                "prices-TOTAL_FORMS": "1",
                "prices-INITIAL_FORMS": "0",
                "prices-MIN_NUM_FORMS": "0",
                "prices-MAX_NUM_FORMS": "1000",
                "prices-0-effective_from_0": effective_from.strftime("%Y-%m-%d"),
                "prices-0-effective_from_1": effective_from.strftime("%H:%M:%S"),
                "prices-0-input_per_million": "10",
                "prices-0-cached_input_per_million": "1",
                "prices-0-output_per_million": "20",
            },
        )

    past = add(timezone.now() - timedelta(days=2))
    assert past.status_code == 200
    assert "cannot start in the past" in past.content.decode()
    future = add(timezone.now() + timedelta(hours=1))
    assert future.status_code == 302
    assert PriceModel.objects.count() == 1
    assert Price.objects.get().input_per_million == 10
