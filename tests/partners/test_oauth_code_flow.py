"""Authorization code with PKCE, end to end against the live server with Authlib's client:
consent, ID token verified against the JWKS, RFC 9068 access token, userinfo, and consent
that is remembered per app and scope set."""

import time

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, JsonWebToken
from django.conf import settings

from accounts.login_flow import AUTH_TIME_SESSION_KEY, OIDC_SID_SESSION_KEY
from accounts.models import AuditEvent
from partners.models import AuthorizationCode, Consent
from partners.oauth.tokens import access_token_verify
from tests.partners.conftest import redirect_params

pytestmark = pytest.mark.django_db(transaction=True)


def jwks(base_url: str) -> dict:
    return requests.get(f"{base_url}/.well-known/jwks.json", timeout=10).json()


def decode_id_token(base_url: str, token: str, client_id: str, nonce: str | None = None) -> dict:
    claims = JsonWebToken(["RS256"]).decode(
        token,
        JsonWebKey.import_key_set(jwks(base_url)),
        claims_options={
            "iss": {"essential": True, "value": settings.SITE_URL},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
        },
    )
    claims.validate()
    if nonce is not None:
        assert claims["nonce"] == nonce
    return dict(claims)


def client_session(app, secret, redirect_uri, scope="openid profile email phone"):
    return OAuth2Session(
        client_id=app.client_id,
        client_secret=secret,
        scope=scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )


def run_code_flow(live_server, browser, app, secret, scope="openid profile email phone", **extra):
    redirect_uri = app.redirect_uris.split()[0]
    oauth = client_session(app, secret, redirect_uri, scope)
    verifier = "v" * 20 + str(time.time_ns()) + "x" * 30
    url, state = oauth.create_authorization_url(
        f"{live_server.url}/o/authorize/", code_verifier=verifier, nonce="n-0S6_WzA2Mj", **extra
    )
    response = browser.get(url)
    if response.status_code == 200 and 'id="consent-title"' in response.text:
        from tests.partners.conftest import consent_form_fields

        fields = consent_form_fields(response.text)
        fields["allow"] = "Authorize"
        response = browser.post("/o/authorize/", fields)
    params = redirect_params(response)
    assert params.get("state") == state, response.headers["Location"]
    callback = response.headers["Location"]
    token = oauth.fetch_token(
        f"{live_server.url}/o/token/", authorization_response=callback, code_verifier=verifier
    )
    return oauth, token, params


def test_code_flow_with_pkce_issues_verifiable_id_and_access_tokens(
    live_server, live_app, user, browser_for
):
    # given a partner app and a signed-in person
    app, secret = live_app("Chat A")
    browser = browser_for(user)

    # when the app runs the code flow and the person consents
    oauth, token, params = run_code_flow(live_server, browser, app, secret)

    # then the authorization response names us as issuer (RFC 9207)
    assert params["iss"] == settings.SITE_URL
    # and the ID token verifies against the published JWKS with the person's claims
    claims = decode_id_token(live_server.url, token["id_token"], app.client_id, "n-0S6_WzA2Mj")
    assert claims["sub"] == user.public_id
    assert claims["name"] == "Ada Lovelace"
    assert claims["locale"] == "zh-Hans"
    assert claims["zoneinfo"] == "Asia/Shanghai"
    assert claims["email"] == user.email and claims["email_verified"] is True
    assert claims["phone_number"] == user.phone and claims["phone_number_verified"] is True
    assert abs(claims["auth_time"] - time.time()) < 120
    # and the access token is an RFC 9068 JWT a partner can verify locally
    header = (
        JsonWebToken(["RS256"])
        .decode(token["access_token"], JsonWebKey.import_key_set(jwks(live_server.url)))
        .header
    )
    assert header["typ"] == "at+jwt"
    at = access_token_verify(token=token["access_token"], audience=app.client_id)
    assert at["sub"] == user.public_id
    assert at["client_id"] == app.client_id
    assert set(at["scope"].split()) == {"openid", "profile", "email", "phone"}
    assert {"iss", "exp", "iat", "jti"} <= set(at)
    # and a refresh token came along
    assert token["refresh_token"]
    # and userinfo answers with the same subject
    info = oauth.get(f"{live_server.url}/o/userinfo/").json()
    assert info["sub"] == user.public_id and info["email"] == user.email
    # and the consent was remembered and audited
    consent = Consent.objects.get(user=user, application=app)
    assert consent.scope_set() == {"openid", "profile", "email", "phone"}
    assert AuditEvent.objects.filter(action=AuditEvent.Action.APP_AUTHORIZED, user=user).exists()


def test_scopes_decide_the_claims(live_server, live_app, user, browser_for):
    app, secret = live_app("Chat A")
    _, token, _ = run_code_flow(live_server, browser_for(user), app, secret, scope="openid")
    claims = decode_id_token(live_server.url, token["id_token"], app.client_id)
    assert claims["sub"] == user.public_id
    assert not {"email", "phone_number", "name", "locale"} & set(claims)


def test_consent_is_remembered_until_a_new_scope_or_prompt_consent(
    live_server, live_app, user, browser_for
):
    app, secret = live_app("Chat A")
    browser = browser_for(user)
    run_code_flow(live_server, browser, app, secret, scope="openid email")
    _, challenge = __import__("tests.partners.conftest", fromlist=["pkce_pair"]).pkce_pair()
    base = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uris,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "s1",
    }
    # the same scopes again: straight back with a code, no page
    same = browser.get("/o/authorize/", params={**base, "scope": "openid email"})
    assert "code" in redirect_params(same)
    # a subset: no page either
    assert "code" in redirect_params(
        browser.get("/o/authorize/", params={**base, "scope": "openid"})
    )
    # a new scope asks again, naming it in plain words
    more = browser.get("/o/authorize/", params={**base, "scope": "openid email wallet:charge"})
    assert more.status_code == 200
    assert "Charge your token wallet" in more.text
    assert "Chat A" in more.text and app.partner.name in more.text
    # prompt=consent always asks
    forced = browser.get("/o/authorize/", params={**base, "scope": "openid", "prompt": "consent"})
    assert forced.status_code == 200 and 'id="consent-title"' in forced.text


def test_denying_consent_returns_access_denied(live_server, live_app, user, browser_for):
    from tests.partners.conftest import pkce_pair

    app, _ = live_app("Chat A")
    _, challenge = pkce_pair()
    response = browser_for(user).authorize(
        {
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": app.redirect_uris,
            "scope": "openid",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "xyz",
        },
        approve=False,
    )
    params = redirect_params(response)
    assert params["error"] == "access_denied" and params["state"] == "xyz"
    assert not Consent.objects.filter(user=user, application=app).exists()


def test_anonymous_person_is_sent_to_the_login_page_and_back(live_server, live_app, browser_for):
    from tests.partners.conftest import pkce_pair

    app, _ = live_app("Chat A")
    _, challenge = pkce_pair()
    response = browser_for(None).get(
        "/o/authorize/",
        params={
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": app.redirect_uris,
            "scope": "openid",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login/?next=/o/authorize/")


def test_prompt_login_and_max_age_force_a_fresh_sign_in(live_server, live_app, user, browser_for):
    from tests.partners.conftest import pkce_pair

    app, secret = live_app("Chat A")
    browser = browser_for(user)
    run_code_flow(live_server, browser, app, secret, scope="openid")
    _, challenge = pkce_pair()
    base = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uris,
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    # prompt=login: to the login page, with next= pointing back without the prompt
    response = browser.get("/o/authorize/", params={**base, "prompt": "login"})
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/login/?next=") and "prompt" not in location.split("next=")[1]
    # and the old session is over
    browser2 = browser_for(user)
    session_key = browser2.cookie("sessionid")
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore(session_key=session_key)
    store[AUTH_TIME_SESSION_KEY] = int(time.time()) - 3600
    store.save()
    # max_age exceeded (signed in an hour ago, max_age=60): to the login page as well
    stale = browser2.get("/o/authorize/", params={**base, "max_age": "60"})
    assert stale.status_code == 302 and stale.headers["Location"].startswith("/login/?next=")
    # max_age not exceeded: a code
    browser3 = browser_for(user)
    fresh = browser3.get("/o/authorize/", params={**base, "max_age": "600"})
    assert "code" in redirect_params(fresh)


def test_auth_time_in_the_id_token_is_when_the_person_signed_in(
    live_server, live_app, user, browser_for
):
    from django.contrib.sessions.backends.db import SessionStore

    app, secret = live_app("Chat A")
    browser = browser_for(user)
    signed_in_at = int(time.time()) - 500
    store = SessionStore(session_key=browser.cookie("sessionid"))
    store[AUTH_TIME_SESSION_KEY] = signed_in_at
    store.save()
    _, token, _ = run_code_flow(live_server, browser, app, secret, scope="openid")
    claims = decode_id_token(live_server.url, token["id_token"], app.client_id)
    assert claims["auth_time"] == signed_in_at
    assert AuthorizationCode.objects.get(application=app).auth_time == signed_in_at
    # refreshing keeps the original auth_time
    oauth = client_session(app, secret, app.redirect_uris, "openid")
    oauth.token = token
    refreshed = oauth.refresh_token(f"{live_server.url}/o/token/")
    again = decode_id_token(live_server.url, refreshed["id_token"], app.client_id)
    assert again["auth_time"] == signed_in_at
    # and the session id: an app maps a back-channel logout's sid to this sign-in
    assert (
        claims["sid"] == SessionStore(session_key=browser.cookie("sessionid"))[OIDC_SID_SESSION_KEY]
    )
    assert again["sid"] == claims["sid"]
