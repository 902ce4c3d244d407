"""End to end: a partner app gets a user's access token with wallet:charge through the real
authorization code flow, then charges the wallet over HTTP on the live server."""

import pytest
import requests

from tests.factories import PriceFactory
from tests.partners.conftest import (  # noqa: F401  (fixtures)
    _session_key_file,
    browser_for,
    live_app,
    make_app,
    oidc_key_file,
    partner,
)
from tests.partners.test_oauth_code_flow import run_code_flow
from tests.wallet.conftest import balance, fund

pytestmark = pytest.mark.django_db(transaction=True)


def test_token_from_the_code_flow_charges_the_wallet(live_server, live_app, user, browser_for):  # noqa: F811
    PriceFactory(model__name="gpt-live", input_per_million=1_000_000)
    fund(user, 1000)
    app, secret = live_app("Chat with wallet")
    _, token, _ = run_code_flow(
        live_server, browser_for(user), app, secret, scope="openid wallet:charge"
    )
    headers = {"Authorization": f"Bearer {token['access_token']}", "Idempotency-Key": "e2e-1"}
    url = f"{live_server.url}/api/wallet/charges/"
    body = {"model": "gpt-live", "input_tokens": 250}
    first = requests.post(url, json=body, headers=headers, timeout=10)
    assert first.status_code == 201, first.text
    replay = requests.post(url, json=body, headers=headers, timeout=10)
    assert replay.json()["id"] == first.json()["id"]
    assert balance(user) == 750

    # A token without wallet:charge cannot charge.
    _, identity, _ = run_code_flow(live_server, browser_for(user), app, secret, scope="openid")
    refused = requests.post(
        url,
        json=body,
        headers={"Authorization": f"Bearer {identity['access_token']}", "Idempotency-Key": "x"},
        timeout=10,
    )
    assert refused.status_code == 403
    assert set(refused.json()["error"]) == {"code", "message", "details"}
    assert balance(user) == 750
