"""Password reset by a code sent by SMS or email."""

import re
import time

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEvent
from accounts.sms.backends import outbox_messages
from tests.accounts.helpers import normalized
from tests.accounts.test_codes import last_email_code, last_sms_code
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

RESET = reverse("accounts:reset")
VERIFY = reverse("accounts:reset_verify")
SET_PASSWORD = reverse("accounts:reset_password")
LOGIN = reverse("accounts:login")
PROFILE = reverse("accounts:profile")
NEW_PASSWORD = "a brand new passphrase 77"


def test_reset_by_sms_sets_the_password_and_signs_out_other_sessions(client, post):
    user = UserFactory(phone="+8613800138000")
    elsewhere = Client()
    elsewhere.force_login(user)
    assert elsewhere.get(PROFILE).status_code == 200

    assert post(RESET, {"username": "13800138000"})["Location"] == VERIFY
    response = client.post(VERIFY, {"code": last_sms_code("+8613800138000")})
    assert response["Location"] == SET_PASSWORD
    assert client.get(SET_PASSWORD).status_code == 200
    response = client.post(SET_PASSWORD, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == LOGIN
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert (
        AuditEvent.objects.filter(action=AuditEvent.Action.PASSWORD_RESET, user=user).count() == 1
    )
    # The other browser is signed out by the new password hash.
    assert elsewhere.get(PROFILE).status_code == 302
    # The flow is over: the page cannot be used twice.
    assert client.get(SET_PASSWORD)["Location"] == RESET
    # The new password works, the old one does not.
    assert (
        client.post(LOGIN, {"username": "+8613800138000", "password": DEFAULT_PASSWORD}).status_code
        == 400
    )
    assert (
        client.post(LOGIN, {"username": "+8613800138000", "password": NEW_PASSWORD}).status_code
        == 302
    )


def test_reset_by_email(client, post):
    user = UserFactory(email="ada@example.com")

    post(RESET, {"username": "Ada@Example.com"})
    client.post(VERIFY, {"code": last_email_code("ada@example.com")})
    client.post(SET_PASSWORD, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)


def test_reset_for_an_unknown_account_looks_the_same_and_sends_nothing(client, post):
    UserFactory(phone="+8613800138000")
    other = Client()

    known = post(RESET, {"username": "+8613800138000"})
    unknown = post(RESET, {"username": "+8613900139000"}, c=other)

    assert (known.status_code, known["Location"]) == (unknown.status_code, unknown["Location"])
    assert normalized(client.get(VERIFY), "+8613800138000") == normalized(
        other.get(VERIFY), "+8613900139000"
    )
    assert outbox_messages(to="+8613900139000") == []
    response = other.post(VERIFY, {"code": "123456"})
    assert response.status_code == 400
    assert "That code is not right" in response.content.decode()
    assert other.get(SET_PASSWORD)["Location"] == RESET


def test_weak_new_password_is_refused_without_spending_the_reset(client, post):
    user = UserFactory(phone="+8613800138000", display_name="Ada Lovelace")
    post(RESET, {"username": "+8613800138000"})
    client.post(VERIFY, {"code": last_sms_code("+8613800138000")})

    for data, message in [
        ({"password1": "12345678", "password2": "12345678"}, "entirely numeric"),
        ({"password1": NEW_PASSWORD, "password2": "typo"}, "do not match"),
        ({"password1": "x" * 300, "password2": "x" * 300}, "at most 256"),
    ]:
        response = client.post(SET_PASSWORD, data)
        assert response.status_code == 400
        assert message in response.content.decode()

    client.post(SET_PASSWORD, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)


def test_set_password_page_needs_a_verified_code(client):
    response = client.get(SET_PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == RESET


def test_reset_code_cannot_be_replayed(client, post):
    UserFactory(phone="+8613800138000")
    post(RESET, {"username": "+8613800138000"})
    code = last_sms_code("+8613800138000")
    client.post(VERIFY, {"code": code})

    again = Client()
    session = again.session
    session["tokenpass_reset"] = {
        "channel": "sms",
        "recipient": "+8613800138000",
        "next": "",
        "started": int(time.time()),
    }
    session.save()
    again.cookies["sessionid"] = session.session_key
    response = again.post(VERIFY, {"code": code})

    assert response.status_code == 400
    assert "already been used" in response.content.decode()


def test_reset_lifts_a_password_lockout(client, post, settings):
    UserFactory(phone="+8613800138000")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(LOGIN, {"username": "+8613800138000", "password": "wrong password"})
    assert (
        client.post(LOGIN, {"username": "+8613800138000", "password": DEFAULT_PASSWORD}).status_code
        == 429
    )

    post(RESET, {"username": "+8613800138000"})
    client.post(VERIFY, {"code": last_sms_code("+8613800138000")})
    client.post(SET_PASSWORD, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})

    response = client.post(LOGIN, {"username": "+8613800138000", "password": NEW_PASSWORD})
    assert response.status_code == 302


def test_reset_send_is_rate_limited(client, post):
    UserFactory(phone="+8613800138000")
    post(RESET, {"username": "+8613800138000"})
    response = post(RESET, {"username": "+8613800138000"})
    assert response.status_code == 429
    assert re.search(r"ask for a new one in \d+ seconds", response.content.decode())


def test_malformed_identifier_is_a_form_error(client):
    response = client.post(RESET, {"username": "call me maybe"})
    assert response.status_code == 400
    assert "Enter a valid phone number or email address" in response.content.decode()
