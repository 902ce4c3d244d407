"""The consent page reaches the wallet's monthly limit only through the registry in
partners.oauth.spending (the wallet registers it when Django starts)."""

import json

import pytest

from partners.oauth import spending
from tests.partners.conftest import make_app, partner  # noqa: F401 (fixtures)
from tests.wallet.test_pages_allowance import authorize, returned, signed_in
from wallet.spending import WalletSpendingLimits

pytestmark = pytest.mark.django_db


def test_the_wallet_registers_its_limits():
    assert isinstance(spending.spending_limits(), WalletSpendingLimits)


def test_without_limits_none_is_asked_and_details_fail(user, make_app, monkeypatch):  # noqa: F811
    monkeypatch.setattr(spending, "_registered", [])
    app, _ = make_app("Chat")
    client = signed_in(user)
    page, _ = authorize(client, app)
    assert page.status_code == 200 and 'name="monthly_allowance"' not in page.content.decode()
    details = json.dumps([{"type": "tokenpass_wallet", "monthly_limit": 10}])
    refused, _ = authorize(client, app, authorization_details=details)
    assert returned(refused)["error"] == "invalid_authorization_details"
