"""A partner's server charges a person's wallet with its own client-credentials token, naming
the person in the Tokenpass-User header, when that person gave the app a standing allowance."""

import pytest
import requests
from rest_framework.test import APIClient

from partners.oauth.services import consent_record, consent_revoke
from tests.factories import UserFactory
from tests.partners.conftest import (  # noqa: F401 (fixtures)
    _session_key_file,
    make_app,
    oidc_key_file,
    partner,
)
from tests.wallet.conftest import balance, fund
from tests.wallet.test_api import token_for
from wallet import services

pytestmark = pytest.mark.django_db(transaction=True)

CHARGES = "/api/wallet/charges/"


def server_token(base_url: str, app, secret: str, scope: str = "wallet:charge") -> str:
    """A client-credentials token from the real token endpoint."""
    response = requests.post(
        f"{base_url}/o/token/",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(app.client_id, secret),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def charge(base_url: str, token: str, *, user=None, key: str, tokens: int = 100, **headers):
    if user is not None:
        headers["Tokenpass-User"] = user.public_id
    return requests.post(
        f"{base_url}{CHARGES}",
        json={"model": "gpt-test", "input_tokens": tokens},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key, **headers},
        timeout=30,
    )


@pytest.fixture
def server(live_server, make_app, price):  # noqa: F811
    app, secret = make_app("Chat server")
    return app, server_token(live_server.url, app, secret), secret


def test_a_person_with_a_standing_allowance_is_charged_by_the_partner_server(live_server, server):
    app, token, _ = server
    person = UserFactory()
    fund(person, 10_000)
    consent_record(user=person, application=app, scopes=["openid", "wallet:charge"], request=None)
    services.allowance_set(user=person, app=app, monthly_limit=5_000)

    response = charge(live_server.url, token, user=person, key="c-1")

    assert response.status_code == 201, response.text
    assert response.json()["amount"] == 100
    assert balance(person) == 9_900
    # a replay is the first answer, not a second charge
    assert charge(live_server.url, token, user=person, key="c-1").json() == response.json()
    assert balance(person) == 9_900
    # the allowance still binds
    over = charge(live_server.url, token, user=person, key="c-2", tokens=5_000)
    assert over.status_code == 403 and over.json()["error"]["code"] == "allowance_exceeded"
    # the balance endpoint and the batch take the header too
    seen = requests.get(
        f"{live_server.url}/api/wallet/balance/",
        headers={"Authorization": f"Bearer {token}", "Tokenpass-User": person.public_id},
        timeout=30,
    ).json()
    assert seen["balance"] == 9_900 and seen["allowance"]["used"] == 100
    batch = requests.post(
        f"{live_server.url}/api/wallet/usage/batch/",
        json={"records": [{"idempotency_key": "r-1", "model": "gpt-test", "input_tokens": 7}]},
        headers={
            "Authorization": f"Bearer {token}",
            "Tokenpass-User": person.public_id,
            "Idempotency-Key": "b-1",
        },
        timeout=30,
    )
    assert batch.status_code == 200, batch.text
    assert balance(person) == 9_893


def test_without_a_standing_allowance_the_server_cannot_charge(live_server, server):
    app, token, _ = server
    stranger = UserFactory()  # never used the app
    identity_only = UserFactory()
    consent_record(user=identity_only, application=app, scopes=["openid"], request=None)
    stopped = UserFactory()
    consent_record(user=stopped, application=app, scopes=["wallet:charge"], request=None)
    services.allowance_set(user=stopped, app=app, monthly_limit=0)
    revoked = UserFactory()
    consent_record(user=revoked, application=app, scopes=["wallet:charge"], request=None)
    consent_revoke(user=revoked, application=app, request=None)
    for person in (stranger, identity_only, stopped, revoked):
        fund(person, 1_000)
        response = charge(live_server.url, token, user=person, key=f"k-{person.pk}")
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "no_standing_allowance"
        assert balance(person) == 1_000
    unknown = charge(live_server.url, token, key="k-x", **{"Tokenpass-User": "u_nobody"})
    assert unknown.json()["error"]["code"] == "no_standing_allowance"
    # No header: the server's token has no wallet of its own.
    bare = charge(live_server.url, token, key="k-y")
    assert bare.status_code == 403 and bare.json()["error"]["code"] == "user_token_required"


def test_the_server_token_needs_the_wallet_scope(live_server, make_app, price):  # noqa: F811
    app, secret = make_app("Identity server")
    person = UserFactory()
    fund(person, 1_000)
    consent_record(user=person, application=app, scopes=["wallet:charge"], request=None)
    token = server_token(live_server.url, app, secret, scope="openid")
    response = charge(live_server.url, token, user=person, key="k-1")
    assert response.status_code == 403
    assert balance(person) == 1_000


def test_another_apps_allowance_does_not_count(live_server, server, make_app):  # noqa: F811
    _app, token, _ = server
    other, _ = make_app("Other app")
    person = UserFactory()
    fund(person, 1_000)
    consent_record(user=person, application=other, scopes=["wallet:charge"], request=None)
    response = charge(live_server.url, token, user=person, key="k-1")
    assert response.json()["error"]["code"] == "no_standing_allowance"


def test_a_users_token_with_a_header_naming_someone_else_is_refused(user, app, price):
    fund(user, 1_000)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, app)}")
    other = UserFactory()
    response = client.get("/api/wallet/balance/", headers={"Tokenpass-User": other.public_id})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "user_mismatch"
    same = client.get("/api/wallet/balance/", headers={"Tokenpass-User": user.public_id})
    assert same.status_code == 200 and same.json()["balance"] == 1_000


def test_the_schema_documents_the_header(client):
    text = client.get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    assert "Tokenpass-User" in text
