"""The access-token verification sample in docs/partners-oauth.md, run as written against the
live server: tokens from a real authorization-code flow and a real client-credentials grant
verify; an ID token, a token for another audience, a tampered token and a token without the
needed scope do not."""

import base64
import hashlib
import re
import secrets
from pathlib import Path

import pytest
import requests

from tests.partners.conftest import redirect_params

pytestmark = pytest.mark.django_db(transaction=True)

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "partners-oauth.md"


def load_sample() -> dict:
    """Execute the guide's sample block and return its namespace."""
    text = GUIDE.read_text()
    match = re.search(r"<!-- sample: verify_access_token -->\s*```python\n(.*?)```", text, re.S)
    assert match, "the verification sample is missing from docs/partners-oauth.md"
    namespace: dict = {"__name__": "partner_sample"}
    exec(compile(match.group(1), str(GUIDE), "exec"), namespace)
    return namespace


@pytest.fixture
def issuer(settings, live_server):
    # The issuer is our public origin; under test that is the live server.
    settings.SITE_URL = live_server.url
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": live_server.url}
    return live_server.url


def code_flow_tokens(issuer, browser, app, secret, scope: str) -> dict:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    redirect_uri = app.redirect_uris.split()[0]
    response = browser.authorize(
        {
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": "s-123",
            "nonce": "n-456",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    params = redirect_params(response)
    token = requests.post(
        f"{issuer}/o/token/",
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=(app.client_id, secret),
        timeout=30,
    )
    assert token.status_code == 200, token.text
    return token.json()


def test_the_guide_sample_verifies_a_users_access_token(issuer, live_app, user, browser_for):
    sample = load_sample()
    verify, invalid = sample["verify_access_token"], sample["InvalidAccessToken"]
    app, secret = live_app("Chat")
    other, _ = live_app("Other", path="/test-callback/b")
    tokens = code_flow_tokens(
        issuer, browser_for(user), app, secret, scope="openid profile wallet:charge"
    )

    claims = verify(
        tokens["access_token"],
        issuer=issuer,
        audience=app.client_id,
        required_scope="wallet:charge",
    )
    assert claims["sub"] == user.public_id
    assert claims["client_id"] == app.client_id
    assert "wallet:charge" in claims["scope"].split()

    with pytest.raises(invalid, match="scope"):
        verify(
            tokens["access_token"], issuer=issuer, audience=app.client_id, required_scope="phone"
        )
    with pytest.raises(invalid, match=r"[Aa]udience"):
        verify(tokens["access_token"], issuer=issuer, audience=other.client_id)
    with pytest.raises(invalid, match="typ"):
        verify(tokens["id_token"], issuer=issuer, audience=app.client_id)
    header, payload, signature = tokens["access_token"].split(".")
    forged_payload = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(payload + "==").replace(
            user.public_id.encode(), b"u_" + b"0" * (len(user.public_id) - 2)
        )
    ).rstrip(b"=")
    with pytest.raises(invalid, match=r"[Ss]ignature"):
        verify(
            f"{header}.{forged_payload.decode()}.{signature}", issuer=issuer, audience=app.client_id
        )
    # A token from us is not one from another issuer, even one that shared our keys
    sample["_jwks_clients"]["https://someone-else.example"] = sample["_jwks_clients"][issuer]
    with pytest.raises(invalid, match=r"[Ii]ssuer"):
        verify(
            tokens["access_token"], issuer="https://someone-else.example", audience=app.client_id
        )


def test_the_guide_sample_verifies_a_client_credentials_token(issuer, live_app):
    sample = load_sample()
    app, secret = live_app("Service", allowed_scopes="openid settlement:read")
    response = requests.post(
        f"{issuer}/o/token/",
        data={"grant_type": "client_credentials", "scope": "settlement:read"},
        auth=(app.client_id, secret),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    claims = sample["verify_access_token"](
        response.json()["access_token"],
        issuer=issuer,
        audience=app.client_id,
        required_scope="settlement:read",
    )
    assert claims["sub"] == app.client_id
    assert "refresh_token" not in response.json()


def test_the_guide_lists_every_endpoint_that_discovery_publishes(issuer):
    discovery = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    guide = GUIDE.read_text()
    for key in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
        "device_authorization_endpoint",
        "end_session_endpoint",
    ):
        path = discovery[key].removeprefix(issuer)
        assert f"`{path}`" in guide, f"{key} {path} is not in the guide"
    for scope in discovery["scopes_supported"]:
        assert f"`{scope}`" in guide


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("unknown grant type", 400, "unsupported_grant_type"),
        ("wrong secret", 401, "invalid_client"),
        ("grant not allowed", 400, "unauthorized_client"),
        ("scope not allowed", 400, "invalid_scope"),
        ("parameter too long", 400, "invalid_request"),
        ("unknown refresh token", 400, "invalid_grant"),
        ("partner suspended", 401, "invalid_client"),
    ],
)
def test_the_guides_error_table_matches_the_token_endpoint(client, make_app, case, status, error):
    from partners.models import Partner

    app, secret = make_app(
        "Errors", allowed_grant_types="authorization-code refresh_token", allowed_scopes="openid"
    )
    data = {"grant_type": "refresh_token", "refresh_token": "not-a-token"}
    if case == "unknown grant type":
        data = {"grant_type": "password", "username": "x", "password": "y"}
    elif case == "wrong secret":
        secret = "wrong"
    elif case == "grant not allowed":
        data = {"grant_type": "client_credentials"}
    elif case == "scope not allowed":
        app.allowed_grant_types = "client-credentials"
        app.save(update_fields=["allowed_grant_types"])
        data = {"grant_type": "client_credentials", "scope": "wallet:charge"}
    elif case == "parameter too long":
        data["refresh_token"] = "x" * 5000
    elif case == "partner suspended":
        Partner.objects.filter(pk=app.partner_id).update(status=Partner.Status.SUSPENDED)
    basic = base64.b64encode(f"{app.client_id}:{secret}".encode()).decode()
    response = client.post("/o/token/", data, HTTP_AUTHORIZATION=f"Basic {basic}")
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response["Cache-Control"] == "no-store"
    guide = GUIDE.read_text()
    assert f"`{error}`" in guide
