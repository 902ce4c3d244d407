"""Two-factor authentication: setup, the second sign-in step, recovery codes, turning it off."""

import re
import time

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.middleware import SessionMiddleware
from django.test import RequestFactory
from django.urls import reverse
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.known_devices import COOKIE_NAME as KNOWN_DEVICE_COOKIE
from accounts.login_flow import (
    AUTH_METHODS_SESSION_KEY,
    PENDING_MFA_SESSION_KEY,
    complete_primary_login,
)
from accounts.models import AuditEvent, UserSession
from accounts.services_mfa import recovery_code_hash
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def totp_code(device: TOTPDevice, *, steps_ahead: int = 0) -> str:
    """The code the user's app shows now (or `steps_ahead` periods later: django-otp accepts
    one step of drift and refuses a step it has already accepted)."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def enable_mfa(user) -> tuple[TOTPDevice, list[str]]:
    device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)
    static = StaticDevice.objects.create(user=user, name="Recovery codes", confirmed=True)
    codes = [StaticToken.random_token() for _ in range(10)]
    for code in codes:
        static.token_set.create(token=recovery_code_hash(code=code))
    return device, codes


def start_primary_login(client, user, *, next_url: str | None = None, method: str = "pwd"):
    """Drive login_flow.complete_primary_login as the password view does, on `client`'s
    session; returns its response."""
    request = RequestFactory().post("/login/", HTTP_USER_AGENT="pytest-browser/1.0")
    SessionMiddleware(lambda r: None).process_request(request)
    request.user = AnonymousUser()
    response = complete_primary_login(request, user=user, method=method, next_url=next_url)
    request.session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = request.session.session_key
    return response


@pytest.fixture
def no_throttle(settings):
    """django-otp makes a device wait 1, 2, 4… seconds after each wrong code; tests that
    exercise our own attempt counter switch that back-off off."""
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    settings.OTP_STATIC_THROTTLE_FACTOR = 0


# Setup ------------------------------------------------------------------------------------------


def test_setup_page_shows_qr_code_and_secret_of_an_unconfirmed_device(client):
    user = UserFactory()
    client.force_login(user)

    response = client.get(reverse("accounts:mfa_setup"))

    assert response.status_code == 200
    device = TOTPDevice.objects.get(user=user)
    assert device.confirmed is False
    html = response.content.decode()
    assert "<svg" in html
    secret = re.search(r'data-secret="([A-Z2-7]+)"', html).group(1)
    import base64

    assert base64.b32decode(secret + "=" * (-len(secret) % 8)) == device.bin_key
    # Reloading the page keeps the same secret (the app may already have scanned it).
    again = client.get(reverse("accounts:mfa_setup")).content.decode()
    assert f'data-secret="{secret}"' in again
    assert TOTPDevice.objects.filter(user=user).count() == 1


def test_provisioning_uri_names_tokenpass_as_issuer_and_the_phone_number():
    from accounts.services_mfa import totp_provisioning_uri, totp_secret_base32

    user = UserFactory(email=None)
    device = TOTPDevice.objects.create(user=user, name="x", confirmed=False)

    uri = totp_provisioning_uri(device=device)

    assert uri.startswith("otpauth://totp/Tokenpass%3A%2B86")
    assert "issuer=Tokenpass" in uri
    assert f"secret={totp_secret_base32(device=device)}" in uri


def test_setup_refuses_a_wrong_code(client):
    user = UserFactory()
    client.force_login(user)
    client.get(reverse("accounts:mfa_setup"))

    response = client.post(reverse("accounts:mfa_setup"), {"code": "000000"})

    assert response.status_code == 400
    assert "not valid" in response.content.decode()
    assert not TOTPDevice.objects.filter(user=user, confirmed=True).exists()
    assert not StaticDevice.objects.filter(user=user).exists()
    assert not AuditEvent.objects.filter(user=user, action=AuditEvent.Action.MFA_ENABLED).exists()


def test_setup_rejects_malformed_codes_with_a_form_error(client):
    user = UserFactory()
    client.force_login(user)
    client.get(reverse("accounts:mfa_setup"))

    response = client.post(reverse("accounts:mfa_setup"), {"code": "12ab"})

    assert response.status_code == 400
    assert "six digits" in response.content.decode()


def test_setup_with_a_valid_code_turns_mfa_on_and_shows_ten_recovery_codes_once(client):
    user = UserFactory()
    client.force_login(user)
    client.get(reverse("accounts:mfa_setup"))
    device = TOTPDevice.objects.get(user=user)

    response = client.post(reverse("accounts:mfa_setup"), {"code": totp_code(device)})

    assert response.status_code == 200
    device.refresh_from_db()
    assert device.confirmed is True
    shown = re.findall(r"<li><code>([a-z2-7]{8})</code></li>", response.content.decode())
    stored = set(StaticToken.objects.filter(device__user=user).values_list("token", flat=True))
    assert len(shown) == 10
    assert {recovery_code_hash(code=code) for code in shown} == stored
    assert not stored & set(shown)
    assert AuditEvent.objects.filter(user=user, action=AuditEvent.Action.MFA_ENABLED).count() == 1
    # The session that proved the factor counts as verified.
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    # The codes are not shown again: the setup page now sends the user back to security.
    again = client.get(reverse("accounts:mfa_setup"))
    assert again.status_code == 302
    assert again.url == reverse("accounts:security")
    assert shown[0] not in client.get(reverse("accounts:mfa_recovery_codes")).content.decode()


def test_setup_needs_a_signed_in_user(client):
    response = client.get(reverse("accounts:mfa_setup"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("accounts:login"))


# Recovery codes and turning off --------------------------------------------------------------


def test_regenerating_recovery_codes_needs_the_password_and_replaces_the_old_ones(client):
    user = UserFactory()
    _, old_codes = enable_mfa(user)
    client.force_login(user)
    url = reverse("accounts:mfa_recovery_codes")
    assert "10 unused recovery codes" in client.get(url).content.decode()

    wrong = client.post(url, {"password": "not my password"})
    assert wrong.status_code == 400
    assert set(StaticToken.objects.filter(device__user=user).values_list("token", flat=True)) == {
        recovery_code_hash(code=code) for code in old_codes
    }

    response = client.post(url, {"password": DEFAULT_PASSWORD})

    assert response.status_code == 200
    new_codes = re.findall(r"<li><code>([a-z2-7]{8})</code></li>", response.content.decode())
    assert len(new_codes) == 10
    stored = set(StaticToken.objects.filter(device__user=user).values_list("token", flat=True))
    assert stored == {recovery_code_hash(code=code) for code in new_codes}
    assert not stored & {recovery_code_hash(code=code) for code in old_codes}
    assert AuditEvent.objects.filter(
        user=user, action=AuditEvent.Action.MFA_RECOVERY_REGENERATED
    ).exists()


def test_disable_needs_the_current_password(client):
    user = UserFactory()
    enable_mfa(user)
    client.force_login(user)

    response = client.post(reverse("accounts:mfa_disable"), {"password": "wrong password"})

    assert response.status_code == 400
    assert "not your current password" in response.content.decode()
    assert TOTPDevice.objects.filter(user=user, confirmed=True).exists()
    assert not AuditEvent.objects.filter(user=user, action=AuditEvent.Action.MFA_DISABLED).exists()


def test_disable_removes_the_app_and_the_recovery_codes(client):
    user = UserFactory()
    enable_mfa(user)
    client.force_login(user)

    response = client.post(reverse("accounts:mfa_disable"), {"password": DEFAULT_PASSWORD})

    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=user).exists()
    assert not StaticDevice.objects.filter(user=user).exists()
    assert AuditEvent.objects.filter(user=user, action=AuditEvent.Action.MFA_DISABLED).count() == 1
    # The next sign-in needs the password only.
    other = client.__class__()
    assert start_primary_login(other, user).url == reverse("accounts:profile")


# The second sign-in step ---------------------------------------------------------------------


def test_password_login_of_a_user_with_mfa_parks_the_login_until_the_code(client):
    user = UserFactory()
    enable_mfa(user)

    response = start_primary_login(client, user, next_url="/account/security/")

    assert response.url == reverse("accounts:login_mfa")
    assert SESSION_KEY not in client.session
    # The browser becomes a known device only once the second factor is in.
    assert KNOWN_DEVICE_COOKIE not in response.cookies
    assert client.get(reverse("accounts:profile")).status_code == 302
    page = client.get(reverse("accounts:login_mfa"))
    assert page.status_code == 200
    assert 'name="code"' in page.content.decode()


def test_a_valid_app_code_finishes_the_login_verified(client):
    user = UserFactory()
    device, _ = enable_mfa(user)
    start_primary_login(client, user, next_url="/account/security/")

    response = client.post(reverse("accounts:login_mfa"), {"code": totp_code(device)})

    assert response.status_code == 302
    assert response.url == "/account/security/"
    assert KNOWN_DEVICE_COOKIE in response.cookies
    session = client.session
    assert session[SESSION_KEY] == str(user.pk)
    assert session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    assert session[AUTH_METHODS_SESSION_KEY] == ["pwd", "otp"]
    assert PENDING_MFA_SESSION_KEY not in session
    event = AuditEvent.objects.get(user=user, action=AuditEvent.Action.LOGIN_SUCCESS)
    assert event.data == {"amr": ["pwd", "otp"]}
    assert UserSession.objects.filter(user=user, session_key=session.session_key).exists()
    assert client.get(reverse("accounts:security")).status_code == 200


def test_the_same_app_code_cannot_be_used_twice(client, no_throttle):
    user = UserFactory()
    device, _ = enable_mfa(user)
    code = totp_code(device)
    start_primary_login(client, user)
    assert client.post(reverse("accounts:login_mfa"), {"code": code}).status_code == 302

    other = client.__class__()
    start_primary_login(other, user)
    response = other.post(reverse("accounts:login_mfa"), {"code": code})

    assert response.status_code == 400
    assert SESSION_KEY not in other.session


def test_a_recovery_code_signs_in_once(client, no_throttle):
    user = UserFactory()
    _, codes = enable_mfa(user)
    start_primary_login(client, user)

    response = client.post(reverse("accounts:login_mfa"), {"code": codes[3].upper()})

    assert response.status_code == 302
    assert client.session[SESSION_KEY] == str(user.pk)
    used = AuditEvent.objects.get(user=user, action=AuditEvent.Action.MFA_RECOVERY_USED)
    assert used.data == {"codes_left": 9}
    assert not StaticToken.objects.filter(token=recovery_code_hash(code=codes[3])).exists()
    assert StaticToken.objects.filter(device__user=user).count() == 9

    other = client.__class__()
    start_primary_login(other, user)
    again = other.post(reverse("accounts:login_mfa"), {"code": codes[3]})
    assert again.status_code == 400
    assert SESSION_KEY not in other.session


def test_five_wrong_codes_drop_the_pending_login(client, no_throttle):
    user = UserFactory()
    device, _ = enable_mfa(user)
    start_primary_login(client, user)
    url = reverse("accounts:login_mfa")

    for attempt in range(4):
        response = client.post(url, {"code": "000000" if attempt % 2 else "wrongcode"})
        assert response.status_code == 400
    fifth = client.post(url, {"code": "999999"})

    assert fifth.status_code == 302
    assert fifth.url == reverse("accounts:login")
    assert PENDING_MFA_SESSION_KEY not in client.session
    # Even the right code no longer helps: the password step must be done again.
    late = client.post(url, {"code": totp_code(device)})
    assert late.status_code == 302
    assert late.url == reverse("accounts:login")
    assert SESSION_KEY not in client.session
    assert AuditEvent.objects.filter(user=user, action=AuditEvent.Action.LOGIN_FAILURE).count() == 5


def test_django_otp_back_off_refuses_a_code_right_after_a_wrong_one(client):
    user = UserFactory()
    device, _ = enable_mfa(user)
    start_primary_login(client, user)
    url = reverse("accounts:login_mfa")
    assert client.post(url, {"code": "000000"}).status_code == 400

    response = client.post(url, {"code": totp_code(device)})

    assert response.status_code == 400
    assert "Too many wrong codes in a row" in response.content.decode()
    assert SESSION_KEY not in client.session


def test_the_pending_login_expires_after_five_minutes(client):
    user = UserFactory()
    device, _ = enable_mfa(user)
    start_primary_login(client, user)
    session = client.session
    pending = session[PENDING_MFA_SESSION_KEY]
    pending["started"] = int(time.time()) - 301
    session[PENDING_MFA_SESSION_KEY] = pending
    session.save()

    response = client.post(reverse("accounts:login_mfa"), {"code": totp_code(device)})

    assert response.status_code == 302
    assert response.url == reverse("accounts:login")
    assert SESSION_KEY not in client.session
    assert PENDING_MFA_SESSION_KEY not in client.session


def test_the_second_step_without_a_pending_login_sends_to_sign_in(client):
    response = client.get(reverse("accounts:login_mfa"))

    assert response.status_code == 302
    assert response.url == reverse("accounts:login")


def test_an_offsite_next_url_is_not_followed_after_the_code(client):
    user = UserFactory()
    device, _ = enable_mfa(user)
    start_primary_login(client, user, next_url="https://evil.example/")

    response = client.post(reverse("accounts:login_mfa"), {"code": totp_code(device)})

    assert response.url == reverse("accounts:profile")


def test_password_sign_in_page_leads_to_the_code_step(client):
    user = UserFactory()
    device, _ = enable_mfa(user)

    response = client.post(
        reverse("accounts:login") + "?next=/account/security/",
        {"username": user.phone, "password": DEFAULT_PASSWORD},
    )

    assert response.status_code == 302
    assert response.url == reverse("accounts:login_mfa")
    assert SESSION_KEY not in client.session
    done = client.post(reverse("accounts:login_mfa"), {"code": totp_code(device)})
    assert done.url == "/account/security/"
    assert client.session[SESSION_KEY] == str(user.pk)


def test_guessing_the_password_to_turn_two_factor_off_is_limited(client):
    user = UserFactory()
    enable_mfa(user)
    client.force_login(user)
    url = reverse("accounts:mfa_disable")

    for _ in range(5):
        assert client.post(url, {"password": "guess"}).status_code == 400
    response = client.post(url, {"password": DEFAULT_PASSWORD})

    assert response.status_code == 429
    assert "Too many wrong passwords" in response.content.decode()
    assert TOTPDevice.objects.filter(user=user, confirmed=True).exists()
    # The limit is per account: the regenerate page is refused too.
    regen = client.post(reverse("accounts:mfa_recovery_codes"), {"password": DEFAULT_PASSWORD})
    assert regen.status_code == 429


# Recovery codes at rest ------------------------------------------------------------------------


def test_the_database_holds_no_recovery_code_in_clear(client, no_throttle):
    user = UserFactory()
    client.force_login(user)
    client.get(reverse("accounts:mfa_setup"))
    device = TOTPDevice.objects.get(user=user)
    response = client.post(reverse("accounts:mfa_setup"), {"code": totp_code(device)})
    shown = re.findall(r"<li><code>([a-z2-7]{8})</code></li>", response.content.decode())
    assert len(shown) == 10

    stored = list(StaticToken.objects.filter(device__user=user).values_list("token", flat=True))
    assert len(stored) == 10
    for value in stored:
        assert len(value) == 16
        assert not any(code in value.lower() for code in shown)
    # A code shown to the user still signs in, once, through the real second step.
    client.logout()
    start_primary_login(client, user)
    assert client.post(reverse("accounts:login_mfa"), {"code": shown[0]}).status_code == 302
    assert StaticToken.objects.filter(device__user=user).count() == 9


def test_the_recovery_hash_is_keyed_and_ignores_how_the_code_was_typed(settings):
    plain = recovery_code_hash(code="abcd2345")
    assert recovery_code_hash(code=" ABCD-2345 ") == plain
    assert recovery_code_hash(code="abcd2346") != plain
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789"
    assert recovery_code_hash(code="abcd2345") != plain


def test_the_migration_hashes_codes_stored_in_clear_before_it():
    from importlib import import_module

    from django.apps import apps

    migration = import_module("accounts.migrations.0004_hash_recovery_codes")
    user = UserFactory()
    static = StaticDevice.objects.create(user=user, name="Recovery codes", confirmed=True)
    legacy = StaticToken.random_token()
    static.token_set.create(token=legacy)
    already = static.token_set.create(token=recovery_code_hash(code="zzzz2222"))

    migration.hash_clear_codes(apps, None)
    migration.hash_clear_codes(apps, None)  # a second run changes nothing

    assert set(static.token_set.values_list("token", flat=True)) == {
        recovery_code_hash(code=legacy),
        already.token,
    }
