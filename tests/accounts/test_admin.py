"""The staff admin: two-factor at the door, users, read-only audit and codes, unlocking."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib import admin
from django.contrib.auth import SESSION_KEY
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY

from accounts.audit import audit_event_record
from accounts.models import AuditEvent, OneTimeCode, User, UserSession
from tests.accounts.test_mfa import enable_mfa, start_primary_login, totp_code
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def staff_signed_in_with_code(client, *, superuser=True):
    """A staff member who signed in with password and app code, as in production."""
    staff = UserFactory(is_staff=True, is_superuser=superuser)
    device, _ = enable_mfa(staff)
    start_primary_login(client, staff)
    response = client.post(reverse("accounts:login_mfa"), {"code": totp_code(device)})
    assert response.status_code == 302
    return staff


# Two-factor at the door ------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_sign_in_page(client):
    response = client.get("/admin/", follow=True)

    assert response.redirect_chain[-1][0].startswith(reverse("accounts:login"))
    assert "next=/admin/" in response.redirect_chain[-1][0]


def test_staff_without_two_factor_are_sent_to_set_it_up(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)

    response = client.get("/admin/", follow=True)

    final_url = response.redirect_chain[-1][0]
    assert final_url.startswith(reverse("accounts:mfa_setup"))
    assert "next=%2Fadmin%2F" in final_url
    assert "Staff accounts need two-factor authentication" in response.content.decode()
    assert client.get("/admin/accounts/user/").status_code == 302


def test_staff_who_set_up_two_factor_get_in(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    client.get(reverse("accounts:mfa_setup") + "?next=/admin/")
    device = staff.totpdevice_set.get()

    done = client.post(
        reverse("accounts:mfa_setup"), {"code": totp_code(device), "next": "/admin/"}
    )

    assert 'href="/admin/"' in done.content.decode()
    assert client.get("/admin/").status_code == 200


def test_staff_with_two_factor_but_an_unverified_session_are_asked_for_a_code(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    device, _ = enable_mfa(staff)
    client.force_login(staff)  # a session from before two-factor was turned on

    response = client.get("/admin/accounts/user/", follow=True)

    assert response.redirect_chain[-1][0] == reverse("accounts:login_mfa")
    done = client.post(reverse("accounts:login_mfa"), {"code": totp_code(device)})
    assert done.url == "/admin/accounts/user/"
    assert client.get("/admin/accounts/user/").status_code == 200


def test_staff_signed_in_with_password_and_code_see_the_admin(client):
    staff_signed_in_with_code(client)

    response = client.get("/admin/")

    assert response.status_code == 200
    assert "Tokenpass administration" in response.content.decode()


def test_a_verified_session_of_a_non_staff_user_is_refused(client):
    user = UserFactory()
    device, _ = enable_mfa(user)
    start_primary_login(client, user)
    client.post(reverse("accounts:login_mfa"), {"code": totp_code(device)})

    response = client.get("/admin/accounts/user/", follow=True)

    assert response.redirect_chain[-1][0] == reverse("accounts:profile")
    assert "does not have access to the admin" in response.content.decode()
    assert client.get("/admin/").status_code == 302
    assert client.post("/admin/login/", {"username": user.phone}).status_code == 302


# Users ------------------------------------------------------------------------------------------


def test_user_list_searches_by_phone_email_and_public_id(client):
    staff_signed_in_with_code(client)
    alice = UserFactory(phone="+8613912345678", email="alice@example.com")
    UserFactory(phone="+8613900000001", email="bob@example.com")
    url = reverse("admin:accounts_user_changelist")

    for query in ("+8613912345678", "alice@example", alice.public_id):
        page = client.get(url, {"q": query}).content.decode()
        assert alice.public_id in page
        assert "bob@example.com" not in page
    filtered = client.get(url, {"is_staff__exact": "1"}).content.decode()
    assert alice.public_id not in filtered


def test_user_pages_render_with_the_password_form_link(client):
    staff_signed_in_with_code(client)
    target = UserFactory()

    change = client.get(reverse("admin:accounts_user_change", args=[target.pk]))
    add = client.get(reverse("admin:accounts_user_add"))

    assert change.status_code == 200
    assert f"../../{target.pk}/password/" in change.content.decode()
    assert target.public_id in change.content.decode()
    assert add.status_code == 200
    assert 'name="password1"' in add.content.decode()


def test_blank_email_and_phone_are_saved_as_null(client):
    staff_signed_in_with_code(client)
    UserFactory(email=None, phone="+8613911111111")

    response = client.post(
        reverse("admin:accounts_user_add"),
        {
            "phone": "139 2222 2222",
            "email": "",
            "password1": "a long new passphrase",
            "password2": "a long new passphrase",
        },
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    created = User.objects.get(phone="+8613922222222")
    assert created.email is None
    assert created.check_password("a long new passphrase")

    change = client.post(
        reverse("admin:accounts_user_change", args=[created.pk]),
        {
            "phone": "",
            "email": "New@Example.com",
            "display_name": "New",
            "locale": "en",
            "time_zone": "UTC",
            "is_active": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert change.status_code == 302, change.content.decode()[:3000]
    created.refresh_from_db()
    assert created.phone is None
    assert created.email == "new@example.com"


def test_a_user_needs_a_phone_or_an_email(client):
    staff_signed_in_with_code(client)
    target = UserFactory()

    response = client.post(
        reverse("admin:accounts_user_change", args=[target.pk]),
        {"phone": "", "email": "", "locale": "en", "time_zone": "UTC", "is_active": "on"},
    )

    assert response.status_code == 200
    assert "needs a phone number or an email address" in response.content.decode()
    target.refresh_from_db()
    assert target.phone is not None


def test_staff_set_a_password_with_the_standard_form_and_it_is_audited(client):
    staff = staff_signed_in_with_code(client)
    target = UserFactory()
    other = client.__class__()
    start_primary_login(other, target)
    assert UserSession.objects.filter(user=target).count() == 1

    url = reverse("admin:auth_user_password_change", args=[target.pk])
    assert client.get(url).status_code == 200
    response = client.post(
        url,
        {"password1": "staff chosen passphrase", "password2": "staff chosen passphrase"},
    )

    assert response.status_code == 302
    target.refresh_from_db()
    assert target.check_password("staff chosen passphrase")
    event = AuditEvent.objects.get(user=target, action=AuditEvent.Action.PASSWORD_CHANGE)
    assert event.actor_id == staff.pk
    assert not UserSession.objects.filter(user=target).exists()
    assert SESSION_KEY not in other.session


# Read-only records ------------------------------------------------------------------------------


def test_audit_events_are_read_only_even_for_superusers(client):
    staff = staff_signed_in_with_code(client)
    target = UserFactory(phone="+8613933333333")
    event = audit_event_record(action=AuditEvent.Action.LOGIN_SUCCESS, user=target)
    request = RequestFactory().get("/admin/")
    request.user = staff
    model_admin = admin.site._registry[AuditEvent]

    assert model_admin.has_add_permission(request) is False
    assert model_admin.has_change_permission(request, event) is False
    assert model_admin.has_delete_permission(request, event) is False
    assert "delete_selected" not in model_admin.get_actions(request)

    changelist = client.get(reverse("admin:accounts_auditevent_changelist"), {"q": target.phone})
    assert changelist.status_code == 200
    assert "+8613933333333" in changelist.content.decode()
    detail = client.get(reverse("admin:accounts_auditevent_change", args=[event.pk]))
    assert detail.status_code == 200
    assert 'type="submit" value="Save"' not in detail.content.decode()
    assert (
        client.post(
            reverse("admin:accounts_auditevent_change", args=[event.pk]), {"action": "logout"}
        ).status_code
        == 403
    )
    assert (
        client.post(
            reverse("admin:accounts_auditevent_delete", args=[event.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert client.get(reverse("admin:accounts_auditevent_add")).status_code == 403
    event.refresh_from_db()
    assert event.action == AuditEvent.Action.LOGIN_SUCCESS


def test_audit_events_filter_by_action_and_date(client):
    staff_signed_in_with_code(client)
    target = UserFactory()
    disabled = audit_event_record(action=AuditEvent.Action.MFA_DISABLED, user=target)
    old = audit_event_record(action=AuditEvent.Action.MFA_DISABLED, user=target)
    older = AuditEvent.objects.create(
        action=AuditEvent.Action.MFA_DISABLED,
        user=target,
        created_at=timezone.now() - timedelta(days=40),
    )
    url = reverse("admin:accounts_auditevent_changelist")
    today = timezone.now()

    only_mfa = client.get(url, {"action__exact": "mfa_disabled"}).context["cl"]
    this_day = client.get(
        url,
        {
            "action__exact": "mfa_disabled",
            "created_at__year": today.year,
            "created_at__month": today.month,
            "created_at__day": today.day,
        },
    ).context["cl"]

    assert {e.action for e in only_mfa.result_list} == {"mfa_disabled"}
    assert only_mfa.result_count == 3
    assert {e.pk for e in this_day.result_list} == {disabled.pk, old.pk}
    assert older.pk not in {e.pk for e in this_day.result_list}


def test_one_time_codes_are_read_only_and_never_show_the_hash(client):
    staff_signed_in_with_code(client)
    code = OneTimeCode.objects.create(
        purpose=OneTimeCode.Purpose.LOGIN,
        channel=OneTimeCode.Channel.SMS,
        recipient="+8613944444444",
        code_hash="f" * 64,
        expires_at=timezone.now() + timedelta(minutes=5),
    )

    detail = client.get(reverse("admin:accounts_onetimecode_change", args=[code.pk]))

    assert detail.status_code == 200
    assert "+8613944444444" in detail.content.decode()
    assert "f" * 64 not in detail.content.decode()
    assert client.get(reverse("admin:accounts_onetimecode_add")).status_code == 403


# Lock-outs ---------------------------------------------------------------------------------------


def test_unlock_action_clears_the_lockout_and_writes_an_audit_event(client):
    staff = staff_signed_in_with_code(client)
    locked = UserFactory(phone="+8613955555555")
    attempt = AccessAttempt.objects.create(
        username=locked.phone,
        ip_address="203.0.113.9",
        user_agent="curl/8",
        path_info="/login/",
        failures_since_start=5,
        get_data="",
        post_data="",
        http_accept="*/*",
    )
    AccessAttempt.objects.create(
        username="someone-else",
        ip_address="203.0.113.9",
        user_agent="curl/8",
        path_info="/login/",
        failures_since_start=5,
        get_data="",
        post_data="",
        http_accept="*/*",
    )
    changelist = reverse("admin:axes_accessattempt_changelist")
    assert "Unlock" in client.get(changelist).content.decode()

    response = client.post(
        changelist, {"action": "unlock", "_selected_action": [attempt.pk]}, follow=True
    )

    assert response.status_code == 200
    assert "Unlocked 1 sign-in record." in response.content.decode()
    assert not AccessAttempt.objects.filter(username=locked.phone).exists()
    assert AccessAttempt.objects.filter(username="someone-else").exists()
    event = AuditEvent.objects.get(action=AuditEvent.Action.UNLOCK)
    assert event.user_id == locked.pk
    assert event.actor_id == staff.pk
    assert event.data == {"username": locked.phone, "ip_address": "203.0.113.9"}


def test_a_locked_out_user_can_sign_in_again_after_unlock(client, settings):
    settings.AXES_FAILURE_LIMIT = 2
    staff_client = client.__class__()
    staff_signed_in_with_code(staff_client)
    locked = UserFactory()
    for _ in range(2):
        client.post(reverse("accounts:login"), {"username": locked.phone, "password": "nope"})
    blocked = client.post(
        reverse("accounts:login"), {"username": locked.phone, "password": DEFAULT_PASSWORD}
    )
    assert SESSION_KEY not in client.session
    assert blocked.status_code in (403, 429)
    attempt = AccessAttempt.objects.get(username=locked.phone)

    staff_client.post(
        reverse("admin:axes_accessattempt_changelist"),
        {"action": "unlock", "_selected_action": [attempt.pk]},
    )
    again = client.post(
        reverse("accounts:login"), {"username": locked.phone, "password": DEFAULT_PASSWORD}
    )

    assert again.status_code == 302
    assert client.session[SESSION_KEY] == str(locked.pk)


def test_device_id_is_what_makes_a_session_verified(client):
    """Guards the test helper above: without the device in the session the admin refuses."""
    staff = staff_signed_in_with_code(client)
    session = client.session
    assert session[DEVICE_ID_SESSION_KEY].endswith(str(staff.totpdevice_set.get().pk))
    del session[DEVICE_ID_SESSION_KEY]
    session.save()

    assert client.get("/admin/accounts/user/").status_code == 302


def test_staff_can_sign_a_user_out_everywhere(client):
    staff = staff_signed_in_with_code(client)
    target = UserFactory()
    phone, laptop = client.__class__(), client.__class__()
    start_primary_login(phone, target)
    start_primary_login(laptop, target)

    response = client.post(
        reverse("admin:accounts_user_changelist"),
        {"action": "sign_out_everywhere", "_selected_action": [target.pk]},
        follow=True,
    )

    assert "Ended 2 sessions." in response.content.decode()
    assert SESSION_KEY not in phone.session
    assert SESSION_KEY not in laptop.session
    event = AuditEvent.objects.get(user=target, action=AuditEvent.Action.SESSIONS_REVOKED)
    assert event.actor_id == staff.pk
    assert client.get("/admin/").status_code == 200


def test_the_admin_refuses_an_unknown_time_zone(client):
    staff_signed_in_with_code(client)
    target = UserFactory()

    response = client.post(
        reverse("admin:accounts_user_change", args=[target.pk]),
        {
            "phone": target.phone,
            "email": target.email,
            "locale": "en",
            "time_zone": "Mars/Base",
            "is_active": "on",
        },
    )

    assert response.status_code == 200
    assert "Enter a time zone name" in response.content.decode()
    target.refresh_from_db()
    assert target.time_zone == "UTC"


def test_staff_can_reset_two_factor_for_a_user_who_lost_phone_and_codes(client):
    staff = staff_signed_in_with_code(client)
    locked_out_of_2fa = UserFactory()
    enable_mfa(locked_out_of_2fa)
    changelist = reverse("admin:accounts_user_changelist")
    listing = client.get(changelist, {"q": locked_out_of_2fa.public_id})
    assert listing.context["cl"].result_list[0].has_two_factor is True

    response = client.post(
        changelist,
        {"action": "reset_two_factor", "_selected_action": [locked_out_of_2fa.pk]},
        follow=True,
    )

    assert "Two-factor reset for 1 user." in response.content.decode()
    assert not locked_out_of_2fa.totpdevice_set.exists()
    assert not locked_out_of_2fa.staticdevice_set.exists()
    event = AuditEvent.objects.get(user=locked_out_of_2fa, action=AuditEvent.Action.MFA_DISABLED)
    assert event.actor_id == staff.pk
    # The next sign-in needs only the password.
    other = client.__class__()
    assert start_primary_login(other, locked_out_of_2fa).url == reverse("accounts:profile")
