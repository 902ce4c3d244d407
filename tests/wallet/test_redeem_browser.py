"""A person redeems a code on /wallet/redeem/ in Chromium."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from tests.factories import UserFactory
from tests.wallet.conftest import balance
from wallet import services

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page, live_server, user):
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": live_server.url}]
    )


def test_redeem_a_code_in_the_browser(page, live_server):
    user = UserFactory()
    _batch, codes = services.redemption_batch_create(
        name="Launch",
        amount=750,
        count=1,
        codes_expire_at=timezone.now() + timedelta(days=1),
        credit_valid_days=None,
        created_by=UserFactory(is_staff=True),
    )
    sign_in(page, live_server, user)
    page.goto("/account/")
    page.get_by_role("link", name="Wallet", exact=True).click()
    page.wait_for_url("**/wallet/")
    assert page.get_by_test_id("balance").inner_text() == "0"
    page.get_by_role("link", name="Redeem a code").click()
    page.wait_for_url("**/wallet/redeem/")
    assert page.get_by_test_id("balance").inner_text() == "0"
    page.get_by_label("Code").fill(codes[0].lower())
    page.get_by_role("button", name="Redeem").click()
    page.get_by_text("750 tokens were added to your wallet.").wait_for()
    assert page.get_by_test_id("balance").inner_text() == "750"
    # The same code again is refused with a form error.
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Redeem").click()
    page.get_by_text("This code is not valid or was already used.").wait_for()
    assert balance(user) == 750
    page.get_by_role("link", name="Back to your wallet").click()
    page.wait_for_url("**/wallet/")
    assert page.get_by_test_id("balance").inner_text() == "750"
    assert page.get_by_text("promotion").is_visible()
