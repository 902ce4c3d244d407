"""Staff settle a month in the admin with a real browser: approve, pay with the payout
reference, then reconcile the period."""

import re
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice
from freezegun import freeze_time

from partners.agreements import services as agreements
from partners.agreements.models import Agreement
from partners.settlement.models import Statement
from tests.factories import PartnerFactory, PriceFactory, UserFactory, WalletAppFactory
from tests.wallet.conftest import fund, new_key
from wallet import services as wallet

pytestmark = pytest.mark.django_db(transaction=True)


def staff_cookie(live_server) -> dict:
    """A staff session that passed two-factor, as the cookie the browser would carry."""
    staff = UserFactory(is_staff=True, is_superuser=True)
    device = TOTPDevice.objects.create(user=staff, name="app", confirmed=True)
    client = Client()
    client.force_login(staff)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return {"name": "sessionid", "value": session.session_key, "url": live_server.url}


def test_staff_approve_pay_and_reconcile_a_month(page, live_server):
    partner = PartnerFactory(name="Browser Shop")
    app = WalletAppFactory(partner=partner)
    since = datetime(2026, 9, 1, tzinfo=UTC)
    PriceFactory(model__name="m1", input_per_million=1_000_000, effective_from=since)
    agreements.agreement_create(
        partner_id=partner.pk,
        kind=Agreement.Kind.REVENUE_SHARE,
        share_bps=6000,
        effective_from=since,
    )
    user = UserFactory()
    fund(user, 100_000)
    with freeze_time("2026-10-12 08:00"):
        wallet.wallet_charge(
            user=user,
            app=app,
            model="m1",
            input_tokens=50_000,
            cached_input_tokens=0,
            output_tokens=0,
            idempotency_key=new_key(),
        )
    call_command("settlement_run", "2026-10")
    statement = Statement.objects.get(partner=partner)
    page.context.add_cookies([staff_cookie(live_server)])

    page.goto("/admin/partners/statement/")
    page.check(f'input[name="_selected_action"][value="{statement.pk}"]')
    page.select_option('select[name="action"]', "approve")
    page.click('button[name="index"]')
    page.wait_for_selector("text=approved")

    page.check(f'input[name="_selected_action"][value="{statement.pk}"]')
    page.select_option('select[name="action"]', "pay")
    page.click('button[name="index"]')
    page.fill('input[name="payout_reference"]', "WIRE-2026-11-0042")
    page.click('input[name="apply"]')
    page.wait_for_selector("text=paid")

    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAID
    assert statement.payout_reference == "WIRE-2026-11-0042"

    page.check(f'input[name="_selected_action"][value="{statement.pk}"]')
    page.select_option('select[name="action"]', "reconcile")
    page.click('button[name="index"]')
    page.wait_for_selector("#reconcile-status")
    assert "The statements match the ledger." in page.inner_text("#reconcile-status")
    report = page.inner_text("#reconcile-report")
    assert re.search(r"paid 30000, payouts in the ledger 30000", report)
