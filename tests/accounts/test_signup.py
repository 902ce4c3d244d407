"""Sign-up by phone or email: the account exists only once the code is verified."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.hashers import check_password
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.login_flow import AUTH_METHODS_SESSION_KEY
from accounts.models import AuditEvent, OneTimeCode, User
from accounts.sms.backends import outbox_messages
from tests.accounts.helpers import normalized
from tests.accounts.test_codes import last_email_code, last_sms_code
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

SIGNUP = reverse("accounts:signup")
VERIFY = reverse("accounts:signup_verify")
PROFILE = reverse("accounts:profile")
PASSWORD = "a fine long passphrase 42"


def phone_signup(**overrides):
    return {
        "via": "phone",
        "phone": "138 0013 8000",
        "display_name": "Ada",
        "password1": PASSWORD,
        "password2": PASSWORD,
        **overrides,
    }


def test_signup_pages_render(client):
    phone = client.get(SIGNUP)
    email = client.get(SIGNUP, {"via": "email"})
    assert phone.status_code == email.status_code == 200
    assert b'name="phone"' in phone.content and b'name="email"' not in phone.content
    assert b'name="email"' in email.content and b'name="phone"' not in email.content


def test_signup_by_phone_creates_the_account_only_after_the_code(client, post):
    response = post(SIGNUP, phone_signup())

    assert response.status_code == 302
    assert response["Location"] == VERIFY
    assert not User.objects.exists()
    pending = client.session["tokenpass_signup"]
    assert pending["recipient"] == "+8613800138000"
    assert PASSWORD not in str(pending)
    assert check_password(PASSWORD, pending["password_hash"])
    assert pending["password_hash"].startswith("argon2$")
    assert "+8613800138000" in client.get(VERIFY).content.decode()

    response = client.post(VERIFY, {"code": last_sms_code("+8613800138000")})

    assert response.status_code == 302
    assert response["Location"] == PROFILE
    user = User.objects.get()
    assert user.phone == "+8613800138000" and user.phone_verified
    assert user.email is None and not user.email_verified
    assert user.display_name == "Ada"
    assert user.check_password(PASSWORD)
    assert client.session["_auth_user_id"] == str(user.pk)
    assert client.session[AUTH_METHODS_SESSION_KEY] == ["sms"]
    assert "tokenpass_signup" not in client.session
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SIGNUP, user=user).count() == 1
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LOGIN_SUCCESS, user=user).exists()


def test_signup_by_email_stores_it_lower_case(client, post):
    post(
        SIGNUP,
        {
            "via": "email",
            "email": "Ada.Lovelace@Example.COM",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert mail.outbox[-1].to == ["ada.lovelace@example.com"]

    response = client.post(VERIFY, {"code": last_email_code("ada.lovelace@example.com")})

    assert response.status_code == 302
    user = User.objects.get()
    assert user.email == "ada.lovelace@example.com" and user.email_verified
    assert user.phone is None
    assert client.session[AUTH_METHODS_SESSION_KEY] == ["otp-email"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"phone": "12345"}, "Enter a valid mobile phone number"),
        ({"phone": "+1 555 abc"}, "Enter a valid mobile phone number"),
        ({"phone": ""}, "Enter your mobile phone number"),
        ({"phone": "1" * 40}, "at most 32 characters"),
        ({"display_name": "x" * 101}, "at most 100 characters"),
        ({"password1": "x" * 300, "password2": "x" * 300}, "at most 256 characters"),
        ({"password1": "12345678", "password2": "12345678"}, "entirely numeric"),
        ({"password1": "password", "password2": "password"}, "too common"),
        ({"password1": "short", "password2": "short"}, "too short"),
        ({"password2": "something else entirely"}, "do not match"),
        ({"via": "fax"}, "Select a valid choice"),
    ],
)
def test_bad_signup_input_is_a_form_error_and_sends_nothing(client, overrides, message):
    response = client.post(SIGNUP, phone_signup(**overrides))

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not OneTimeCode.objects.exists()
    assert "tokenpass_signup" not in client.session


def test_bad_email_is_a_form_error(client):
    response = client.post(
        SIGNUP,
        {"via": "email", "email": "not-an-email@", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 400
    assert "Enter a valid email address" in response.content.decode()


def test_password_may_not_resemble_the_email(client):
    response = client.post(
        SIGNUP,
        {
            "via": "email",
            "email": "correcthorsebattery@example.com",
            "password1": "correcthorsebattery",
            "password2": "correcthorsebattery",
        },
    )
    assert response.status_code == 400
    assert "too similar" in response.content.decode()


def test_wrong_code_creates_nothing(client, post):
    post(SIGNUP, phone_signup())
    code = last_sms_code("+8613800138000")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    response = client.post(VERIFY, {"code": wrong})

    assert response.status_code == 400
    assert "That code is not right" in response.content.decode()
    assert not User.objects.exists()


def test_expired_code_creates_nothing(client, post, monkeypatch):
    post(SIGNUP, phone_signup())
    code = last_sms_code("+8613800138000")
    later = timezone.now() + timedelta(minutes=5, seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)

    response = client.post(VERIFY, {"code": code})

    assert response.status_code == 400
    assert "expired" in response.content.decode()
    assert not User.objects.exists()


def test_signup_with_a_taken_phone_looks_the_same_and_cannot_duplicate(client, post):
    owner = UserFactory(phone="+8613800138000")
    newcomer = Client()

    taken = post(SIGNUP, phone_signup())
    fresh = post(SIGNUP, phone_signup(phone="+8613900139000"), c=newcomer)

    assert (taken.status_code, taken["Location"]) == (fresh.status_code, fresh["Location"])
    assert normalized(client.get(VERIFY), "+8613800138000") == normalized(
        newcomer.get(VERIFY), "+8613900139000"
    )
    # The owner is told to sign in instead; the message carries no code.
    [message] = outbox_messages(to="+8613800138000")
    assert "already has one" in message["body"]
    assert not re.search(r"\b\d{6}\b", message["body"])
    wrong_taken = client.post(VERIFY, {"code": "123456"})
    assert wrong_taken.status_code == 400
    assert "That code is not right" in wrong_taken.content.decode()
    assert User.objects.filter(phone="+8613800138000").count() == 1
    owner.refresh_from_db()
    assert owner.check_password(DEFAULT_PASSWORD)
    assert "_auth_user_id" not in client.session


def test_signup_send_is_rate_limited_and_says_when_to_retry(client, post):
    post(SIGNUP, phone_signup())

    response = post(SIGNUP, phone_signup())

    assert response.status_code == 429
    assert 55 <= int(response["Retry-After"]) <= 60
    assert re.search(r"ask for a new one in \d+ seconds", response.content.decode())
    assert OneTimeCode.objects.count() == 1


def test_resend_sends_a_new_code_that_supersedes_the_old(client, post, monkeypatch):
    post(SIGNUP, phone_signup())
    old_code = last_sms_code("+8613800138000")
    later = timezone.now() + timedelta(seconds=61)
    monkeypatch.setattr(timezone, "now", lambda: later)

    response = post(VERIFY, {"resend": "1"})
    assert response.status_code == 302
    new_code = last_sms_code("+8613800138000")
    assert len(outbox_messages(to="+8613800138000")) == 2

    if old_code != new_code:
        assert client.post(VERIFY, {"code": old_code}).status_code == 400
    assert client.post(VERIFY, {"code": new_code}).status_code == 302
    assert User.objects.filter(phone="+8613800138000").exists()


def test_signup_keeps_a_safe_next(client, post):
    target = "/o/authorize/?client_id=abc&scope=openid"
    page = client.get(SIGNUP, {"next": target})
    assert 'name="next"' in page.content.decode()

    post(SIGNUP, {**phone_signup(), "next": target})
    response = client.post(VERIFY, {"code": last_sms_code("+8613800138000")})

    assert response["Location"] == target


def test_signup_drops_an_off_site_next(client, post):
    post(SIGNUP, {**phone_signup(), "next": "https://evil.example/steal"})
    response = client.post(VERIFY, {"code": last_sms_code("+8613800138000")})
    assert response["Location"] == PROFILE


def test_verify_without_a_pending_signup_goes_back(client):
    response = client.get(VERIFY)
    assert response.status_code == 302
    assert response["Location"] == SIGNUP


def test_signup_post_without_csrf_token_is_refused():
    client = Client(enforce_csrf_checks=True)
    response = client.post(SIGNUP, phone_signup())
    assert response.status_code == 403
    assert not OneTimeCode.objects.exists()
