"""A person turns on two-factor authentication and signs in with it, in Chromium."""

import base64
import re
import time

import pytest
from django_otp.oath import TOTP
from playwright.sync_api import expect

from tests.factories import DEFAULT_PASSWORD, UserFactory


def code_for(secret: str, *, steps_ahead: int = 0) -> str:
    # A code typed in the last seconds of its 30-second step may be checked in the next one;
    # django-otp then records a drift that would skew the later code. Start a fresh step.
    if time.time() % 30 > 25:
        time.sleep(30 - time.time() % 30 + 0.1)
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    totp = TOTP(key, step=30, t0=0, digits=6)
    totp.time = time.time() + 30 * steps_ahead
    return f"{totp.token():06d}"


def sign_in_with_password(page, username: str) -> None:
    page.goto("/login/")
    form = page.locator("form:has(input[name=password])")
    form.locator("input[name=username]").fill(username)
    form.locator("input[name=password]").fill(DEFAULT_PASSWORD)
    form.locator("button[type=submit]").click()


@pytest.mark.django_db(transaction=True)
def test_turn_on_two_factor_then_sign_in_with_password_and_code(page):
    user = UserFactory(phone="+8613812340000")

    # Signed in with the password alone, the person opens the security page.
    sign_in_with_password(page, user.phone)
    page.wait_for_url(re.compile(r"/account/$"))
    page.goto("/account/security/")
    expect(page.locator("#two-factor")).to_contain_text("Off")
    page.get_by_role("link", name="Set up two-factor authentication").click()

    # The setup page shows a QR code and the key; the app's code turns two-factor on.
    expect(page.locator(".qr svg")).to_be_visible()
    secret = page.locator("#totp-secret").get_attribute("data-secret")
    assert secret and re.fullmatch(r"[A-Z2-7]+", secret)
    page.locator("input[name=code]").fill(code_for(secret))
    page.get_by_role("button", name="Turn on two-factor authentication").click()

    codes = page.locator("#recovery-codes li")
    expect(codes).to_have_count(10)
    expect(page.get_by_text("this is the only time they are shown")).to_be_visible()
    page.get_by_role("link", name="I saved them").click()
    expect(page.locator("#two-factor")).to_contain_text("On")

    # Signing out and in again now asks for a code after the password.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login/"))
    sign_in_with_password(page, user.phone)
    page.wait_for_url(re.compile(r"/login/mfa/$"))
    # The code used for setup cannot be replayed; the app's next code is accepted.
    page.locator("input[name=code]").fill(code_for(secret, steps_ahead=1))
    page.get_by_role("button", name="Verify").click()

    page.wait_for_url(re.compile(r"/account/$"))
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    page.goto("/account/security/log/")
    expect(page.locator("table.security-log")).to_contain_text("two-factor enabled")
