"""Setting a spending allowance in a real browser: a partner app asks for wallet:charge with
an RFC 9396 authorization_details amount; the person signs in, lowers the limit on the
consent page and allows; the app's charges stop at that limit; on Connected apps the person
raises it and then stops all spending."""

import base64
import hashlib
import json
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from partners.models import Application
from tests.factories import DEFAULT_PASSWORD, PartnerFactory, PriceFactory, UserFactory
from tests.wallet.conftest import fund
from wallet.models import SpendingAllowance

pytestmark = pytest.mark.django_db(transaction=True)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_consent_sets_the_allowance_and_charges_respect_it(page, live_server):
    person = UserFactory(email="spender@example.com")
    PriceFactory(model__name="gpt-live", input_per_million=1_000_000)
    fund(person, 100_000)
    secret = secrets.token_urlsafe(40)
    app = Application.objects.create(
        name="Chat Pay",
        partner=PartnerFactory(name="Chat Pay Inc."),
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        allowed_grant_types="authorization-code refresh_token",
        allowed_scopes="openid wallet:charge",
        redirect_uris=f"{live_server.url}/cb/pay",
        algorithm=Application.RS256_ALGORITHM,
        client_secret=secret,
    )
    verifier, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": app.redirect_uris,
        "scope": "openid wallet:charge",
        "state": "s-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "authorization_details": json.dumps([{"type": "tokenpass_wallet", "monthly_limit": 50000}]),
    }
    page.goto(f"{live_server.url}/o/authorize/?{urlencode(params)}")
    assert urlsplit(page.url).path == "/login/"
    page.fill("input[name=username]", "spender@example.com")
    page.fill("input[name=password]", DEFAULT_PASSWORD)
    page.locator("main form button[type=submit]").first.click()

    # The consent page shows the amount the app asked for; the person lowers it.
    page.wait_for_selector("#consent-title")
    limit = page.locator("input[name=monthly_allowance]")
    assert limit.input_value() == "50000"
    assert "Spending limit" in page.inner_text("[data-testid=allowance]")
    # A negative limit does not get past the form (the server refuses it too: see
    # tests/wallet/test_pages_allowance.py).
    limit.fill("-3")
    page.click("button[name=allow]")
    assert limit.evaluate("element => element.validity.valid") is False
    assert urlsplit(page.url).path == "/o/authorize/"
    assert not SpendingAllowance.objects.filter(user=person).exists()
    page.locator("input[name=monthly_allowance]").fill("700")
    page.click("button[name=allow]")

    page.wait_for_url(f"{live_server.url}/cb/pay?*")
    returned = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
    assert returned["state"] == "s-1"
    assert SpendingAllowance.objects.get(user=person, app=app).monthly_limit == 700

    token = requests.post(
        f"{live_server.url}/o/token/",
        data={
            "grant_type": "authorization_code",
            "code": returned["code"],
            "redirect_uri": app.redirect_uris,
            "code_verifier": verifier,
        },
        auth=(app.client_id, secret),
        timeout=10,
    )
    assert token.status_code == 200, token.text
    bearer = token.json()["access_token"]

    def charge(tokens: int, key: str) -> requests.Response:
        return requests.post(
            f"{live_server.url}/api/wallet/charges/",
            json={"model": "gpt-live", "input_tokens": tokens},
            headers={"Authorization": f"Bearer {bearer}", "Idempotency-Key": key},
            timeout=10,
        )

    assert charge(600, "k1").status_code == 201
    refused = charge(200, "k2")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "allowance_exceeded"

    # Connected apps: this month's spend against the limit; raise it, then stop spending.
    page.goto(f"{live_server.url}/account/apps/")
    row = page.locator(f"tr[data-client-id='{app.client_id}']")
    assert "600 of 700 tokens spent this month" in row.inner_text()
    row.locator("input[name=monthly_allowance][type=number]").fill("1000")
    row.get_by_role("button", name="Save limit").click()
    page.wait_for_selector("text=may now spend up to 1000 tokens a month")
    assert charge(200, "k3").status_code == 201
    row = page.locator(f"tr[data-client-id='{app.client_id}']")
    row.get_by_role("button", name="Stop all spending").click()
    page.wait_for_selector("text=can no longer spend your tokens")
    assert SpendingAllowance.objects.get(user=person, app=app).monthly_limit == 0
    assert charge(1, "k4").status_code == 403
