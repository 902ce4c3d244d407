"""Someone who knows a phone number cannot use up its owner's sign-in codes: requests from a
browser that signed in to the account before have a send budget of their own."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time

from accounts.known_devices import COOKIE_NAME
from accounts.sms.backends import outbox_messages
from tests.accounts.test_codes import last_sms_code
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

PHONE = "+8613800138000"
LOGIN = reverse("accounts:login")
LOGIN_CODE = reverse("accounts:login_code")
LOGIN_CODE_VERIFY = reverse("accounts:login_code_verify")
RESET = reverse("accounts:reset")


@pytest.fixture
def send(django_capture_on_commit_callbacks):
    def _send(client, url=LOGIN_CODE):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(url, {"username": PHONE})

    return _send


def owner_browser(user) -> Client:
    """A browser that signed in with the password once, then signed out."""
    browser = Client(REMOTE_ADDR="198.51.100.7")
    response = browser.post(LOGIN, {"username": PHONE, "password": DEFAULT_PASSWORD})
    assert response.status_code == 302
    assert COOKIE_NAME in response.cookies
    cookie = response.cookies[COOKIE_NAME]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    browser.post(reverse("accounts:logout"))
    return browser


def exhaust_strangers_budget(send, url=LOGIN_CODE) -> timezone.datetime:
    """Ten requests from ten addresses, a minute apart: the recipient's daily limit."""
    start = timezone.now()
    for i in range(10):
        with freeze_time(start + timedelta(minutes=2 * i)):
            stranger = Client(REMOTE_ADDR=f"203.0.113.{i + 1}")
            assert send(stranger, url).status_code == 302
    return start + timedelta(minutes=21)


def test_owner_still_gets_a_code_after_a_stranger_used_up_the_daily_limit(send):
    user = UserFactory(phone=PHONE)
    browser = owner_browser(user)
    later = exhaust_strangers_budget(send)
    sent = len(outbox_messages(to=PHONE))

    with freeze_time(later):
        refused = send(Client(REMOTE_ADDR="203.0.113.99"))
        assert refused.status_code == 429 and int(refused["Retry-After"]) > 3600

        response = send(browser)
        assert response.status_code == 302, response.content.decode()[:500]
        assert len(outbox_messages(to=PHONE)) == sent + 1
        signed_in = browser.post(LOGIN_CODE_VERIFY, {"code": last_sms_code(PHONE)})
        assert signed_in.status_code == 302
        assert browser.session.get("_auth_user_id") == str(user.pk)

        # The owner's budget has limits of its own: one code a minute.
        browser.post(reverse("accounts:logout"))
        assert send(browser).status_code == 429


def test_password_reset_has_the_same_owner_budget(send):
    user = UserFactory(phone=PHONE)
    browser = owner_browser(user)
    later = exhaust_strangers_budget(send, RESET)
    with freeze_time(later):
        assert send(Client(REMOTE_ADDR="203.0.113.99"), RESET).status_code == 429
        assert send(browser, RESET).status_code == 302


def test_a_forged_or_foreign_cookie_counts_as_a_stranger(send):
    user = UserFactory(phone=PHONE)
    other = UserFactory(phone="+8613900139000")
    forged = Client(REMOTE_ADDR="198.51.100.8")
    forged.cookies[COOKIE_NAME] = user.public_id  # not signed
    # A browser known to another account is a stranger to this one.
    foreign = Client(REMOTE_ADDR="198.51.100.9")
    response = foreign.post(LOGIN, {"username": "+8613900139000", "password": DEFAULT_PASSWORD})
    assert response.status_code == 302 and other.pk
    later = exhaust_strangers_budget(send)
    with freeze_time(later):
        assert send(forged).status_code == 429
        assert send(foreign).status_code == 429
