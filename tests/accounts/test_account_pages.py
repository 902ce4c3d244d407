"""Profile, security page and security log, through the HTTP client."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.audit import audit_event_record
from accounts.models import AuditEvent
from tests.accounts.test_mfa import enable_mfa
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PAGES = ["accounts:profile", "accounts:security", "accounts:security_log"]


@pytest.mark.parametrize("name", PAGES)
def test_account_pages_need_a_signed_in_user(client, name):
    response = client.get(reverse(name))

    assert response.status_code == 302
    assert response.url == f"{reverse('accounts:login')}?next={reverse(name)}"


def test_profile_shows_identities_with_verification_badges(client):
    user = UserFactory(
        phone="+8613812345678", phone_verified=True, email="me@example.com", email_verified=False
    )
    client.force_login(user)

    html = client.get(reverse("accounts:profile")).content.decode()

    assert "+8613812345678" in html
    assert "me@example.com" in html
    assert html.count('class="badge ok">Verified') == 1
    assert html.count('class="badge warn">Not verified') == 1
    assert user.public_id in html


def test_profile_update_saves_and_audits_the_changed_fields(client):
    user = UserFactory(display_name="Old", locale="en", time_zone="UTC")
    client.force_login(user)

    response = client.post(
        reverse("accounts:profile"),
        {"display_name": "  Li Lei ", "locale": "zh-hans", "time_zone": "Asia/Shanghai"},
    )

    assert response.status_code == 302
    user.refresh_from_db()
    assert (user.display_name, user.locale, user.time_zone) == (
        "Li Lei",
        "zh-hans",
        "Asia/Shanghai",
    )
    event = AuditEvent.objects.get(user=user, action=AuditEvent.Action.PROFILE_CHANGE)
    assert event.data == {"fields": ["display_name", "locale", "time_zone"]}
    assert response.cookies["django_language"].value == "zh-hans"


def test_profile_refuses_an_unknown_time_zone(client):
    user = UserFactory(time_zone="UTC")
    client.force_login(user)

    response = client.post(
        reverse("accounts:profile"),
        {"display_name": "x", "locale": "en", "time_zone": "Mars/Olympus_Mons"},
    )

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    user.refresh_from_db()
    assert user.time_zone == "UTC"
    assert not AuditEvent.objects.filter(user=user, action=AuditEvent.Action.PROFILE_CHANGE)


def test_profile_refuses_an_unknown_language(client):
    user = UserFactory()
    client.force_login(user)

    response = client.post(
        reverse("accounts:profile"), {"display_name": "x", "locale": "xx", "time_zone": "UTC"}
    )

    assert response.status_code == 400


def test_saving_an_unchanged_profile_writes_no_audit_row(client):
    user = UserFactory(display_name="Same", locale="en", time_zone="UTC")
    client.force_login(user)

    client.post(
        reverse("accounts:profile"), {"display_name": "Same", "locale": "en", "time_zone": "UTC"}
    )

    assert not AuditEvent.objects.filter(user=user, action=AuditEvent.Action.PROFILE_CHANGE)


def test_security_page_shows_two_factor_status_and_links(client):
    user = UserFactory()
    client.force_login(user)

    off = client.get(reverse("accounts:security")).content.decode()
    enable_mfa(user)
    on = client.get(reverse("accounts:security")).content.decode()

    assert reverse("accounts:mfa_setup") in off
    assert reverse("accounts:mfa_disable") not in off
    assert reverse("accounts:mfa_disable") in on
    assert reverse("accounts:mfa_recovery_codes") in on
    assert "10 recovery codes left" in on


def test_security_log_shows_only_the_users_own_events_newest_first(client):
    user = UserFactory()
    stranger = UserFactory()
    audit_event_record(action=AuditEvent.Action.PASSWORD_CHANGE, user=user)
    newest = audit_event_record(action=AuditEvent.Action.MFA_ENABLED, user=user)
    AuditEvent.objects.create(
        action=AuditEvent.Action.SIGNUP, user=user, created_at=timezone.now() - timedelta(days=3)
    )
    audit_event_record(action=AuditEvent.Action.TOKEN_REUSE, user=stranger)
    client.force_login(user)

    response = client.get(reverse("accounts:security_log"))

    rows = list(response.context["page"].object_list)
    assert [e.action for e in rows] == [newest.action, "password_change", "signup"]
    html = response.content.decode()
    assert "refresh token reuse detected" not in html
    assert html.index("two-factor enabled") < html.index("signed up")


def test_security_log_is_paginated(client):
    user = UserFactory()
    for _ in range(30):
        audit_event_record(action=AuditEvent.Action.LOGIN_SUCCESS, user=user)
    client.force_login(user)

    first = client.get(reverse("accounts:security_log"))
    second = client.get(reverse("accounts:security_log"), {"page": 2})
    junk = client.get(reverse("accounts:security_log"), {"page": "abc"})

    assert len(first.context["page"].object_list) == 25
    assert len(second.context["page"].object_list) == 5
    assert "Page 2 of 2" in second.content.decode()
    assert junk.status_code == 200
