"""The token, introspection and revocation endpoints and the JSON APIs run behind short
middleware chains (config/middleware.py): no session, CSRF or login machinery, but the HTTPS
redirect and the security headers as before, and the language of the JSON APIs' error
messages (the OAuth endpoints answer in English only). Pages keep the full stack."""

import base64
import secrets
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.partners.conftest import signed_in_cookies

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()


class StampMiddleware:
    """Marks the responses of the chain it is placed in."""

    chain = "api"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Chain"] = self.chain
        return response


class OAuthStampMiddleware(StampMiddleware):
    chain = "oauth"


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.fixture
def cc_app(make_app):
    return make_app("Server", allowed_scopes="settlement:read")


def signed_in_client(user) -> Client:
    """A browser that carries a signed-in person's session (and sends it everywhere)."""
    client = Client()
    client.cookies["sessionid"] = signed_in_cookies(user)["sessionid"]
    return client


def grant(client: Client, app, secret: str, **extra):
    return client.post(
        "/o/token/",
        {"grant_type": "client_credentials", "scope": "settlement:read"},
        HTTP_AUTHORIZATION=basic(app.client_id, secret),
        **extra,
    )


def vary(response) -> set[str]:
    return {part.strip().lower() for part in response.get("Vary", "").split(",") if part}


def test_the_token_endpoint_ignores_a_browser_session(cc_app):
    app, secret = cc_app
    # given a request that carries a signed-in person's session cookie
    client = signed_in_client(UserFactory())
    # when the partner's server asks for a token
    response = grant(client, app, secret)
    # then the session is never read: no cookie is set and the answer does not vary by it
    assert response.status_code == 200, response.content
    assert "cookie" not in vary(response)
    assert not response.cookies
    # and the security headers are there as on every answer
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cache-Control"] == "no-store"


def test_introspection_and_revocation_ignore_a_browser_session(cc_app):
    app, secret = cc_app
    client = signed_in_client(UserFactory())
    token = grant(Client(), app, secret).json()["access_token"]
    auth = basic(app.client_id, secret)
    introspected = client.post("/o/introspect/", {"token": token}, HTTP_AUTHORIZATION=auth)
    assert introspected.status_code == 200 and introspected.json()["active"] is True
    revoked = client.post("/o/revoke_token/", {"token": token}, HTTP_AUTHORIZATION=auth)
    assert revoked.status_code == 200
    for response in (introspected, revoked):
        assert "cookie" not in vary(response) and not response.cookies


def test_the_api_chain_serves_exactly_the_machine_paths(settings, cc_app):
    app, secret = cc_app
    settings.API_MIDDLEWARE = [*settings.API_MIDDLEWARE, f"{__name__}.StampMiddleware"]
    settings.OAUTH_ENDPOINT_MIDDLEWARE = [
        *settings.OAUTH_ENDPOINT_MIDDLEWARE,
        f"{__name__}.OAuthStampMiddleware",
    ]
    client = Client()
    assert grant(client, app, secret)["X-Chain"] == "oauth"
    for path in ("/o/introspect/", "/o/revoke_token/"):
        assert client.post(path, {"token": "x"})["X-Chain"] == "oauth", path
    assert client.get("/api/wallet/balance/")["X-Chain"] == "api"
    assert client.get("/api/settlement/statements/")["X-Chain"] == "api"
    # pages, the authorization endpoint and the slash-less token path take the full stack
    for path in ("/login/", "/o/authorize/", "/o/userinfo/", "/healthz"):
        assert "X-Chain" not in client.get(path), path
    assert "X-Chain" not in client.post("/o/token", {"grant_type": "client_credentials"})


def test_pages_keep_sessions_csrf_and_the_signed_in_person():
    user = UserFactory()
    login = Client().get("/login/")
    assert login.status_code == 200
    assert "csrftoken" in login.cookies and "cookie" in vary(login)
    apps_page = signed_in_client(user).get("/account/apps/")
    assert apps_page.status_code == 200
    assert "cookie" in vary(apps_page)


def test_the_https_redirect_and_hsts_still_apply_to_the_token_endpoint(settings, cc_app):
    app, secret = cc_app
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    plain = grant(Client(), app, secret)
    assert plain.status_code == 301 and plain["Location"].startswith("https://")
    assert not AccessToken.objects.filter(application=app).exists()
    secure = grant(Client(), app, secret, secure=True)
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"].startswith("max-age=3600")


def test_the_oauth_endpoints_answer_in_english_whatever_the_thread_chose(cc_app):
    """RFC 6749 §5.2: error_description is ASCII. The OAuth chain has no language
    middleware; it answers in the source language even on a thread where an earlier request
    chose another."""
    from django.utils import translation

    app, _secret = cc_app
    translation.activate("zh-hans")
    try:
        refused = grant(Client(), app, "wrong", HTTP_ACCEPT_LANGUAGE="zh-hans")
        active = translation.get_language()
    finally:
        translation.deactivate()
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert refused.json().get("error_description", "").isascii()
    assert active == "en"
    assert "Content-Language" not in refused and "accept-language" not in vary(refused)


def test_api_error_messages_still_follow_accept_language(make_app):
    app, _secret = make_app("Charging app")
    user = UserFactory()
    token = secrets.token_urlsafe(32)
    AccessToken.objects.create(
        user=user,
        application=app,
        token=token,
        scope="wallet:charge",
        expires=timezone.now() + timedelta(hours=1),
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.post(
        "/api/wallet/holds/", {"amount": 10}, format="json", HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "缺少 Idempotency-Key 请求头。"
    assert "accept-language" in vary(response) and "cookie" not in vary(response)
