"""Single sign-on across apps, prompt=none, RP-initiated logout, the device grant, key
rotation with live tokens, and the connected apps page."""

import json
import time

import pytest
import requests
from authlib.jose import JsonWebKey, JsonWebToken
from django.core.management import call_command
from oauth2_provider.models import get_device_grant_model

from accounts.models import AuditEvent
from partners.models import Consent
from partners.oauth import keys
from partners.oauth.device import device_code_digest
from partners.oauth.tokens import access_token_verify
from tests.partners.conftest import pkce_pair, redirect_params
from tests.partners.test_oauth_code_flow import run_code_flow

pytestmark = pytest.mark.django_db(transaction=True)


def silent_params(app, **extra):
    _, challenge = pkce_pair()
    return {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uris,
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st",
        "prompt": "none",
        **extra,
    }


def test_prompt_none_across_two_apps(live_server, live_app, user, browser_for):
    app_a, secret_a = live_app("App A", path="/cb/a")
    app_b, _ = live_app("App B", path="/cb/b")
    browser = browser_for(user)
    # the person signed in to app A (with consent)
    run_code_flow(live_server, browser, app_a, secret_a, scope="openid")
    # app A: prompt=none gives a code without any page
    silent_a = redirect_params(browser.get("/o/authorize/", params=silent_params(app_a)))
    assert silent_a["code"] and silent_a["state"] == "st"
    # app B was never consented: consent_required (still no page, no login)
    silent_b = redirect_params(browser.get("/o/authorize/", params=silent_params(app_b)))
    assert silent_b["error"] == "consent_required"
    assert silent_b["iss"]
    # without the openid scope too (plain OAuth): prompt=none never skips consent
    plain_b = redirect_params(
        browser.get("/o/authorize/", params=silent_params(app_b, scope="profile"))
    )
    assert plain_b["error"] == "consent_required"
    # prompt=none mixed with another value is invalid
    mixed = redirect_params(
        browser.get("/o/authorize/", params=silent_params(app_a, prompt="none login"))
    )
    assert mixed["error"] == "invalid_request"
    # a stranger's browser: login_required
    anonymous = redirect_params(browser_for(None).get("/o/authorize/", params=silent_params(app_a)))
    assert anonymous["error"] == "login_required" and anonymous["state"] == "st"
    assert anonymous["iss"]
    # prompt=none with an exceeded max_age: login_required
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.login_flow import AUTH_TIME_SESSION_KEY

    store = SessionStore(session_key=browser.cookie("sessionid"))
    store[AUTH_TIME_SESSION_KEY] = int(time.time()) - 3600
    store.save()
    stale = redirect_params(browser.get("/o/authorize/", params=silent_params(app_a, max_age="60")))
    assert stale["error"] == "login_required"
    fresh_enough = browser.get("/o/authorize/", params=silent_params(app_a, max_age="7200"))
    assert "code" in redirect_params(fresh_enough)


def test_second_app_signs_in_without_a_login_page(live_server, live_app, user, browser_for):
    app_a, secret_a = live_app("App A", path="/cb/a")
    app_b, secret_b = live_app("App B", path="/cb/b")
    browser = browser_for(user)
    run_code_flow(live_server, browser, app_a, secret_a, scope="openid")
    # app B: consent page (first time), never the login page, then a code
    _, token, _ = run_code_flow(live_server, browser, app_b, secret_b, scope="openid")
    assert token["id_token"]
    # and from now on prompt=none works for B too
    assert "code" in redirect_params(browser.get("/o/authorize/", params=silent_params(app_b)))


def test_rp_initiated_logout_ends_the_session(live_server, live_app, user, browser_for):
    app, secret = live_app("App A", path="/cb/a")
    browser = browser_for(user)
    _, token, _ = run_code_flow(live_server, browser, app, secret, scope="openid")
    response = browser.get(
        "/o/logout/",
        params={
            "id_token_hint": token["id_token"],
            "post_logout_redirect_uri": app.redirect_uris,
            "state": "bye",
        },
    )
    assert response.status_code == 302, response.text[:300]
    assert response.headers["Location"] == f"{app.redirect_uris}?state=bye"
    # the Tokenpass session is over: prompt=none says login_required
    after = redirect_params(browser.get("/o/authorize/", params=silent_params(app)))
    assert after["error"] == "login_required"
    # an unregistered post-logout URI is refused (no redirect)
    browser2 = browser_for(user)
    _, token2, _ = run_code_flow(live_server, browser2, app, secret, scope="openid")
    evil = browser2.get(
        "/o/logout/",
        params={
            "id_token_hint": token2["id_token"],
            "post_logout_redirect_uri": "https://evil.example/",
        },
    )
    assert evil.status_code == 400


def test_device_flow(live_server, make_app, user, browser_for):
    app, _ = make_app(
        "TV App",
        client_type="public",
        allowed_grant_types="urn:ietf:params:oauth:grant-type:device_code refresh_token",
        allowed_scopes="openid profile",
    )
    # the device asks for a code
    start = requests.post(
        f"{live_server.url}/o/device-authorization/",
        data={"client_id": app.client_id, "scope": "openid profile"},
        timeout=10,
    )
    assert start.status_code == 200, start.text
    grant = start.json()
    assert grant["verification_uri"].endswith("/device")
    assert grant["user_code"] in grant["verification_uri_complete"]
    # Neither code is kept in clear: a copy of the table does not connect a device.
    stored = get_device_grant_model().objects.get(client_id=app.client_id)
    assert grant["device_code"] not in (stored.device_code, stored.user_code)
    assert grant["user_code"] not in (stored.device_code, stored.user_code)
    assert stored.device_code == device_code_digest(grant["device_code"])

    def poll():
        return requests.post(
            f"{live_server.url}/o/token/",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": grant["device_code"],
                "client_id": app.client_id,
            },
            timeout=10,
        )

    first = poll()
    assert first.status_code == 400 and first.json()["error"] == "authorization_pending"
    assert poll().json()["error"] == "slow_down"
    # another client cannot redeem this device code
    other, _ = make_app(
        "Other TV",
        client_type="public",
        allowed_grant_types="urn:ietf:params:oauth:grant-type:device_code",
    )
    stolen = requests.post(
        f"{live_server.url}/o/token/",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": grant["device_code"],
            "client_id": other.client_id,
        },
        timeout=10,
    )
    assert stolen.json()["error"] == "invalid_grant"

    # the person types the code at /device, sees the app and approves
    browser = browser_for(user)
    page = browser.get("/device")
    assert page.status_code == 200 and 'name="user_code"' in page.text
    csrf = browser.cookie("csrftoken")
    typed = grant["user_code"][:4].lower() + "-" + grant["user_code"][4:].lower()
    confirm = browser.post("/device", {"user_code": typed, "csrfmiddlewaretoken": csrf})
    assert confirm.status_code == 200 and "TV App" in confirm.text
    assert "See your name, language and time zone" in confirm.text
    done = browser.post(
        "/device",
        {"user_code": grant["user_code"], "action": "approve", "csrfmiddlewaretoken": csrf},
    )
    assert done.status_code == 200 and "Device connected" in done.text

    # the device's next poll gets tokens, exactly once
    from django.core.cache import cache

    cache.clear()
    tokens = poll()
    assert tokens.status_code == 200, tokens.text
    claims = access_token_verify(token=tokens.json()["access_token"])
    assert claims["sub"] == user.public_id and claims["client_id"] == app.client_id
    again = poll()
    assert again.status_code == 400 and again.json()["error"] in ("expired_token", "invalid_grant")
    assert Consent.objects.filter(user=user, application=app).exists()

    # The device stays signed in with its refresh token, naming itself as a public client.
    def refresh(token):
        return requests.post(
            f"{live_server.url}/o/token/",
            data={
                "grant_type": "refresh_token",
                "refresh_token": token,
                "client_id": app.client_id,
            },
            timeout=10,
        )

    first_refresh = tokens.json()["refresh_token"]
    refreshed = refresh(first_refresh)
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    assert body["refresh_token"] != first_refresh and "id_token" in body
    assert access_token_verify(token=body["access_token"])["sub"] == user.public_id
    # Presenting the spent token again is a reuse: the whole family ends.
    assert refresh(first_refresh).json()["error"] == "invalid_grant"
    assert refresh(body["refresh_token"]).json()["error"] == "invalid_grant"


def test_device_page_rejects_wrong_codes_and_needs_a_session(live_server, user, browser_for):
    anonymous = browser_for(None).get("/device?user_code=ABCD1234")
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login/")
    browser = browser_for(user)
    browser.get("/device")
    csrf = browser.cookie("csrftoken")
    wrong = browser.post("/device", {"user_code": "ZZZZ-ZZZZ", "csrfmiddlewaretoken": csrf})
    assert wrong.status_code == 400 and "not valid" in wrong.text


def test_tokens_signed_before_a_key_rotation_keep_verifying(
    live_server, live_app, user, browser_for
):
    app, secret = live_app("App A")
    _, before, _ = run_code_flow(live_server, browser_for(user), app, secret, scope="openid")
    old_kid = keys.signing_jwk()["kid"]

    # stage: the new key is published but does not sign yet
    call_command("oidc_rotate_keys", "--stage")
    staged = requests.get(f"{live_server.url}/.well-known/jwks.json", timeout=10).json()
    assert len(staged["keys"]) == 2 and keys.signing_jwk()["kid"] == old_kid
    # activate: new tokens use the new key
    call_command("oidc_rotate_keys", "--activate")
    _, after, _ = run_code_flow(live_server, browser_for(user), app, secret, scope="openid")

    jwks = requests.get(f"{live_server.url}/.well-known/jwks.json", timeout=10).json()
    key_set = JsonWebKey.import_key_set(jwks)
    for token in (before, after):
        JsonWebToken(["RS256"]).decode(token["id_token"], key_set).validate()
        JsonWebToken(["RS256"]).decode(token["access_token"], key_set).validate()
    kid_after = json.loads(
        __import__("base64").urlsafe_b64decode(after["id_token"].split(".")[0] + "==")
    )["kid"]
    assert kid_after != old_kid
    # the old access token still works at our endpoints
    info = requests.get(
        f"{live_server.url}/o/userinfo/",
        headers={"Authorization": f"Bearer {before['access_token']}"},
        timeout=10,
    )
    assert info.status_code == 200
    # retiring now removes nothing: the old key's tokens may still be alive
    call_command("oidc_rotate_keys", "--retire")
    assert len(keys.public_jwks()["keys"]) == 2


def test_connected_apps_page_lists_and_revokes(live_server, live_app, user, browser_for):
    app, secret = live_app("App A")
    browser = browser_for(user)
    _, token, _ = run_code_flow(live_server, browser, app, secret, scope="openid email")
    page = browser.get("/account/apps/")
    assert page.status_code == 200
    assert "App A" in page.text and "See your email address" in page.text
    assert app.partner.name in page.text
    csrf = browser.cookie("csrftoken")
    revoked = browser.post(f"/account/apps/{app.client_id}/revoke/", {"csrfmiddlewaretoken": csrf})
    assert revoked.status_code == 302
    assert not Consent.objects.filter(user=user, application=app).exists()
    # every token of that app for this person is dead at once
    introspection = requests.post(
        f"{live_server.url}/o/introspect/",
        data={"token": token["access_token"]},
        auth=(app.client_id, secret),
        timeout=10,
    ).json()
    assert introspection == {"active": False}
    refresh = requests.post(
        f"{live_server.url}/o/token/",
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert refresh.status_code == 400
    assert AuditEvent.objects.filter(action=AuditEvent.Action.APP_REVOKED, user=user).exists()
    # and the app must ask again
    assert f'data-client-id="{app.client_id}"' not in browser.get("/account/apps/").text


def test_discovery_document_drives_a_client(live_server, live_app, user, browser_for):
    config = requests.get(f"{live_server.url}/.well-known/openid-configuration", timeout=10)
    assert config.status_code == 200
    doc = config.json()
    from django.conf import settings

    assert doc["issuer"] == settings.SITE_URL
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert "implicit" not in doc["grant_types_supported"]
    assert "password" not in doc["grant_types_supported"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"none", "login", "consent"} <= set(doc["prompt_values_supported"])
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert {"sub", "email", "phone_number", "zoneinfo"} <= set(doc["claims_supported"])
    assert {"wallet:charge", "settlement:read"} <= set(doc["scopes_supported"])
    published = requests.get(doc["jwks_uri"], timeout=10).json()
    assert published == keys.public_jwks()
    assert all("d" not in key for key in published["keys"])
    # the same document under /o/ for clients that append it to the endpoint prefix
    assert (
        requests.get(f"{live_server.url}/o/.well-known/openid-configuration", timeout=10).json()[
            "issuer"
        ]
        == doc["issuer"]
    )
    # the endpoints it names are the ones that work
    app, secret = live_app("App A")
    from authlib.integrations.requests_client import OAuth2Session

    from tests.partners.conftest import consent_form_fields

    client = OAuth2Session(
        client_id=app.client_id, client_secret=secret, scope="openid", code_challenge_method="S256"
    )
    verifier = "q" * 64
    url, _ = client.create_authorization_url(
        doc["authorization_endpoint"], code_verifier=verifier, redirect_uri=app.redirect_uris
    )
    browser = browser_for(user)
    response = browser.get(url)
    fields = consent_form_fields(response.text)
    fields["allow"] = "Authorize"
    callback = browser.post("/o/authorize/", fields).headers["Location"]
    token = client.fetch_token(
        doc["token_endpoint"],
        authorization_response=callback,
        code_verifier=verifier,
        redirect_uri=app.redirect_uris,
    )
    assert client.get(doc["userinfo_endpoint"]).json()["sub"] == user.public_id
    assert token["token_type"].lower() == "bearer"


def test_logout_without_a_hint_asks_first(live_server, live_app, user, browser_for):
    app, _ = live_app("App A")
    browser = browser_for(user)
    page = browser.get("/o/logout/", params={"client_id": app.client_id})
    assert page.status_code == 200 and "Sign out of Tokenpass?" in page.text
    from tests.partners.conftest import consent_form_fields

    fields = consent_form_fields(page.text)
    fields["allow"] = "Logout"
    done = browser.post("/o/logout/", fields)
    assert done.status_code == 302
    after = redirect_params(browser.get("/o/authorize/", params=silent_params(app)))
    assert after["error"] == "login_required"


@pytest.mark.django_db
def test_migration_seals_device_codes_stored_in_clear():
    from importlib import import_module

    from django.apps import apps
    from django.utils import timezone

    from partners.oauth.device import user_code_digest

    migration = import_module("partners.migrations.0007_seal_device_codes")
    model = get_device_grant_model()
    clear = model.objects.create(
        client_id="tv", device_code="d" * 30, user_code="ABCD1234", expires=timezone.now()
    )
    migration.seal(apps, None)
    migration.seal(apps, None)  # a second run changes nothing
    clear.refresh_from_db()
    assert clear.device_code == device_code_digest("d" * 30)
    assert clear.user_code == user_code_digest("abcd-1234")
