"""Single sign-on in a real browser: sign in at /login/ inside an OAuth flow, consent, land
on app A's redirect URI with a code; then app B signs the person in silently."""

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from partners.models import Application, Consent
from tests.factories import DEFAULT_PASSWORD, PartnerFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_app(live_server, name: str, path: str) -> tuple[Application, str]:
    secret = secrets.token_urlsafe(40)
    app = Application.objects.create(
        name=name,
        partner=PartnerFactory(name=f"{name} Inc."),
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        allowed_grant_types="authorization-code refresh_token",
        allowed_scopes="openid profile email",
        redirect_uris=f"{live_server.url}{path}",
        algorithm=Application.RS256_ALGORITHM,
        client_secret=secret,
    )
    return app, secret


def authorize_url(live_server, app, challenge: str, **extra) -> str:
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uris,
        "scope": "openid profile email",
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return f"{live_server.url}/o/authorize/?{urlencode(params)}"


def test_login_consent_then_silent_sign_in_to_a_second_app(page, live_server):
    person = UserFactory(email="ada@example.com", display_name="Ada")
    app_a, secret_a = make_app(live_server, "Chat A", "/cb/a")
    app_b, _ = make_app(live_server, "Studio B", "/cb/b")
    # Ada allowed Studio B on an earlier day; today she has no session yet.
    Consent.objects.create(user=person, application=app_b, scope="email openid profile")
    visited: list[str] = []
    page.on("framenavigated", lambda frame: visited.append(frame.url))

    # App A sends her to Tokenpass; she signs in on the login page
    verifier, challenge = pkce()
    page.goto(authorize_url(live_server, app_a, challenge))
    assert urlsplit(page.url).path == "/login/"
    page.fill("input[name=username]", "ada@example.com")
    page.fill("input[name=password]", DEFAULT_PASSWORD)
    page.locator("main form button[type=submit]").first.click()

    # and sees the consent page naming the app, its partner and each scope in plain words
    page.wait_for_selector("#consent-title")
    body = page.inner_text("main")
    assert "Chat A" in body and "Chat A Inc." in body
    assert "See your email address" in body
    page.click("button[name=allow]")

    # she lands on app A's redirect URI with a code and our issuer
    page.wait_for_url(f"{live_server.url}/cb/a?*")
    returned = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
    assert returned["code"] and returned["iss"]
    token = requests.post(
        f"{live_server.url}/o/token/",
        data={
            "grant_type": "authorization_code",
            "code": returned["code"],
            "redirect_uri": app_a.redirect_uris,
            "code_verifier": verifier,
        },
        auth=(app_a.client_id, secret_a),
        timeout=10,
    )
    assert token.status_code == 200 and token.json()["id_token"]

    # App B signs her in silently: no login page, no consent page, straight to B with a code
    visited.clear()
    _, challenge_b = pkce()
    page.goto(authorize_url(live_server, app_b, challenge_b, prompt="none"))
    page.wait_for_url(f"{live_server.url}/cb/b?*")
    returned_b = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
    assert returned_b["code"] and "error" not in returned_b
    assert not any(urlsplit(url).path == "/login/" for url in visited)


def sign_in(page, live_server, email: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", DEFAULT_PASSWORD)
    page.locator("main form button[type=submit]").first.click()
    page.wait_for_load_state()


def test_device_page_connects_a_tv(page, live_server):
    UserFactory(email="tv@example.com")
    app = Application.objects.create(
        name="Living Room TV",
        partner=PartnerFactory(name="Screens Ltd"),
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_DEVICE_CODE,
        allowed_grant_types="urn:ietf:params:oauth:grant-type:device_code",
        allowed_scopes="openid profile",
        algorithm=Application.RS256_ALGORITHM,
    )
    grant = requests.post(
        f"{live_server.url}/o/device-authorization/",
        data={"client_id": app.client_id, "scope": "openid profile"},
        timeout=10,
    ).json()
    sign_in(page, live_server, "tv@example.com")
    page.goto(f"{live_server.url}/device")
    page.fill("input[name=user_code]", grant["user_code"][:4] + "-" + grant["user_code"][4:])
    page.locator("main form button[type=submit]").click()
    assert "Living Room TV" in page.inner_text("main")
    assert "Screens Ltd" in page.inner_text("main")
    page.click("button[value=approve]")
    page.wait_for_selector("text=Device connected")
    token = requests.post(
        f"{live_server.url}/o/token/",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": grant["device_code"],
            "client_id": app.client_id,
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text


def test_connected_apps_page_removes_an_app(page, live_server):
    person = UserFactory(email="apps@example.com")
    app, _ = make_app(live_server, "Chat A", "/cb/a")
    Consent.objects.create(user=person, application=app, scope="email openid")
    sign_in(page, live_server, "apps@example.com")
    page.goto(f"{live_server.url}/account/apps/")
    row = page.locator(f"tr[data-client-id='{app.client_id}']")
    assert "Chat A" in row.inner_text() and "See your email address" in row.inner_text()
    row.locator("button").click()
    page.wait_for_selector("text=can no longer access your account")
    assert page.locator(f"tr[data-client-id='{app.client_id}']").count() == 0
    assert not Consent.objects.filter(user=person).exists()
