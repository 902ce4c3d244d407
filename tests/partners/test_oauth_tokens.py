"""Token endpoint grants beyond the code: refresh rotation and reuse detection, client
credentials, introspection, revocation, the DRF authentication path, suspended partners."""

import io
import re

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from django.contrib.auth.hashers import identify_hasher
from django.core.management import call_command
from django.test import override_settings
from django.urls import path
from django.utils import timezone
from oauth2_provider.contrib.rest_framework import OAuth2Authentication, TokenHasScope
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import AuditEvent
from partners.models import ClientAuthFailures, Partner
from partners.oauth import ratelimit
from tests.partners.test_oauth_code_flow import run_code_flow

pytestmark = pytest.mark.django_db(transaction=True)


def token_url(live_server) -> str:
    return f"{live_server.url}/o/token/"


def refresh(live_server, app, secret, refresh_token):
    return requests.post(
        token_url(live_server),
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(app.client_id, secret),
        timeout=10,
    )


def introspect(live_server, app, secret, token, hint=None):
    data = {"token": token}
    if hint:
        data["token_type_hint"] = hint
    return requests.post(
        f"{live_server.url}/o/introspect/", data=data, auth=(app.client_id, secret), timeout=10
    )


def test_refresh_rotates_and_reuse_revokes_the_family_and_is_audited(
    live_server, live_app, user, browser_for
):
    # given tokens from the code flow
    app, secret = live_app("Chat A")
    _, first, _ = run_code_flow(live_server, browser_for(user), app, secret, scope="openid")

    # when the refresh token is used, it rotates
    second = refresh(live_server, app, secret, first["refresh_token"])
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert introspect(live_server, app, secret, first["access_token"]).json() == {"active": False}
    assert introspect(live_server, app, secret, second["access_token"]).json()["active"] is True

    # when the first (rotated) refresh token is presented again
    replay = refresh(live_server, app, secret, first["refresh_token"])

    # then it is refused and the person's security log says so
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    event = AuditEvent.objects.get(action=AuditEvent.Action.TOKEN_REUSE, user=user)
    assert event.data["client_id"] == app.client_id
    assert event.ip_address == "127.0.0.1"
    # and the whole family is dead, including the newest tokens
    assert refresh(live_server, app, secret, second["refresh_token"]).status_code == 400
    assert introspect(live_server, app, secret, second["access_token"]).json() == {"active": False}


def test_client_credentials_for_partner_servers(live_server, make_app):
    app, secret = make_app("Partner backend", allowed_scopes="settlement:read")
    client = OAuth2Session(client_id=app.client_id, client_secret=secret, scope="settlement:read")
    token = client.fetch_token(token_url(live_server), grant_type="client_credentials")
    assert "refresh_token" not in token
    info = introspect(live_server, app, secret, token["access_token"]).json()
    assert info["active"] is True
    assert info["client_id"] == app.client_id and info["scope"] == "settlement:read"
    assert "sub" not in info or info["sub"] == app.client_id
    # a scope the app was not registered for is refused
    bad = requests.post(
        token_url(live_server),
        data={"grant_type": "client_credentials", "scope": "wallet:charge"},
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_scope"


def test_client_credentials_refused_without_the_grant(live_server, make_app):
    app, secret = make_app("No cc", allowed_grant_types="authorization-code refresh_token")
    response = requests.post(
        token_url(live_server),
        data={"grant_type": "client_credentials"},
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert response.status_code in (400, 401)
    assert response.json()["error"] == "unauthorized_client"


def test_introspection_requires_client_auth_and_hides_other_partners_tokens(live_server, make_app):
    app, secret = make_app("Server A", allowed_scopes="settlement:read")
    other_partner = Partner.objects.create(name="Other", status=Partner.Status.ACTIVE)
    other, other_secret = make_app(
        "Server B", allowed_scopes="settlement:read", app_partner=other_partner
    )
    token = OAuth2Session(client_id=app.client_id, client_secret=secret).fetch_token(
        token_url(live_server), grant_type="client_credentials"
    )
    anonymous = requests.post(
        f"{live_server.url}/o/introspect/", data={"token": token["access_token"]}, timeout=10
    )
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    assert introspect(live_server, other, other_secret, token["access_token"]).json() == {
        "active": False
    }
    assert introspect(live_server, app, secret, "garbage").json() == {"active": False}


def test_revocation_of_access_and_refresh_tokens(live_server, live_app, user, browser_for):
    app, secret = live_app("Chat A")
    _, token, _ = run_code_flow(live_server, browser_for(user), app, secret, scope="openid")
    revoke_url = f"{live_server.url}/o/revoke_token/"
    # revoking the access token kills it (and its refresh token)
    response = requests.post(
        revoke_url,
        data={"token": token["access_token"], "token_type_hint": "access_token"},
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert response.status_code == 200
    assert introspect(live_server, app, secret, token["access_token"]).json() == {"active": False}
    assert refresh(live_server, app, secret, token["refresh_token"]).status_code == 400

    # a fresh pair: revoking the refresh token kills both
    _, token2, _ = run_code_flow(live_server, browser_for(user), app, secret, scope="openid")
    response = requests.post(
        revoke_url,
        data={"token": token2["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert response.status_code == 200
    assert introspect(live_server, app, secret, token2["access_token"]).json() == {"active": False}
    assert refresh(live_server, app, secret, token2["refresh_token"]).status_code == 400
    # an unknown token: still 200 (RFC 7009 §2.2)
    assert (
        requests.post(
            revoke_url, data={"token": "nope"}, auth=(app.client_id, secret), timeout=10
        ).status_code
        == 200
    )


class WalletProbe(APIView):
    authentication_classes = [OAuth2Authentication]
    permission_classes = [TokenHasScope]
    required_scopes = ["wallet:charge"]

    def get(self, request):
        return Response(
            {"sub": request.user.public_id, "client_id": request.auth.application.client_id}
        )


urlpatterns = [path("probe/", WalletProbe.as_view())]


@override_settings(ROOT_URLCONF="tests.partners.test_oauth_tokens")
def test_drf_authentication_accepts_our_jwt_access_tokens(live_server, live_app, user, browser_for):
    from config.urls import urlpatterns as site_urls

    urlpatterns[:] = [path("probe/", WalletProbe.as_view()), *site_urls]
    app, secret = live_app("Chat A")
    _, token, _ = run_code_flow(
        live_server, browser_for(user), app, secret, scope="openid wallet:charge"
    )
    ok = requests.get(
        f"{live_server.url}/probe/",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"sub": user.public_id, "client_id": app.client_id}
    # without the scope: forbidden
    _, narrow, _ = run_code_flow(live_server, browser_for(user), app, secret, scope="openid")
    assert (
        requests.get(
            f"{live_server.url}/probe/",
            headers={"Authorization": f"Bearer {narrow['access_token']}"},
            timeout=10,
        ).status_code
        == 403
    )
    # a revoked token, an expired one, a forged one: unauthorized
    get_access_token_model().objects.filter(application=app).update(expires="2000-01-01T00:00:00Z")
    for bad in (token["access_token"], token["access_token"][:-4] + "AAAA", "not.a.jwt"):
        response = requests.get(
            f"{live_server.url}/probe/", headers={"Authorization": f"Bearer {bad}"}, timeout=10
        )
        assert response.status_code in (401, 403), response.text


def test_suspended_partner_gets_no_tokens_and_its_tokens_stop_working(
    live_server, live_app, user, browser_for
):
    app, secret = live_app("Chat A")
    _, token, _ = run_code_flow(live_server, browser_for(user), app, secret, scope="openid")
    Partner.objects.filter(pk=app.partner_id).update(status=Partner.Status.SUSPENDED)
    assert refresh(live_server, app, secret, token["refresh_token"]).status_code == 401
    info = requests.get(
        f"{live_server.url}/o/userinfo/",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    )
    assert info.status_code in (401, 403)


def test_client_secrets_use_the_keyed_fast_hasher_and_wrong_secrets_fail(live_server, make_app):
    app, secret = make_app("Server A", allowed_scopes="settlement:read")
    assert identify_hasher(app.client_secret).algorithm == "tokenpass_hmac_sha256"
    assert secret not in app.client_secret
    wrong = requests.post(
        token_url(live_server),
        data={"grant_type": "client_credentials"},
        auth=(app.client_id, secret + "x"),
        timeout=10,
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    right = requests.post(
        token_url(live_server),
        data={"grant_type": "client_credentials"},
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert right.status_code == 200


def test_client_authentication_failures_are_rate_limited(live_server, make_app, settings):
    settings.OAUTH_CLIENT_AUTH_FAILURE_LIMIT = 3
    app, secret = make_app("Server A", allowed_scopes="settlement:read")

    def attempt(password):
        return requests.post(
            token_url(live_server),
            data={"grant_type": "client_credentials"},
            auth=(app.client_id, password),
            timeout=10,
        )

    for _ in range(3):
        assert attempt("wrong").status_code == 401
    blocked = attempt(secret)
    assert blocked.status_code == 429
    assert blocked.json()["error"] == "invalid_client"
    assert blocked.headers["Retry-After"]
    # introspection and revocation share the limit
    assert introspect(live_server, app, secret, "x").status_code == 429
    # Counted where every worker and host sees it; the address is not stored in clear, the
    # app is named for staff.
    (row,) = ClientAuthFailures.objects.all()
    assert row.failures == 3 and row.window_ends > timezone.now() and ratelimit.window_refuses(row)
    assert row.key == ratelimit.failure_key(client_id=app.client_id, ip="127.0.0.1")
    assert row.application == app
    # A client_id no app has is counted too, under its hash alone.
    for _ in range(2):
        assert (
            requests.post(
                token_url(live_server),
                data={"grant_type": "client_credentials"},
                auth=("no-such-client", "guess"),
                timeout=10,
            ).status_code
            == 401
        )
    unknown = ClientAuthFailures.objects.get(application=None)
    assert unknown.failures == 2 and not ratelimit.window_refuses(unknown)
    assert unknown.key == ratelimit.failure_key(client_id="no-such-client", ip="127.0.0.1")
    unknown.delete()
    # A window that has ended counts from one again, and oauth_cleanup deletes it.
    ClientAuthFailures.objects.update(window_ends=timezone.now())
    assert attempt(secret).status_code == 200
    assert attempt("wrong").status_code == 401
    assert ClientAuthFailures.objects.get().failures == 1
    ClientAuthFailures.objects.update(window_ends=timezone.now())
    call_command("oauth_cleanup", stdout=io.StringIO())
    assert not ClientAuthFailures.objects.exists()


def test_refresh_tokens_are_stored_hashed(live_server, live_app, user, browser_for):
    app, secret = live_app("Chat A")
    _, token, _ = run_code_flow(live_server, browser_for(user), app, secret, scope="openid")
    stored = get_refresh_token_model().objects.get(application=app, revoked__isnull=True)
    assert stored.token == "" and token["refresh_token"] not in stored.token_checksum
    # 256 random bits, URL-safe (partners.oauth.tokens.refresh_token_generate).
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token["refresh_token"])
    access = get_access_token_model().objects.get(application=app)
    assert access.token == ""


def test_an_app_without_the_refresh_grant_gets_no_refresh_token(
    live_server, live_app, user, browser_for
):
    app, secret = live_app("Code only", allowed_grant_types="authorization-code")
    _, token, _ = run_code_flow(live_server, browser_for(user), app, secret, scope="openid")
    assert "refresh_token" not in token
    assert not get_refresh_token_model().objects.filter(application=app).exists()
    # and the refresh grant itself is refused
    response = requests.post(
        token_url(live_server),
        data={"grant_type": "refresh_token", "refresh_token": "anything"},
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert response.status_code in (400, 401)
    assert response.json()["error"] in ("unauthorized_client", "invalid_grant")


def test_userinfo_refuses_a_client_credentials_token(live_server, make_app):
    app, secret = make_app("Server", allowed_scopes="openid settlement:read")
    token = OAuth2Session(
        client_id=app.client_id, client_secret=secret, scope="openid"
    ).fetch_token(token_url(live_server), grant_type="client_credentials")
    response = requests.get(
        f"{live_server.url}/o/userinfo/",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=10,
    )
    assert response.status_code == 403


def test_public_client_code_flow_needs_pkce_but_no_secret(live_server, live_app, user, browser_for):
    from tests.partners.conftest import pkce_pair, redirect_params

    app, _ = live_app("Mobile app", client_type="public", allowed_grant_types="authorization-code")
    verifier, challenge = pkce_pair()
    browser = browser_for(user)
    response = browser.authorize(
        {
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": app.redirect_uris,
            "scope": "openid",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    code = redirect_params(response)["code"]
    exchanged = requests.post(
        token_url(live_server),
        data={
            "grant_type": "authorization_code",
            "client_id": app.client_id,
            "code": code,
            "redirect_uri": app.redirect_uris,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["id_token"]
