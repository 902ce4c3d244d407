"""A person signs up by phone with the code from the SMS, signs out, signs in with the
password; and repeated wrong passwords end in the lock-out page."""

import re

import pytest

from accounts.models import AuditEvent, User
from accounts.sms.backends import outbox_messages
from tests.factories import UserFactory

PHONE = "+8613800138000"
PASSWORD = "a fine long passphrase 42"


def wait_for_code(page, to: str) -> str:
    for _ in range(100):
        messages = outbox_messages(to=to)
        if messages:
            match = re.search(r"\b(\d{6})\b", messages[-1]["body"])
            assert match, messages[-1]["body"]
            return match.group(1)
        page.wait_for_timeout(100)
    raise AssertionError(f"no SMS reached {to}")


@pytest.mark.django_db(transaction=True)
def test_sign_up_by_phone_sign_out_and_sign_in_with_the_password(page):
    page.goto("/signup/")
    page.get_by_label("Mobile phone number").fill("138 0013 8000")
    page.get_by_label("Display name (optional)").fill("Ada")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()

    page.wait_for_url("**/signup/verify/")
    assert PHONE in page.content()
    assert not User.objects.exists()
    page.get_by_label("6-digit code").fill(wait_for_code(page, PHONE))
    page.get_by_role("button", name="Continue").click()

    page.wait_for_url("**/account/")
    assert page.get_by_text("Welcome to Tokenpass! Your account is ready.").is_visible()
    assert User.objects.get(phone=PHONE).display_name == "Ada"

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login/")
    assert page.get_by_text("You have signed out.").is_visible()

    page.get_by_label("Phone number or email").fill(PHONE)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/account/")
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LOGOUT).count() == 1
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LOGIN_SUCCESS).count() == 2


@pytest.mark.django_db(transaction=True)
def test_repeated_wrong_passwords_show_the_lockout_page(page, settings):
    UserFactory(phone=PHONE)
    page.goto("/login/")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        page.get_by_label("Phone number or email").fill(PHONE)
        page.get_by_label("Password").fill("not my password")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("The phone number, email or password is not right.").wait_for()

    page.get_by_label("Phone number or email").fill(PHONE)
    page.get_by_label("Password").fill("not my password")
    page.get_by_role("button", name="Sign in").click()

    page.get_by_role("heading", name="Sign-in is locked for now").wait_for()
    assert page.get_by_text("Try again in 15 minutes.").is_visible()
    assert page.get_by_role("link", name="Sign in with a code").is_visible()
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LOCKOUT).count() == 1
