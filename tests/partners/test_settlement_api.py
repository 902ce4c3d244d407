"""The settlement API as a partner's server uses it: a client-credentials token with
settlement:read, statements with lines, CSV, usage aggregates, and nothing of other partners."""

import base64
import csv
import io
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from freezegun import freeze_time

from partners.models import Application, ApplicationReview, Partner
from partners.settlement.models import Statement, StatementLine
from tests.factories import PartnerFactory, PriceFactory, UserFactory
from tests.partners.test_portal import make_statement
from tests.wallet.conftest import fund
from wallet import services as wallet_services

pytestmark = pytest.mark.django_db
SECRET = "partner-server-secret-0123456789"
_keys = itertools.count()
_prices: dict = {}


def make_charge(*, app, amount, at, model="chat-test", vendor=None, user=None):
    """A real charge of `amount` tokens by `app` at `at` (1 token per input token)."""
    if (
        model not in _prices
        or not type(_prices[model]).objects.filter(pk=_prices[model].pk).exists()
    ):
        _prices[model] = PriceFactory(
            model__name=model,
            model__vendor=vendor or PartnerFactory(),
            effective_from=timezone.now() - timedelta(days=400),
            input_per_million=1_000_000,
        )
    user = user or UserFactory()
    fund(user, amount)
    with freeze_time(at):
        return wallet_services.wallet_charge(
            user=user,
            app=app,
            model=model,
            input_tokens=amount,
            cached_input_tokens=0,
            output_tokens=0,
            idempotency_key=f"usage-{next(_keys)}",
        )


def server_app(partner, *, scopes="settlement:read", name="Partner server", **fields):
    return Application.objects.create(
        name=name,
        partner=partner,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        allowed_grant_types="client-credentials",
        allowed_scopes=scopes,
        redirect_uris="",
        algorithm=Application.RS256_ALGORITHM,
        client_secret=SECRET,
        **fields,
    )


def token_for(client, app, scope="settlement:read"):
    basic = base64.b64encode(f"{app.client_id}:{SECRET}".encode()).decode()
    response = client.post(
        "/o/token/",
        {"grant_type": "client_credentials", "scope": scope},
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


@pytest.fixture
def partner_a(db):
    return PartnerFactory(name="Alpha AI")


@pytest.fixture
def partner_b(db):
    return PartnerFactory(name="Beta Labs")


@pytest.fixture
def api(client, partner_a):
    """A client carrying a settlement:read token of partner A's server app."""
    app = server_app(partner_a)
    token = token_for(client, app)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    client.app = app
    return client


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


# Authentication --------------------------------------------------------------------------------


def test_no_token_is_401_in_our_error_shape(client):
    response = client.get("/api/settlement/statements/")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_bad_token_is_401(client):
    response = client.get("/api/settlement/statements/", HTTP_AUTHORIZATION="Bearer nope")
    error = assert_error(response, 401, "not_authenticated")
    # Told apart from a missing token as the challenge does (RFC 6750 §3.1).
    assert error["details"] == {"token_error": "invalid_token"}
    assert error["message"] == "The access token is invalid."
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    missing = client.get("/api/settlement/statements/").json()["error"]
    assert missing["details"] is None


def test_a_token_without_settlement_read_is_403(client, partner_a):
    app = server_app(partner_a, scopes="settlement:read wallet:charge")
    token = token_for(client, app, scope="wallet:charge")
    response = client.get("/api/settlement/statements/", HTTP_AUTHORIZATION=f"Bearer {token}")
    error = assert_error(response, 403, "insufficient_scope")
    assert error["details"] == {"required_scopes": ["settlement:read"]}


def test_error_messages_follow_accept_language_and_codes_stay(client, partner_a):
    app = server_app(partner_a, scopes="settlement:read wallet:charge")
    token = token_for(client, app, scope="wallet:charge")
    english = assert_error(
        client.get("/api/settlement/statements/", HTTP_AUTHORIZATION=f"Bearer {token}"),
        403,
        "insufficient_scope",
    )
    chinese = assert_error(
        client.get(
            "/api/settlement/statements/",
            HTTP_AUTHORIZATION=f"Bearer {token}",
            HTTP_ACCEPT_LANGUAGE="zh-hans",
        ),
        403,
        "insufficient_scope",
    )
    assert english["message"] == "The access token needs the settlement:read scope."
    assert chinese["message"] == "访问令牌需要 settlement:read 权限范围。"
    assert chinese["details"] == english["details"]
    token = token_for(client, app)
    missing = client.get(
        "/api/settlement/statements/999999/",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_ACCEPT_LANGUAGE="zh-hans",
    )
    assert assert_error(missing, 404, "not_found")["message"] == "未找到。"


def test_a_token_issued_to_a_person_is_403(client, partner_a):
    from oauth2_provider.models import get_access_token_model

    app = server_app(partner_a)
    token = get_access_token_model().objects.create(
        user=UserFactory(),
        application=app,
        token="person-token-0123456789",
        scope="settlement:read",
        expires=timezone.now() + timedelta(hours=1),
    )
    response = client.get("/api/settlement/statements/", HTTP_AUTHORIZATION=f"Bearer {token.token}")
    assert_error(response, 403, "client_credentials_required")


def test_suspended_partner_or_app_loses_access_at_once(api, partner_a):
    assert api.get("/api/settlement/statements/").status_code == 200
    Partner.objects.filter(pk=partner_a.pk).update(status=Partner.Status.SUSPENDED)
    assert api.get("/api/settlement/statements/").status_code in (401, 403)
    Partner.objects.filter(pk=partner_a.pk).update(status=Partner.Status.ACTIVE)
    ApplicationReview.objects.create(application=api.app, status="suspended")
    assert api.get("/api/settlement/statements/").status_code in (401, 403)


# Statements -------------------------------------------------------------------------------------


def test_list_shows_only_the_partners_final_statements(api, partner_a, partner_b):
    mine = make_statement(partner_a)
    make_statement(partner_a, status=Statement.Status.DRAFT, start=datetime(2026, 11, 1).date())
    make_statement(partner_b)

    response = api.get("/api/settlement/statements/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    [item] = body["results"]
    assert item["id"] == mine.pk
    assert item["period"] == "month"
    assert item["period_start"] == "2026-10-01"
    assert item["period_end"] == "2026-11-01"
    assert item["total"] == 1500
    assert item["status"] == "approved"


def test_list_filters_and_validates(api, partner_a):
    make_statement(partner_a)
    assert api.get("/api/settlement/statements/", {"period": "day"}).json()["count"] == 0
    assert api.get("/api/settlement/statements/", {"status": "approved"}).json()["count"] == 1
    error = assert_error(
        api.get("/api/settlement/statements/", {"period": "year"}), 400, "invalid_request"
    )
    assert "period" in error["details"]


def test_detail_has_lines_and_hides_other_partners_apps(api, partner_a, partner_b):
    statement = make_statement(partner_a)
    own_app = server_app(partner_a, name="Alpha chat")
    foreign_app = server_app(partner_b, name="Beta chat")
    StatementLine.objects.create(
        statement=statement, kind="earning", role="app_share", app=own_app, amount=10, gross=20
    )
    StatementLine.objects.create(
        statement=statement, kind="earning", role="vendor_cost", app=foreign_app, amount=5, gross=9
    )

    response = api.get(f"/api/settlement/statements/{statement.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == statement.pk
    assert [line["amount"] for line in body["lines"]] == [1500, 10, 5]
    assert body["lines"][1]["app"] == own_app.client_id
    assert body["lines"][2]["app"] is None
    assert foreign_app.client_id not in response.content.decode()
    assert "Beta chat" not in response.content.decode()


def test_another_partners_statement_is_404_like_a_missing_one(api, partner_b):
    theirs = make_statement(partner_b)
    for path in [
        f"/api/settlement/statements/{theirs.pk}/",
        f"/api/settlement/statements/{theirs.pk}/csv/",
        "/api/settlement/statements/999999/",
    ]:
        assert_error(api.get(path), 404, "not_found")


def test_csv_download(api, partner_a):
    statement = make_statement(partner_a)

    response = api.get(f"/api/settlement/statements/{statement.pk}/csv/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 1
    assert rows[0]["amount"] == "1500"
    assert rows[0]["gross"] == "3000"
    assert rows[0]["period_start"] == "2026-10-01"

    # Clients that ask for CSV get it too, and errors stay in our JSON shape.
    assert (
        api.get(
            f"/api/settlement/statements/{statement.pk}/csv/", HTTP_ACCEPT="text/csv"
        ).status_code
        == 200
    )
    missing = api.get("/api/settlement/statements/0/csv/", HTTP_ACCEPT="text/csv")
    assert missing.status_code == 404
    assert b'"not_found"' in missing.content


# Usage ------------------------------------------------------------------------------------------


@pytest.fixture
def usage_data(partner_a, partner_b):
    chat = server_app(partner_a, name="Alpha chat")
    code = server_app(partner_a, name="Alpha code")
    beta = server_app(partner_b, name="Beta chat")
    day1 = datetime(2026, 10, 5, 10, 0, tzinfo=UTC)
    day2 = datetime(2026, 10, 6, 23, 30, tzinfo=UTC)
    make_charge(app=chat, amount=100, at=day1, model="chat-test")
    make_charge(app=chat, amount=50, at=day2, model="chat-test")
    make_charge(app=code, amount=7, at=day2, model="code-test")
    make_charge(app=beta, amount=1000, at=day1, model="chat-test")
    # Partner A sells a model; partner B's app uses it.
    make_charge(app=beta, amount=30, at=day1, model="alpha-model", vendor=partner_a)
    # Outside the range.
    make_charge(app=chat, amount=5, at=datetime(2026, 9, 30, 23, 59, tzinfo=UTC))
    return {"chat": chat, "code": code, "beta": beta}


def test_usage_by_day(api, usage_data):
    response = api.get(
        "/api/settlement/usage/", {"start": "2026-10-01", "end": "2026-10-31", "group_by": "day"}
    )
    assert response.status_code == 200, response.content
    rows = {row["day"]: row for row in response.json()["rows"]}
    assert rows["2026-10-05"]["amount"] == 130
    assert rows["2026-10-05"]["charges"] == 2
    assert rows["2026-10-06"]["amount"] == 57
    assert set(rows) == {"2026-10-05", "2026-10-06"}


def test_usage_by_app_and_model_keeps_other_partners_apps_anonymous(api, usage_data):
    response = api.get(
        "/api/settlement/usage/",
        {"start": "2026-10-01", "end": "2026-10-31", "group_by": "app,model"},
    )
    body = response.json()
    assert body["group_by"] == ["app", "model"]
    rows = {(row["app"], row["model"]): row["amount"] for row in body["rows"]}
    assert rows == {
        (usage_data["chat"].client_id, "chat-test"): 150,
        (usage_data["code"].client_id, "code-test"): 7,
        (None, "alpha-model"): 30,
    }
    assert usage_data["beta"].client_id not in response.content.decode()
    assert "Beta chat" not in response.content.decode()


def test_usage_for_one_app_and_totals(api, usage_data):
    one = api.get(
        "/api/settlement/usage/",
        {
            "start": "2026-10-01",
            "end": "2026-10-31",
            "group_by": "model",
            "app": usage_data["code"].client_id,
        },
    ).json()
    assert [(r["model"], r["amount"], r["charges"]) for r in one["rows"]] == [("code-test", 7, 1)]

    total = api.get(
        "/api/settlement/usage/", {"start": "2026-10-01", "end": "2026-10-31", "group_by": "none"}
    ).json()
    assert [r["amount"] for r in total["rows"]] == [187]


def test_usage_for_another_partners_app_is_404(api, usage_data):
    response = api.get(
        "/api/settlement/usage/",
        {"start": "2026-10-01", "end": "2026-10-31", "app": usage_data["beta"].client_id},
    )
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"end": "2026-10-31"}, "start"),
        ({"start": "2026-10-01"}, "end"),
        ({"start": "2026-10-31", "end": "2026-10-01"}, "end"),
        ({"start": "2024-01-01", "end": "2026-01-01"}, "end"),
        ({"start": "yesterday", "end": "2026-10-01"}, "start"),
        ({"start": "2026-10-01", "end": "2026-10-02", "group_by": "day,user"}, "group_by"),
    ],
)
def test_usage_query_is_validated(api, params, field):
    error = assert_error(api.get("/api/settlement/usage/", params), 400, "invalid_request")
    assert field in error["details"]


def test_the_api_is_in_the_openapi_schema(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    text = response.content.decode()
    for path in [
        "/api/settlement/statements/",
        "/api/settlement/statements/{statement_id}/",
        "/api/settlement/statements/{statement_id}/csv/",
        "/api/settlement/usage/",
    ]:
        assert path in text


def test_apps_awaiting_review_or_suspended_cannot_charge_wallets(client, partner_a):
    """The review reaches the wallet API too: its bearer tokens pass through the same check."""
    from oauth2_provider.models import get_access_token_model

    from partners import services as partner_services
    from tests.wallet.conftest import balance

    app = server_app(partner_a, scopes="wallet:charge")
    ApplicationReview.objects.create(application=app)
    make_charge(app=server_app(partner_a, name="seed"), amount=1, at=timezone.now())
    person = UserFactory()
    fund(person, 100)
    token = get_access_token_model().objects.create(
        user=person,
        application=app,
        token="charging-token-0123456789",
        scope="wallet:charge",
        expires=timezone.now() + timedelta(hours=1),
    )

    def charge(key):
        return client.post(
            "/api/wallet/charges/",
            {"model": "chat-test", "input_tokens": 10},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token.token}",
            HTTP_IDEMPOTENCY_KEY=key,
        )

    assert charge("pending").status_code in (401, 403)
    assert balance(person) == 100

    partner_services.application_approve(application=app, actor=None)
    assert charge("approved").status_code in (200, 201)
    assert balance(person) == 90

    partner_services.partner_suspend(partner=partner_a, actor=None)
    assert charge("suspended").status_code in (401, 403)
    assert balance(person) == 90
