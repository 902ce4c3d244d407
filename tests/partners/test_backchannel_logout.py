"""OpenID Connect Back-Channel Logout: signing out of Tokenpass POSTs a signed logout token to
every app the person is signed in to, through Celery, with retries; staff see the deliveries.

Apps are real HTTP listeners on 127.0.0.1; tokens are checked with authlib against our JWKS.
"""

import json
import threading
import time
import urllib.parse
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from authlib.jose import JsonWebKey, JsonWebToken
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from accounts.services_account import user_sessions_end_all_by_staff
from partners.models import Application, BackchannelLogoutAttempt, BackchannelLogoutDelivery
from partners.oauth import keys
from partners.oauth.backchannel import LOGOUT_EVENT
from tests.factories import PartnerFactory, UserFactory

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()


class Listener:
    """An app's back-channel logout endpoint: records every POST and answers with the next
    status in `answers` (the last one repeats)."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.answers: list[int] = [200]
        self._lock = threading.Lock()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                with listener._lock:
                    listener.received.append(
                        {
                            "path": self.path,
                            "content_type": self.headers.get("Content-Type"),
                            "form": urllib.parse.parse_qs(body),
                        }
                    )
                    index = min(len(listener.received), len(listener.answers)) - 1
                    status = listener.answers[index]
                payload = (
                    b""
                    if status == 200
                    else json.dumps({"error": "temporarily_unavailable"}).encode()
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/backchannel-logout") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def tokens(self) -> list[str]:
        return [r["form"]["logout_token"][0] for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _backchannel_settings(settings, tmp_path):
    settings.OIDC_KEYS_FILE = tmp_path / "oidc-keys.json"
    settings.OIDC_RSA_PRIVATE_KEY = ""
    settings.OIDC_KEYS_GENERATE = True
    settings.BACKCHANNEL_LOGOUT_ALLOW_HTTP = True
    settings.BACKCHANNEL_LOGOUT_RETRY_BASE_SECONDS = 0.2
    settings.BACKCHANNEL_LOGOUT_TIMEOUT_SECONDS = 3
    keys.key_set_forget()
    yield
    keys.key_set_forget()


@pytest.fixture(autouse=True)
def _eager_retries():
    """Eager Celery runs a task's retries at once, but only when it does not propagate the
    Retry to the caller, as the suite's settings ask it to for other tasks."""
    from config.celery_app import app as celery_app

    previous = celery_app.conf.task_eager_propagates
    celery_app.conf.task_eager_propagates = False
    yield
    celery_app.conf.task_eager_propagates = previous


def make_app(name: str, logout_uri: str = "") -> Application:
    return Application.objects.create(
        name=name,
        partner=PartnerFactory(),
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        allowed_grant_types="authorization_code refresh_token",
        redirect_uris="https://partner.example/callback",
        algorithm=Application.RS256_ALGORITHM,
        backchannel_logout_uri=logout_uri,
    )


def give_tokens(user, app, *, expired: bool = False, revoked: bool = False) -> None:
    """Tokens as the token endpoint leaves them: an access token and its refresh token."""
    expires = timezone.now() + (timedelta(minutes=-5) if expired else timedelta(hours=1))
    access = AccessToken.objects.create(
        user=user,
        application=app,
        token=f"at-{user.pk}-{app.pk}-{time.monotonic_ns()}",
        expires=expires,
        scope="openid profile",
    )
    RefreshToken.objects.create(
        user=user,
        application=app,
        token=f"rt-{user.pk}-{app.pk}-{time.monotonic_ns()}",
        access_token=access,
        revoked=timezone.now() - timedelta(days=1) if revoked else None,
    )


def decode_logout_token(token: str, client_id: str, jwks: dict) -> tuple[dict, dict]:
    """Verify as a relying party would: signature against the JWKS, then the claims that
    OpenID Connect Back-Channel Logout 1.0 §2.6 requires."""
    claims = JsonWebToken(["RS256"]).decode(token, JsonWebKey.import_key_set(jwks))
    claims.validate(now=int(time.time()), leeway=5)
    return dict(claims.header), dict(claims)


def sign_out(client, user, django_capture_on_commit_callbacks):
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("accounts:logout"))
    assert response.status_code == 302
    return response


def jwks_document(client) -> dict:
    """The JWKS as a partner fetches it (the published endpoint when it is routed)."""
    for name in ("oauth2_provider:jwks-info", "partners_oauth:jwks"):
        try:
            url = reverse(name)
        except Exception:
            continue
        response = client.get(url)
        assert response.status_code == 200
        return response.json()
    return keys.public_jwks()


@pytest.mark.django_db
def test_sign_out_posts_a_signed_logout_token_to_each_signed_in_app(
    client, listener, django_capture_on_commit_callbacks, settings
):
    # Given a person signed in to two apps (a live access token at one, only a live refresh
    # token at the other), and apps that must not be told
    user = UserFactory()
    with_access = make_app("Chat", listener.url("/chat/logout"))
    with_refresh = make_app("Docs", listener.url("/docs/logout"))
    stale = make_app("Old", listener.url("/old/logout"))
    no_uri = make_app("Quiet")
    give_tokens(user, with_access)
    give_tokens(user, with_refresh, expired=True)
    give_tokens(user, stale, expired=True, revoked=True)
    give_tokens(user, no_uri)
    give_tokens(UserFactory(), stale)  # someone else's live token

    # When the person signs out of Tokenpass
    sign_out(client, user, django_capture_on_commit_callbacks)

    # Then each signed-in app with a logout URI got one form POST with a logout token
    assert sorted(r["path"] for r in listener.received) == ["/chat/logout", "/docs/logout"]
    jwks = jwks_document(client)
    by_path = {r["path"]: r for r in listener.received}
    for app, path in ((with_access, "/chat/logout"), (with_refresh, "/docs/logout")):
        request = by_path[path]
        assert request["content_type"] == "application/x-www-form-urlencoded"
        assert list(request["form"]) == ["logout_token"]
        header, claims = decode_logout_token(
            request["form"]["logout_token"][0], app.client_id, jwks
        )
        assert header["typ"] == "logout+jwt"
        assert header["alg"] == "RS256"
        assert header["kid"] in {k["kid"] for k in jwks["keys"]}
        assert claims["iss"] == settings.OAUTH2_PROVIDER.get("OIDC_ISS_ENDPOINT", settings.SITE_URL)
        assert claims["aud"] == app.client_id
        assert claims["sub"] == user.public_id
        assert claims["events"] == {LOGOUT_EVENT: {}}
        assert 0 < claims["exp"] - claims["iat"] <= 300
        assert abs(claims["iat"] - time.time()) < 30
        assert claims["jti"]
        assert "nonce" not in claims
        delivery = BackchannelLogoutDelivery.objects.get(application=app)
        assert delivery.jti == claims["jti"]
        assert delivery.status == BackchannelLogoutDelivery.Status.DELIVERED
        assert delivery.attempts == 1
        assert delivery.delivered_at is not None
    assert not BackchannelLogoutDelivery.objects.filter(application__in=[stale, no_uri]).exists()
    # And the session really ended
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_rp_initiated_logout_tells_the_apps_whose_tokens_it_revoked(
    client, listener, django_capture_on_commit_callbacks
):
    # Given a person signed in to an app; RP-initiated logout revokes every token of the
    # person before it ends the session
    user = UserFactory()
    app = make_app("Chat", listener.url())
    give_tokens(user, app)
    client.force_login(user)

    # When the person confirms the sign-out at the end-session endpoint
    url = reverse("oauth2_provider:rp-initiated-logout")
    assert client.get(url).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"allow": "true"})

    # Then the tokens are gone, the session ended, and the app was told
    assert response.status_code == 302
    assert not AccessToken.objects.filter(user=user).exists()
    assert "_auth_user_id" not in client.session
    (token,) = listener.tokens()
    _header, claims = decode_logout_token(token, app.client_id, keys.public_jwks())
    assert claims["aud"] == app.client_id
    assert claims["sub"] == user.public_id


@pytest.mark.django_db
def test_an_app_that_got_tokens_during_the_session_is_told_even_without_live_tokens(
    client, listener, django_capture_on_commit_callbacks
):
    from partners.models import Consent

    # Given an app that obtained tokens during this session (its tokens since revoked long
    # ago), and one last used before the session began
    user = UserFactory()
    used_now = make_app("Now", listener.url("/now"))
    used_before = make_app("Before", listener.url("/before"))
    client.force_login(user)
    Consent.objects.create(
        user=user, application=used_now, scope="openid", last_used_at=timezone.now()
    )
    Consent.objects.create(
        user=user,
        application=used_before,
        scope="openid",
        last_used_at=timezone.now() - timedelta(days=1),
    )

    # When the person signs out
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("accounts:logout"))

    # Then only the app used in this session is told
    assert [r["path"] for r in listener.received] == ["/now"]


@pytest.mark.django_db
def test_a_logout_token_does_not_verify_with_another_key_or_for_another_app(
    client, listener, django_capture_on_commit_callbacks
):
    user = UserFactory()
    app = make_app("Chat", listener.url())
    give_tokens(user, app)
    sign_out(client, user, django_capture_on_commit_callbacks)
    (token,) = listener.tokens()

    foreign = JsonWebKey.generate_key("RSA", 2048, is_private=True).as_dict(is_private=False)
    foreign["kid"] = keys.signing_jwk()["kid"]
    with pytest.raises(Exception, match="bad_signature"):
        JsonWebToken(["RS256"]).decode(token, JsonWebKey.import_key_set({"keys": [foreign]}))
    claims = JsonWebToken(["RS256"]).decode(
        token,
        JsonWebKey.import_key_set(keys.public_jwks()),
        claims_options={"aud": {"essential": True, "value": "some-other-client"}},
    )
    with pytest.raises(Exception, match="aud"):
        claims.validate()


@pytest.mark.django_db
def test_an_app_that_fails_twice_gets_the_token_on_the_third_try(
    client, listener, django_capture_on_commit_callbacks
):
    # Given an app whose endpoint answers 503 twice, then 200
    listener.answers = [503, 503, 200]
    user = UserFactory()
    app = make_app("Flaky", listener.url())
    give_tokens(user, app)

    # When the person signs out (eager Celery runs the retries at once)
    sign_out(client, user, django_capture_on_commit_callbacks)

    # Then the third POST delivered it, every try is recorded, and the jti did not change
    assert len(listener.received) == 3
    delivery = BackchannelLogoutDelivery.objects.get(application=app)
    assert delivery.status == BackchannelLogoutDelivery.Status.DELIVERED
    assert delivery.attempts == 3
    assert delivery.last_status_code == 200
    attempts = list(delivery.attempt_rows.order_by("number"))
    assert [(a.number, a.status_code, a.succeeded) for a in attempts] == [
        (1, 503, False),
        (2, 503, False),
        (3, 200, True),
    ]
    assert "temporarily_unavailable" in attempts[0].error
    jtis = {
        decode_logout_token(t, app.client_id, keys.public_jwks())[1]["jti"]
        for t in listener.tokens()
    }
    assert jtis == {delivery.jti}


@pytest.mark.django_db
def test_delivery_gives_up_after_the_last_attempt(
    client, listener, django_capture_on_commit_callbacks, settings
):
    settings.BACKCHANNEL_LOGOUT_MAX_ATTEMPTS = 3
    listener.answers = [503]
    user = UserFactory()
    app = make_app("Down", listener.url())
    give_tokens(user, app)

    sign_out(client, user, django_capture_on_commit_callbacks)

    assert len(listener.received) == 3
    delivery = BackchannelLogoutDelivery.objects.get(application=app)
    assert delivery.status == BackchannelLogoutDelivery.Status.FAILED
    assert delivery.attempts == 3
    assert delivery.delivered_at is None


@pytest.mark.django_db
def test_an_app_that_rejects_the_token_is_not_retried(
    client, listener, django_capture_on_commit_callbacks
):
    listener.answers = [400]
    user = UserFactory()
    app = make_app("Picky", listener.url())
    give_tokens(user, app)

    sign_out(client, user, django_capture_on_commit_callbacks)

    assert len(listener.received) == 1
    delivery = BackchannelLogoutDelivery.objects.get(application=app)
    assert delivery.status == BackchannelLogoutDelivery.Status.FAILED
    assert delivery.last_status_code == 400


@pytest.mark.django_db
def test_an_unreachable_app_does_not_stop_the_sign_out(
    client, django_capture_on_commit_callbacks, settings
):
    # Given an app whose logout URI has nobody listening
    settings.BACKCHANNEL_LOGOUT_MAX_ATTEMPTS = 2
    closed = Listener()
    url = closed.url()
    closed.close()
    user = UserFactory()
    app = make_app("Gone", url)
    give_tokens(user, app)

    # When the person signs out, the sign-out succeeds and the failure is recorded
    sign_out(client, user, django_capture_on_commit_callbacks)

    delivery = BackchannelLogoutDelivery.objects.get(application=app)
    assert delivery.status == BackchannelLogoutDelivery.Status.FAILED
    assert delivery.attempts == 2
    assert delivery.last_status_code is None
    assert "ConnectionError" in delivery.last_error


@pytest.mark.django_db
def test_plain_http_logout_uris_are_refused_unless_allowed(
    client, listener, django_capture_on_commit_callbacks, settings
):
    settings.BACKCHANNEL_LOGOUT_ALLOW_HTTP = False
    settings.DEBUG = False
    user = UserFactory()
    app = make_app("Insecure", listener.url())
    give_tokens(user, app)

    sign_out(client, user, django_capture_on_commit_callbacks)

    assert listener.received == []
    delivery = BackchannelLogoutDelivery.objects.get(application=app)
    assert delivery.status == BackchannelLogoutDelivery.Status.FAILED
    assert delivery.attempts == 0
    assert "https" in delivery.last_error


@pytest.mark.django_db
def test_private_addresses_are_refused_like_webhook_targets(
    client, listener, django_capture_on_commit_callbacks, settings
):
    # Given the production rule: partner-chosen URLs may not point into our network
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    user = UserFactory()
    app = make_app("Sneaky", listener.url())
    give_tokens(user, app)

    sign_out(client, user, django_capture_on_commit_callbacks)

    assert listener.received == []
    delivery = BackchannelLogoutDelivery.objects.get(application=app)
    assert delivery.status == BackchannelLogoutDelivery.Status.FAILED
    assert "private" in delivery.last_error


@pytest.mark.django_db
def test_a_delivery_whose_task_was_lost_is_queued_again_by_the_beat_task(
    client, listener, settings
):
    from partners.tasks import backchannel_logout_requeue_stale_task

    # Given a sign-out whose tasks never reached the broker (on_commit callbacks not run)
    user = UserFactory()
    app = make_app("Lost", listener.url())
    give_tokens(user, app)
    client.force_login(user)
    client.post(reverse("accounts:logout"))
    delivery = BackchannelLogoutDelivery.objects.get(application=app)
    assert delivery.status == BackchannelLogoutDelivery.Status.PENDING
    assert listener.received == []

    # When the beat task runs before the delivery is stale, nothing happens
    assert backchannel_logout_requeue_stale_task.delay().get() == 0
    # And once it is stale, it is queued again and delivered
    BackchannelLogoutDelivery.objects.filter(pk=delivery.pk).update(
        updated_at=timezone.now() - timedelta(hours=1)
    )
    assert backchannel_logout_requeue_stale_task.delay().get() == 1
    delivery.refresh_from_db()
    assert delivery.status == BackchannelLogoutDelivery.Status.DELIVERED
    assert len(listener.received) == 1


@pytest.mark.django_db
def test_staff_see_deliveries_and_their_attempts_in_the_admin(
    client, listener, django_capture_on_commit_callbacks
):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    listener.answers = [503, 200]
    user = UserFactory()
    app = make_app("Visible", listener.url())
    give_tokens(user, app)
    sign_out(client, user, django_capture_on_commit_callbacks)
    delivery = BackchannelLogoutDelivery.objects.get(application=app)

    staff = UserFactory(is_staff=True, is_superuser=True)
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    client.force_login(staff)
    session = client.session
    session["otp_device_id"] = device.persistent_id
    session.save()

    listing = client.get(reverse("admin:partners_backchannellogoutdelivery_changelist"))
    assert listing.status_code == 200
    assert user.public_id in listing.content.decode()
    detail = client.get(
        reverse("admin:partners_backchannellogoutdelivery_change", args=[delivery.pk])
    )
    assert detail.status_code == 200
    page = detail.content.decode()
    assert delivery.jti in page
    assert "503" in page
    # Deliveries are a record: staff cannot edit or delete them
    assert (
        client.post(
            reverse("admin:partners_backchannellogoutdelivery_delete", args=[delivery.pk]),
            {"post": "yes"},
        ).status_code
        == 403
    )
    assert BackchannelLogoutAttempt.objects.filter(delivery=delivery).count() == 2


@pytest.mark.django_db
def test_staff_send_a_failed_notice_again_to_the_apps_current_uri(
    client, listener, django_capture_on_commit_callbacks
):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    # Given a notice the app rejected at its old URI
    listener.answers = [400, 200]
    user = UserFactory()
    app = make_app("Fixed", listener.url("/old"))
    give_tokens(user, app)
    sign_out(client, user, django_capture_on_commit_callbacks)
    failed = BackchannelLogoutDelivery.objects.get(application=app)
    assert failed.status == BackchannelLogoutDelivery.Status.FAILED
    app.backchannel_logout_uri = listener.url("/new")
    app.save(update_fields=["backchannel_logout_uri"])

    # When staff pick it in the admin and send it again
    staff = UserFactory(is_staff=True, is_superuser=True)
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    client.force_login(staff)
    session = client.session
    session["otp_device_id"] = device.persistent_id
    session.save()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:partners_backchannellogoutdelivery_changelist"),
            {"action": "resend_failed", "_selected_action": [failed.pk]},
        )

    # Then a new notice went to the current URI and was delivered; the old row is unchanged
    assert response.status_code == 302
    assert [r["path"] for r in listener.received] == ["/old", "/new"]
    resent = BackchannelLogoutDelivery.objects.exclude(pk=failed.pk).get(application=app)
    assert resent.status == BackchannelLogoutDelivery.Status.DELIVERED
    assert resent.jti != failed.jti
    assert resent.subject == user.public_id
    failed.refresh_from_db()
    assert failed.status == BackchannelLogoutDelivery.Status.FAILED


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_delivers_with_backoff(client, listener, settings):
    from celery.contrib.testing.worker import start_worker

    from config.celery_app import app as celery_app

    # Given a real worker on the Redis broker, eager mode off, and an app that fails once
    listener.answers = [503, 200]
    user = UserFactory()
    app = make_app("Worker", listener.url())
    give_tokens(user, app)
    settings.CELERY_TASK_ALWAYS_EAGER = False
    celery_app.conf.task_always_eager = False
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            # When the person signs out (the transaction commits, the task goes to the broker)
            client.force_login(user)
            assert client.post(reverse("accounts:logout")).status_code == 302

            # Then the worker delivers it on the second try, after the backoff
            deadline = time.monotonic() + 30
            delivery = BackchannelLogoutDelivery.objects.get(application=app)
            while time.monotonic() < deadline:
                delivery.refresh_from_db()
                if delivery.status != BackchannelLogoutDelivery.Status.PENDING:
                    break
                time.sleep(0.1)
    finally:
        celery_app.conf.task_always_eager = True
    assert delivery.status == BackchannelLogoutDelivery.Status.DELIVERED
    assert delivery.attempts == 2
    first, second = delivery.attempt_rows.order_by("number")
    # The retry waited for the backoff (0.2 s base, jitter 0.8-1.2)
    assert (second.started_at - first.started_at).total_seconds() >= 0.15
    _header, claims = decode_logout_token(listener.tokens()[-1], app.client_id, keys.public_jwks())
    assert claims["sub"] == user.public_id


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_person_who_clicks_sign_out_is_signed_out_of_their_apps_too(page, listener):
    from tests.factories import DEFAULT_PASSWORD

    # Given a person signed in to Tokenpass in a browser, with a live token at a partner app
    user = UserFactory()
    app = make_app("Chat", listener.url())
    give_tokens(user, app)
    page.goto("/login/")
    page.get_by_label("Phone number or email").fill(user.phone)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/account/")

    # When they click "Sign out"
    page.get_by_role("button", name="Sign out").first.click()
    page.wait_for_url("**/login/")

    # Then the app's server received a logout token for them
    for _ in range(100):
        if listener.received:
            break
        page.wait_for_timeout(100)
    (token,) = listener.tokens()
    _header, claims = decode_logout_token(token, app.client_id, keys.public_jwks())
    assert claims["sub"] == user.public_id
    assert claims["aud"] == app.client_id


@pytest.mark.django_db(transaction=True)
def test_an_app_signed_in_through_the_code_flow_is_told_with_the_sub_of_its_id_token(
    live_server, live_app, user, browser_for, listener
):
    import base64
    import hashlib
    import secrets

    import requests
    from django.test import Client

    from tests.partners.conftest import redirect_params

    # Given an app that signed the person in through the real code flow with PKCE
    app, secret = live_app("Chat", backchannel_logout_uri=listener.url())
    browser = browser_for(user)
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    redirect_uri = app.redirect_uris.split()[0]
    params = redirect_params(
        browser.authorize(
            {
                "response_type": "code",
                "client_id": app.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid profile",
                "state": "s",
                "nonce": "n",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
    )
    tokens = requests.post(
        f"{live_server.url}/o/token/",
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=(app.client_id, secret),
        timeout=30,
    ).json()
    jwks = requests.get(f"{live_server.url}/.well-known/jwks.json", timeout=10).json()
    id_token = JsonWebToken(["RS256"]).decode(tokens["id_token"], JsonWebKey.import_key_set(jwks))

    # When that browser session signs out of Tokenpass
    session = Client()
    session.cookies["sessionid"] = browser.cookie("sessionid")
    assert session.post(reverse("accounts:logout")).status_code == 302

    # Then the app is told, with the subject and the session id its ID token named
    (token,) = listener.tokens()
    _header, claims = decode_logout_token(token, app.client_id, jwks)
    assert claims["sub"] == id_token["sub"] == user.public_id
    assert claims["aud"] == app.client_id
    assert id_token["sid"] and claims["sid"] == id_token["sid"]


@pytest.mark.django_db
def test_ending_one_other_session_tells_the_apps_that_session_id(
    listener, django_capture_on_commit_callbacks
):
    from accounts.login_flow import OIDC_SID_SESSION_KEY
    from accounts.models import UserSession
    from tests.factories import DEFAULT_PASSWORD

    # Given a person signed in on a laptop and a phone, and an app signed in for them
    user = UserFactory(phone="+8613800138011")
    app = make_app("Chat", logout_uri=listener.url())
    give_tokens(user, app)
    laptop, phone = Client(), Client()
    for browser in (laptop, phone):
        login = browser.post(
            reverse("accounts:login"), {"username": user.phone, "password": DEFAULT_PASSWORD}
        )
        assert login.status_code == 302
    phone_sid = phone.session[OIDC_SID_SESSION_KEY]
    assert phone_sid and phone_sid != laptop.session[OIDC_SID_SESSION_KEY]
    phone_row = UserSession.objects.get(session_key=phone.session.session_key)

    # When the laptop signs the phone out from the security page
    with django_capture_on_commit_callbacks(execute=True):
        ended = laptop.post(reverse("accounts:session_end", args=[phone_row.pk]))
    assert ended.status_code == 302

    # Then the app is told that the phone's session ended, and only that one
    (token,) = listener.tokens()
    _, claims = decode_logout_token(token, app.client_id, keys.public_jwks())
    assert claims["sub"] == user.public_id
    assert claims["sid"] == phone_sid
    assert laptop.get(reverse("accounts:security")).status_code == 200


@pytest.mark.django_db
def test_staff_signing_a_person_out_everywhere_tells_their_apps(
    listener, django_capture_on_commit_callbacks
):
    # Given a person signed in to an app with a back-channel logout URI
    user = UserFactory()
    app = make_app("Chat", logout_uri=listener.url())
    give_tokens(user, app)
    staff = UserFactory(is_staff=True)
    request = RequestFactory().post("/admin/")
    request.session = Client().session

    # When staff end all of the person's sessions
    with django_capture_on_commit_callbacks(execute=True):
        user_sessions_end_all_by_staff(user=user, actor=staff, request=request)

    # Then the app received one signed logout token naming the person
    assert len(listener.tokens()) == 1
    delivery = BackchannelLogoutDelivery.objects.get(application=app, user=user)
    assert delivery.status == BackchannelLogoutDelivery.Status.DELIVERED
    _, claims = decode_logout_token(listener.tokens()[0], app.client_id, keys.public_jwks())
    assert claims["sub"] == user.public_id
    # Every session ended: no sid, so the app ends all of the person's sessions.
    assert "sid" not in claims


@pytest.mark.django_db
def test_discovery_advertises_back_channel_logout(client):
    config = client.get("/.well-known/openid-configuration").json()
    assert config["backchannel_logout_supported"] is True
    assert config["backchannel_logout_session_supported"] is True
