"""Spending allowances set by the person: on the consent page (with a default, or the
amount an app asks for in RFC 9396 authorization_details) and on the Connected apps page;
then enforced on the app's next charge."""

import base64
import json
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from partners.models import Consent
from tests.factories import UserFactory
from tests.partners.conftest import (  # noqa: F401  (fixtures)
    _session_key_file,
    consent_form_fields,
    make_app,
    oidc_key_file,
    partner,
    pkce_pair,
)
from tests.wallet.conftest import fund, new_key
from wallet import services
from wallet.exceptions import AllowanceExceeded
from wallet.models import SpendingAllowance

pytestmark = pytest.mark.django_db

REDIRECT = "http://testserver/test-callback/a"


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user, backend="accounts.backends.PhoneOrEmailBackend")
    return client


def authorize(client, app, *, scope="openid wallet:charge", **extra):
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return client.get("/o/authorize/?" + urlencode(params)), verifier


def approve(client, page, **overrides):
    fields = consent_form_fields(page.content.decode())
    fields["allow"] = "Authorize"
    fields.update(overrides)
    return client.post("/o/authorize/", fields)


def returned(response) -> dict[str, str]:
    assert response.status_code == 302, response.content[:400]
    return {k: v[0] for k, v in parse_qs(urlsplit(response["Location"]).query).items()}


def charge(user, app, tokens: int):
    return services.wallet_charge(
        user=user,
        app=app,
        model="gpt-test",
        input_tokens=tokens,
        cached_input_tokens=0,
        output_tokens=0,
        idempotency_key=new_key(),
    )


def test_consent_shows_the_default_allowance_and_saves_it(user, make_app):  # noqa: F811
    app, _ = make_app("Chat")
    client = signed_in(user)
    page, _ = authorize(client, app)
    body = page.content.decode()
    assert 'data-testid="allowance"' in body
    assert f'value="{settings.WALLET_DEFAULT_MONTHLY_ALLOWANCE}"' in body
    assert "code" in returned(approve(client, page))
    allowance = SpendingAllowance.objects.get(user=user, app=app)
    assert allowance.monthly_limit == settings.WALLET_DEFAULT_MONTHLY_ALLOWANCE
    assert Consent.objects.get(user=user, application=app).scope_set() >= {"wallet:charge"}


def test_no_allowance_input_without_the_wallet_scope(user, make_app):  # noqa: F811
    app, _ = make_app("Profile only")
    client = signed_in(user)
    page, _ = authorize(client, app, scope="openid profile")
    assert page.status_code == 200
    assert 'data-testid="allowance"' not in page.content.decode()
    returned(approve(client, page))
    assert not SpendingAllowance.objects.filter(user=user).exists()


def test_authorization_details_prefill_and_the_person_decides(user, make_app):  # noqa: F811
    app, _ = make_app("Chat")
    client = signed_in(user)
    details = json.dumps([{"type": "tokenpass_wallet", "monthly_limit": 50000}])
    page, _ = authorize(client, app, authorization_details=details)
    assert 'value="50000"' in page.content.decode()
    # The person lowers it before allowing.
    returned(approve(client, page, monthly_allowance="1234"))
    assert SpendingAllowance.objects.get(user=user, app=app).monthly_limit == 1234


def exchange(app, secret, code, verifier):
    basic = base64.b64encode(f"{app.client_id}:{secret}".encode()).decode()
    token = Client().post(
        "/o/token/",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )
    assert token.status_code == 200, token.content
    return token.json()


def test_the_token_response_carries_the_granted_authorization_details(user, make_app):  # noqa: F811
    # RFC 9396 §7: what the person granted, not what the client asked for.
    app, secret = make_app("Chat")
    client = signed_in(user)
    details = json.dumps([{"type": "tokenpass_wallet", "monthly_limit": 50000}])
    page, verifier = authorize(client, app, authorization_details=details)
    code = returned(approve(client, page, monthly_allowance="1234"))["code"]
    granted = [{"type": "tokenpass_wallet", "monthly_limit": 1234}]
    tokens = exchange(app, secret, code, verifier)
    assert tokens["authorization_details"] == granted
    basic = base64.b64encode(f"{app.client_id}:{secret}".encode()).decode()
    refreshed = Client().post(
        "/o/token/",
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )
    assert refreshed.status_code == 200, refreshed.content
    assert refreshed.json()["authorization_details"] == granted
    # Asked again with the same details, consent covers it: the code comes at once, and its
    # tokens carry the limit in force.
    again, verifier = authorize(client, app, authorization_details=json.dumps(granted))
    silent = exchange(app, secret, returned(again)["code"], verifier)
    assert silent["authorization_details"] == granted
    # A client that did not ask gets none.
    plain, verifier = authorize(client, app)
    assert "authorization_details" not in exchange(app, secret, returned(plain)["code"], verifier)


def test_a_corrected_limit_still_carries_the_details_to_the_token(user, make_app):  # noqa: F811
    app, secret = make_app("Chat")
    client = signed_in(user)
    details = json.dumps([{"type": "tokenpass_wallet", "monthly_limit": 50000}])
    page, verifier = authorize(client, app, authorization_details=details)
    refused = approve(client, page, monthly_allowance="-5")
    assert refused.status_code == 400
    code = returned(approve(client, refused, monthly_allowance="700"))["code"]
    tokens = exchange(app, secret, code, verifier)
    assert tokens["authorization_details"] == [{"type": "tokenpass_wallet", "monthly_limit": 700}]


@pytest.mark.parametrize(
    "details",
    [
        "not json",
        json.dumps({"type": "tokenpass_wallet", "monthly_limit": 5}),
        json.dumps([{"type": "payment_initiation", "monthly_limit": 5}]),
        json.dumps([{"type": "tokenpass_wallet", "monthly_limit": -1}]),
        json.dumps([{"type": "tokenpass_wallet", "monthly_limit": 10**16}]),
        json.dumps([{"type": "tokenpass_wallet", "monthly_limit": "100"}]),
        json.dumps([{"type": "tokenpass_wallet", "monthly_limit": 1.5}]),
        json.dumps([{"type": "tokenpass_wallet", "monthly_limit": True}]),
        json.dumps([{"type": "tokenpass_wallet", "monthly_limit": 5, "currency": "usd"}]),
        json.dumps([{"type": "tokenpass_wallet", "monthly_limit": 5}] * 2),
        json.dumps(["tokenpass_wallet"]),
    ],
)
def test_invalid_authorization_details_are_an_oauth_error(user, make_app, details):  # noqa: F811
    app, _ = make_app("Chat")
    response, _ = authorize(signed_in(user), app, authorization_details=details)
    params = returned(response)
    assert params["error"] == "invalid_authorization_details"
    assert params["error_description"]
    assert "code" not in params
    assert not SpendingAllowance.objects.filter(user=user).exists()


def test_wallet_details_without_the_wallet_scope_are_refused(user, make_app):  # noqa: F811
    app, _ = make_app("Chat")
    details = json.dumps([{"type": "tokenpass_wallet", "monthly_limit": 5}])
    response, _ = authorize(signed_in(user), app, scope="openid", authorization_details=details)
    assert returned(response)["error"] == "invalid_authorization_details"


@pytest.mark.parametrize("value", ["", "-5", "abc", "1.5", str(10**16)])
def test_a_bad_allowance_on_the_consent_form_issues_nothing(user, make_app, value):  # noqa: F811
    app, _ = make_app("Chat")
    client = signed_in(user)
    page, _ = authorize(client, app)
    response = approve(client, page, monthly_allowance=value)
    assert response.status_code == 400
    assert 'data-testid="allowance-error"' in response.content.decode()
    assert not Consent.objects.filter(user=user, application=app).exists()
    assert not SpendingAllowance.objects.filter(user=user).exists()


def test_a_new_requested_limit_asks_again_even_after_consent(user, make_app):  # noqa: F811
    app, _ = make_app("Chat")
    client = signed_in(user)
    page, _ = authorize(client, app)
    returned(approve(client, page, monthly_allowance="100"))
    # Same request again: consent covers it, the code comes straight back.
    again, _ = authorize(client, app)
    assert "code" in returned(again)
    # Asking for another limit shows the page; prompt=none cannot pass it silently.
    details = json.dumps([{"type": "tokenpass_wallet", "monthly_limit": 900}])
    asked, _ = authorize(client, app, authorization_details=details)
    assert asked.status_code == 200 and 'value="900"' in asked.content.decode()
    silent, _ = authorize(client, app, authorization_details=details, prompt="none")
    assert returned(silent)["error"] == "consent_required"
    assert SpendingAllowance.objects.get(user=user, app=app).monthly_limit == 100


def test_saved_allowance_refuses_a_charge_beyond_it_over_the_api(user, make_app, price):  # noqa: F811
    app, secret = make_app("Chat")
    fund(user, 10_000)
    client = signed_in(user)
    page, verifier = authorize(client, app)
    code = returned(approve(client, page, monthly_allowance="500"))["code"]
    token = exchange(app, secret, code, verifier)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token['access_token']}")

    def charge_api(tokens: int, key: str):
        return api.post(
            "/api/wallet/charges/",
            {"model": "gpt-test", "input_tokens": tokens},
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=key,
        )

    assert charge_api(400, "a").status_code == 201
    refused = charge_api(101, "b")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "allowance_exceeded"
    assert refused.json()["error"]["details"]["monthly_limit"] == 500
    assert charge_api(100, "c").status_code == 201


def test_connected_apps_shows_and_changes_the_allowance(user, make_app, price):  # noqa: F811
    app, _ = make_app("Chat")
    client = signed_in(user)
    page, _ = authorize(client, app)
    returned(approve(client, page, monthly_allowance="1000"))
    fund(user, 10_000)
    charge(user, app, 300)
    listing = client.get(reverse("connected-apps")).content.decode()
    assert "300 of 1,000 tokens spent this month" in listing
    # Raise it.
    response = client.post(
        reverse("wallet:allowance_update", args=[app.client_id]),
        {"monthly_allowance": "2000", "action": "save"},
    )
    assert response.status_code == 302
    assert SpendingAllowance.objects.get(user=user, app=app).monthly_limit == 2000
    charge(user, app, 1500)
    # Stop all spending: the next charge is refused.
    client.post(
        reverse("wallet:allowance_update", args=[app.client_id]),
        {"monthly_allowance": "0", "action": "revoke"},
    )
    assert SpendingAllowance.objects.get(user=user, app=app).monthly_limit == 0
    with pytest.raises(AllowanceExceeded):
        charge(user, app, 1)
    assert (
        "can no longer spend your tokens" in client.get(reverse("connected-apps")).content.decode()
    )


@pytest.mark.parametrize("value", ["-1", "abc", ""])
def test_connected_apps_rejects_a_bad_limit(user, make_app, value):  # noqa: F811
    app, _ = make_app("Chat")
    client = signed_in(user)
    page, _ = authorize(client, app)
    returned(approve(client, page, monthly_allowance="1000"))
    response = client.post(
        reverse("wallet:allowance_update", args=[app.client_id]),
        {"monthly_allowance": value},
        follow=True,
    )
    assert response.status_code == 200
    assert SpendingAllowance.objects.get(user=user, app=app).monthly_limit == 1000
    assert '<li class="msg msg-error">' in response.content.decode()


def test_allowance_of_an_app_not_allowed_to_charge_cannot_be_set(user, make_app):  # noqa: F811
    app, _ = make_app("Chat")
    Consent.objects.create(user=user, application=app, scope="openid")
    other = UserFactory()
    charging, _ = make_app("Other's app")
    Consent.objects.create(user=other, application=charging, scope="openid wallet:charge")
    client = signed_in(user)
    for target in (app, charging):
        client.post(
            reverse("wallet:allowance_update", args=[target.client_id]),
            {"monthly_allowance": "5"},
        )
    client.post(
        reverse("wallet:allowance_update", args=["no-such-app"]), {"monthly_allowance": "5"}
    )
    assert not SpendingAllowance.objects.exists()
    assert client.get(reverse("wallet:allowance_update", args=[app.client_id])).status_code == 405
