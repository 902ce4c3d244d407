"""Password login (through authenticate and django-axes), sign-in by code, next, sign-out."""

import re
import time

import pytest
from django.test import Client
from django.urls import reverse

from accounts.login_flow import AUTH_METHODS_SESSION_KEY
from accounts.models import AuditEvent, OneTimeCode
from accounts.sms.backends import outbox_messages
from tests.accounts.helpers import normalized
from tests.accounts.test_codes import last_email_code, last_sms_code
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

LOGIN = reverse("accounts:login")
LOGIN_CODE = reverse("accounts:login_code")
LOGIN_CODE_VERIFY = reverse("accounts:login_code_verify")
PROFILE = reverse("accounts:profile")


def signed_in_user_id(client):
    return client.session.get("_auth_user_id")


# Password --------------------------------------------------------------------------------------


def test_login_page_renders(client):
    response = client.get(LOGIN)
    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert reverse("accounts:login_code").encode() in response.content


def test_password_login_by_phone_typed_any_way(client):
    user = UserFactory(phone="+8613800138000")

    response = client.post(LOGIN, {"username": "138 0013 8000", "password": DEFAULT_PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == PROFILE
    assert signed_in_user_id(client) == str(user.pk)
    assert client.session[AUTH_METHODS_SESSION_KEY] == ["pwd"]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LOGIN_SUCCESS, user=user).exists()


def test_password_login_by_email_ignores_case(client):
    user = UserFactory(email="ada@example.com")

    response = client.post(LOGIN, {"username": " Ada@Example.COM ", "password": DEFAULT_PASSWORD})

    assert response.status_code == 302
    assert signed_in_user_id(client) == str(user.pk)


def test_wrong_password_and_unknown_account_answer_the_same(client):
    user = UserFactory(phone="+8613800138000")

    wrong = client.post(LOGIN, {"username": "+8613800138000", "password": "not the password"})
    unknown = client.post(LOGIN, {"username": "+8613900139000", "password": "not the password"})

    assert wrong.status_code == unknown.status_code == 400
    assert "is not right" in wrong.content.decode()
    assert normalized(wrong, "+8613800138000") == normalized(unknown, "+8613900139000")
    assert signed_in_user_id(client) is None
    failures = AuditEvent.objects.filter(action=AuditEvent.Action.LOGIN_FAILURE)
    assert failures.count() == 2
    assert failures.filter(user=user).count() == 1
    assert failures.filter(user=None).count() == 1


@pytest.mark.parametrize(
    "data",
    [
        {"username": "not a phone", "password": "x"},
        {"username": "a" * 300, "password": "x"},
        {"username": "+8613800138000", "password": "x" * 300},
        {"username": "", "password": ""},
    ],
)
def test_malformed_login_input_is_a_form_error(client, data):
    response = client.post(LOGIN, data)

    assert response.status_code == 400
    assert b'class="errorlist' in response.content
    assert signed_in_user_id(client) is None


def test_lockout_after_the_failure_limit_says_when_to_retry(client, settings):
    user = UserFactory(phone="+8613800138000")
    limit = settings.AXES_FAILURE_LIMIT
    bad = {"username": "+8613800138000", "password": "wrong password"}

    statuses = [client.post(LOGIN, bad).status_code for _ in range(limit - 1)]
    locking = client.post(LOGIN, bad)

    assert statuses == [400] * (limit - 1)
    assert locking.status_code == 429
    text = locking.content.decode()
    assert "Sign-in is locked for now" in text
    assert "Try again in 15 minutes." in text
    assert 14 * 60 < int(locking["Retry-After"]) <= 15 * 60
    assert reverse("accounts:login_code") in text

    # Even the right password is refused now, and the lock-out is recorded only once.
    right = client.post(LOGIN, {"username": "138-0013-8000", "password": DEFAULT_PASSWORD})
    assert right.status_code == 429
    assert signed_in_user_id(client) is None
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LOCKOUT, user=user).count() == 1
    assert (
        AuditEvent.objects.filter(action=AuditEvent.Action.LOGIN_FAILURE, user=user).count()
        == limit + 1
    )


def test_lockout_is_per_account_and_address(client, settings):
    UserFactory(phone="+8613800138000")
    other = UserFactory(phone="+8613900139000")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(LOGIN, {"username": "+8613800138000", "password": "wrong password"})

    # Another account from the same address, and the same account from another address.
    response = client.post(LOGIN, {"username": "+8613900139000", "password": DEFAULT_PASSWORD})
    assert response.status_code == 302
    assert signed_in_user_id(client) == str(other.pk)
    elsewhere = Client(REMOTE_ADDR="198.51.100.7")
    response = elsewhere.post(LOGIN, {"username": "+8613800138000", "password": DEFAULT_PASSWORD})
    assert response.status_code == 302


def test_next_is_honoured_when_it_stays_on_this_site(client):
    UserFactory(phone="+8613800138000")
    target = "/o/authorize/?client_id=abc&response_type=code&scope=openid"

    page = client.get(LOGIN, {"next": target})
    assert 'name="next"' in page.content.decode()
    response = client.post(
        LOGIN, {"username": "+8613800138000", "password": DEFAULT_PASSWORD, "next": target}
    )

    assert response.status_code == 302
    assert response["Location"] == target


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "javascript:x"])
def test_next_off_site_is_ignored(client, target):
    UserFactory(phone="+8613800138000")

    response = client.post(
        LOGIN, {"username": "+8613800138000", "password": DEFAULT_PASSWORD, "next": target}
    )

    assert response["Location"] == PROFILE


def test_signed_in_person_is_sent_on(client):
    client.force_login(UserFactory())
    response = client.get(LOGIN, {"next": "/account/"})
    assert response.status_code == 302
    assert response["Location"] == "/account/"


# Sign-in by code -------------------------------------------------------------------------------


def test_login_by_sms_code(client, post):
    user = UserFactory(phone="+8613800138000")
    target = "/o/authorize/?client_id=abc"

    response = post(LOGIN_CODE, {"username": "13800138000", "next": target})
    assert response.status_code == 302
    assert response["Location"] == LOGIN_CODE_VERIFY
    page = client.get(LOGIN_CODE_VERIFY)
    assert "+8613800138000" in page.content.decode()

    response = client.post(LOGIN_CODE_VERIFY, {"code": last_sms_code("+8613800138000")})

    assert response.status_code == 302
    assert response["Location"] == target
    assert signed_in_user_id(client) == str(user.pk)
    assert client.session[AUTH_METHODS_SESSION_KEY] == ["sms"]


def test_login_by_email_code(client, post):
    user = UserFactory(email="ada@example.com")

    post(LOGIN_CODE, {"username": "ADA@example.com"})
    response = client.post(LOGIN_CODE_VERIFY, {"code": last_email_code("ada@example.com")})

    assert response.status_code == 302
    assert signed_in_user_id(client) == str(user.pk)
    assert client.session[AUTH_METHODS_SESSION_KEY] == ["otp-email"]


def test_login_code_for_unknown_account_answers_the_same_and_sends_nothing(client, post):
    UserFactory(phone="+8613800138000")
    other = Client()

    known = post(LOGIN_CODE, {"username": "+8613800138000"})
    unknown = post(LOGIN_CODE, {"username": "+8613900139000"}, c=other)
    assert (known.status_code, known["Location"]) == (unknown.status_code, unknown["Location"])
    known_page = client.get(LOGIN_CODE_VERIFY)
    unknown_page = other.get(LOGIN_CODE_VERIFY)
    assert normalized(known_page, "+8613800138000") == normalized(unknown_page, "+8613900139000")

    assert outbox_messages(to="+8613900139000") == []
    wrong_known = client.post(LOGIN_CODE_VERIFY, {"code": "000000"})
    wrong_unknown = other.post(LOGIN_CODE_VERIFY, {"code": "000000"})
    if last_sms_code("+8613800138000") != "000000":
        assert wrong_known.status_code == wrong_unknown.status_code == 400
        assert normalized(wrong_known, "+8613800138000") == normalized(
            wrong_unknown, "+8613900139000"
        )
    assert signed_in_user_id(other) is None


def test_replayed_login_code_fails(client, post):
    UserFactory(phone="+8613800138000")
    post(LOGIN_CODE, {"username": "+8613800138000"})
    code = last_sms_code("+8613800138000")
    client.post(LOGIN_CODE_VERIFY, {"code": code})

    # Someone who saw the code replays it from another browser with the same pending login.
    attacker = Client()
    session = attacker.session
    session["tokenpass_login_code"] = {
        "channel": "sms",
        "recipient": "+8613800138000",
        "next": "",
        "started": int(time.time()),
    }
    session.save()
    attacker.cookies["sessionid"] = session.session_key
    response = attacker.post(LOGIN_CODE_VERIFY, {"code": code})

    assert response.status_code == 400
    assert "already been used" in response.content.decode()
    assert signed_in_user_id(attacker) is None


def test_login_code_attempts_run_out(client, post, settings):
    user = UserFactory(phone="+8613800138000")
    post(LOGIN_CODE, {"username": "+8613800138000"})
    code = last_sms_code("+8613800138000")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    for _ in range(settings.OTP_CODE_MAX_ATTEMPTS):
        assert client.post(LOGIN_CODE_VERIFY, {"code": wrong}).status_code == 400
    response = client.post(LOGIN_CODE_VERIFY, {"code": code})

    assert response.status_code == 400
    assert "Too many wrong tries" in response.content.decode()
    assert signed_in_user_id(client) is None
    failures = AuditEvent.objects.filter(action=AuditEvent.Action.LOGIN_FAILURE, user=user)
    assert failures.count() == settings.OTP_CODE_MAX_ATTEMPTS + 1
    assert failures.first().data["method"] == "sms"


def test_login_code_send_is_rate_limited_with_retry_after(client, post):
    UserFactory(phone="+8613800138000")
    post(LOGIN_CODE, {"username": "+8613800138000"})

    response = post(LOGIN_CODE, {"username": "+8613800138000"})

    assert response.status_code == 429
    seconds = int(response["Retry-After"])
    assert 55 <= seconds <= 60
    assert re.search(r"ask for a new one in \d+ seconds", response.content.decode())
    assert OneTimeCode.objects.count() == 1


def test_resend_from_the_code_page_is_rate_limited(client, post):
    UserFactory(phone="+8613800138000")
    post(LOGIN_CODE, {"username": "+8613800138000"})

    response = post(LOGIN_CODE_VERIFY, {"resend": "1"})

    assert response.status_code == 429
    assert re.search(r"ask for a new one in \d+ seconds", response.content.decode())
    assert int(response["Retry-After"]) > 0


def test_malformed_codes_are_form_errors(client, post):
    UserFactory(phone="+8613800138000")
    post(LOGIN_CODE, {"username": "+8613800138000"})

    for code in ["12345", "abcdef", "\uff11\uff12\uff13\uff14\uff15\uff16", "1" * 100]:
        response = client.post(LOGIN_CODE_VERIFY, {"code": code})
        assert response.status_code == 400
        assert b'class="errorlist' in response.content
    assert (
        "Enter the 6 digits" in client.post(LOGIN_CODE_VERIFY, {"code": "12a456"}).content.decode()
    )
    assert OneTimeCode.objects.get().attempts == 0


def test_code_page_without_a_pending_login_goes_back_to_the_start(client):
    response = client.get(LOGIN_CODE_VERIFY)
    assert response.status_code == 302
    assert response["Location"] == LOGIN_CODE


# Sign-out and CSRF ----------------------------------------------------------------------------


def test_logout_by_post_is_audited(client):
    user = UserFactory()
    client.force_login(user)

    assert client.get(reverse("accounts:logout")).status_code == 405
    response = client.post(reverse("accounts:logout"))

    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert signed_in_user_id(client) is None
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LOGOUT, user=user).count() == 1


def test_csrf_failure_is_a_clear_403():
    UserFactory(phone="+8613800138000")
    client = Client(enforce_csrf_checks=True)

    response = client.post(LOGIN, {"username": "+8613800138000", "password": DEFAULT_PASSWORD})

    assert response.status_code == 403
    assert "This form has expired" in response.content.decode()
    assert signed_in_user_id(client) is None
