"""Active sessions: listed on the security page, ended from there, by a password change, and
forgotten on sign-out."""

from datetime import timedelta

import pytest
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.middleware import last_seen_cache_key
from accounts.models import AuditEvent, UserSession
from tests.accounts.test_mfa import start_primary_login
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def signed_in_client(user, *, user_agent: str = "pytest-browser/1.0") -> Client:
    client = Client(HTTP_USER_AGENT=user_agent)
    start_primary_login(client, user)
    assert client.session[SESSION_KEY] == str(user.pk)
    return client


def test_each_sign_in_is_listed_with_device_and_address():
    user = UserFactory()
    laptop = signed_in_client(user)
    signed_in_client(user)
    UserSession.objects.filter(session_key=laptop.session.session_key).update(
        user_agent="Mozilla/5.0 (X11; Linux x86_64) Laptop"
    )

    page = laptop.get(reverse("accounts:security"))

    assert page.status_code == 200
    html = page.content.decode()
    assert UserSession.objects.filter(user=user).count() == 2
    assert html.count("This device") == 1
    assert "Laptop" in html
    assert "127.0.0.1" in html
    assert "Sign out everywhere else" in html


def test_sign_out_everywhere_else_ends_the_other_sessions_only():
    user = UserFactory()
    here = signed_in_client(user)
    phone = signed_in_client(user)
    tablet = signed_in_client(user)
    stranger = signed_in_client(UserFactory())
    assert phone.get(reverse("accounts:profile")).status_code == 200

    response = here.post(reverse("accounts:sessions_end_others"), follow=True)

    assert "Signed out 2 other sessions." in response.content.decode()
    assert here.get(reverse("accounts:profile")).status_code == 200
    for other in (phone, tablet):
        after = other.get(reverse("accounts:profile"))
        assert after.status_code == 302
        assert after.url.startswith(reverse("accounts:login"))
    assert stranger.get(reverse("accounts:profile")).status_code == 200
    assert list(UserSession.objects.filter(user=user).values_list("session_key", flat=True)) == [
        here.session.session_key
    ]
    assert not Session.objects.filter(session_key=phone.cookies["sessionid"].value).exists()
    event = AuditEvent.objects.get(user=user, action=AuditEvent.Action.SESSIONS_REVOKED)
    assert event.data == {"ended": 2}


def test_sign_out_everywhere_else_needs_post(client):
    user = UserFactory()
    here = signed_in_client(user)
    other = signed_in_client(user)

    assert here.get(reverse("accounts:sessions_end_others")).status_code == 405
    assert other.get(reverse("accounts:profile")).status_code == 200


def test_changing_the_password_keeps_this_session_and_ends_the_others():
    user = UserFactory()
    here = signed_in_client(user)
    other = signed_in_client(user)

    response = here.post(
        reverse("accounts:security"),
        {
            "old_password": DEFAULT_PASSWORD,
            "new_password1": "a brand new passphrase",
            "new_password2": "a brand new passphrase",
        },
        follow=True,
    )

    assert response.status_code == 200
    assert "Your password is changed. 1 other session was signed out." in (
        response.content.decode()
    )
    user.refresh_from_db()
    assert user.check_password("a brand new passphrase")
    assert here.get(reverse("accounts:security")).status_code == 200
    assert other.get(reverse("accounts:profile")).status_code == 302
    assert UserSession.objects.filter(user=user).count() == 1
    assert (
        AuditEvent.objects.filter(user=user, action=AuditEvent.Action.PASSWORD_CHANGE).count() == 1
    )


def test_a_wrong_current_password_changes_nothing():
    user = UserFactory()
    here = signed_in_client(user)
    other = signed_in_client(user)

    response = here.post(
        reverse("accounts:security"),
        {
            "old_password": "not it",
            "new_password1": "a brand new passphrase",
            "new_password2": "a brand new passphrase",
        },
    )

    assert response.status_code == 400
    assert "password was entered incorrectly" in response.content.decode()
    user.refresh_from_db()
    assert user.check_password(DEFAULT_PASSWORD)
    assert other.get(reverse("accounts:profile")).status_code == 200
    assert not AuditEvent.objects.filter(user=user, action=AuditEvent.Action.PASSWORD_CHANGE)


def test_a_weak_new_password_is_refused_with_a_form_error():
    user = UserFactory()
    here = signed_in_client(user)

    response = here.post(
        reverse("accounts:security"),
        {
            "old_password": DEFAULT_PASSWORD,
            "new_password1": "12345678",
            "new_password2": "12345678",
        },
    )

    assert response.status_code == 400
    assert "too common" in response.content.decode()


def test_signing_out_forgets_the_session():
    user = UserFactory()
    client = signed_in_client(user)
    key = client.session.session_key
    assert UserSession.objects.filter(session_key=key).exists()

    client.post(reverse("accounts:logout"))

    assert not UserSession.objects.filter(session_key=key).exists()


def test_a_session_ended_elsewhere_disappears_from_the_list():
    user = UserFactory()
    here = signed_in_client(user)
    gone = signed_in_client(user)
    Session.objects.filter(session_key=gone.session.session_key).delete()

    here.get(reverse("accounts:security"))

    assert list(UserSession.objects.filter(user=user).values_list("session_key", flat=True)) == [
        here.session.session_key
    ]


def test_last_seen_is_refreshed_at_most_once_a_minute():
    user = UserFactory()
    client = signed_in_client(user)
    key = client.session.session_key
    cache.clear()
    long_ago = timezone.now() - timedelta(hours=3)
    UserSession.objects.filter(session_key=key).update(last_seen_at=long_ago)

    first_response = client.get(reverse("accounts:profile"))
    first = UserSession.objects.get(session_key=key).last_seen_at
    assert first > long_ago + timedelta(hours=2)
    # Tracking activity does not make the session re-send its cookie.
    assert "sessionid" not in first_response.cookies

    # Within the minute a further request does not write.
    UserSession.objects.filter(session_key=key).update(last_seen_at=long_ago)
    client.get(reverse("accounts:profile"))
    assert UserSession.objects.get(session_key=key).last_seen_at == long_ago

    # A minute later (the guard has expired) it does.
    cache.delete(last_seen_cache_key(key))
    client.get(reverse("accounts:profile"))
    assert UserSession.objects.get(session_key=key).last_seen_at > long_ago + timedelta(hours=2)


def test_one_other_session_can_be_signed_out_from_the_list():
    user = UserFactory()
    here = signed_in_client(user)
    lost_phone = signed_in_client(user)
    kept = signed_in_client(user)
    row = UserSession.objects.get(session_key=lost_phone.session.session_key)
    assert (
        f"/account/security/sessions/{row.pk}/end/"
        in here.get(reverse("accounts:security")).content.decode()
    )

    here.post(reverse("accounts:session_end", args=[row.pk]))

    assert lost_phone.get(reverse("accounts:profile")).status_code == 302
    assert kept.get(reverse("accounts:profile")).status_code == 200
    assert here.get(reverse("accounts:profile")).status_code == 200
    assert AuditEvent.objects.get(user=user, action=AuditEvent.Action.SESSIONS_REVOKED).data == {
        "ended": 1
    }


def test_nobody_can_end_someone_elses_session_or_their_own_current_one():
    user = UserFactory()
    here = signed_in_client(user)
    victim = signed_in_client(UserFactory())
    victim_row = UserSession.objects.get(session_key=victim.session.session_key)
    own_row = UserSession.objects.get(session_key=here.session.session_key)

    here.post(reverse("accounts:session_end", args=[victim_row.pk]))
    here.post(reverse("accounts:session_end", args=[own_row.pk]))

    assert victim.get(reverse("accounts:profile")).status_code == 200
    assert here.get(reverse("accounts:profile")).status_code == 200
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.SESSIONS_REVOKED).exists()


def test_a_bad_stored_time_zone_does_not_break_the_pages():
    user = UserFactory(time_zone="Not/AZone")
    client = signed_in_client(user)

    assert client.get(reverse("accounts:security")).status_code == 200
    assert client.get(reverse("accounts:security_log")).status_code == 200
    assert client.get(reverse("accounts:profile")).status_code == 200


def test_guessing_the_current_password_on_the_security_page_is_limited():
    user = UserFactory()
    here = signed_in_client(user)
    url = reverse("accounts:security")
    new = {"new_password1": "a brand new passphrase", "new_password2": "a brand new passphrase"}

    for _ in range(5):
        assert here.post(url, {"old_password": "guess", **new}).status_code == 400
    response = here.post(url, {"old_password": DEFAULT_PASSWORD, **new})

    assert response.status_code == 429
    user.refresh_from_db()
    assert user.check_password(DEFAULT_PASSWORD)
    assert (
        AuditEvent.objects.filter(
            user=user, action=AuditEvent.Action.LOGIN_FAILURE, data__reauth=True
        ).count()
        == 5
    )
