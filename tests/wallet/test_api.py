"""The charging API, driven over HTTP with OAuth access tokens."""

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone
from oauth2_provider.models import AccessToken
from rest_framework.test import APIClient

from tests.factories import UserFactory, WalletAppFactory
from tests.wallet.conftest import balance, fund, held
from wallet.models import Charge, Hold

pytestmark = pytest.mark.django_db

_tokens = itertools.count()


def token_for(user, app, scope="wallet:charge", expired=False) -> str:
    value = f"test-access-token-{next(_tokens)}-{user.pk if user else 'none'}"
    AccessToken.objects.create(
        user=user,
        application=app,
        token=value,
        expires=timezone.now() + (timedelta(minutes=-1) if expired else timedelta(hours=1)),
        scope=scope,
    )
    return value


@pytest.fixture
def api(user, app, price):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, app)}")
    return client


def post(api, url, data=None, key="k-1"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api.post(url, data or {}, format="json", headers=headers)


def test_balance(api, user):
    fund(user, 1234)
    response = api.get("/api/wallet/balance/")
    assert response.status_code == 200
    assert response.json() == {
        "balance": 1234,
        "held": 0,
        "allowance": {"monthly_limit": 1_000_000, "used": 0, "remaining": 1_000_000},
    }


def test_authentication_and_scope_are_required(user, app, price):
    client = APIClient()
    assert client.get("/api/wallet/balance/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, app, scope='openid')}")
    response = client.get("/api/wallet/balance/")
    assert response.status_code == 403
    assert set(response.json()["error"]) == {"code", "message", "details"}
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, app, expired=True)}")
    assert client.get("/api/wallet/balance/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(None, app)}")
    response = client.get("/api/wallet/balance/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "user_token_required"


def test_hold_capture_flow(api, user):
    fund(user, 10_000)
    created = post(api, "/api/wallet/holds/", {"amount": 3000}, key="h-1")
    assert created.status_code == 201, created.json()
    hold_id = created.json()["id"]
    assert created.json()["status"] == "open"
    assert (balance(user), held(user)) == (7000, 3000)
    usage = {"model": "gpt-test", "input_tokens": 1000, "output_tokens": 200}
    captured = post(api, f"/api/wallet/holds/{hold_id}/capture/", usage, key="c-1")
    assert captured.status_code == 201, captured.json()
    body = captured.json()
    assert (body["cost"], body["amount"], body["hold"], body["model"]) == (
        1400,
        1400,
        hold_id,
        "gpt-test",
    )
    assert body["price_version"]["input_per_million"] == 1_000_000
    assert (balance(user), held(user)) == (8600, 0)
    # A replay returns the same charge; a second capture with a new key is refused.
    replay = post(api, f"/api/wallet/holds/{hold_id}/capture/", usage, key="c-1")
    assert replay.json()["id"] == body["id"]
    again = post(api, f"/api/wallet/holds/{hold_id}/capture/", usage, key="c-2")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "hold_not_open"
    assert api.get(f"/api/wallet/holds/{hold_id}/").json()["capture"] == body["id"]


def test_release(api, user):
    fund(user, 500)
    hold_id = post(api, "/api/wallet/holds/", {"amount": 300}, key="h").json()["id"]
    response = post(api, f"/api/wallet/holds/{hold_id}/release/", key="r")
    assert response.status_code == 200
    assert response.json()["status"] == "released"
    assert balance(user) == 500


def test_insufficient_balance_is_402(api, user):
    fund(user, 10)
    response = post(api, "/api/wallet/holds/", {"amount": 11})
    assert response.status_code == 402
    assert response.json()["error"] == {
        "code": "insufficient_balance",
        "message": "The wallet balance is too low.",
        "details": {"available": 10, "required": 11},
    }
    response = post(api, "/api/wallet/charges/", {"model": "gpt-test", "input_tokens": 11})
    assert response.status_code == 402


def test_idempotency_key_header_rules(api, user):
    fund(user, 1000)
    missing = post(api, "/api/wallet/charges/", {"model": "gpt-test"}, key=None)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "idempotency_key_required"
    for bad in ["", "x" * 256, "caf\u00e9"]:
        response = api.post(
            "/api/wallet/charges/",
            {"model": "gpt-test"},
            format="json",
            headers={"Idempotency-Key": bad},
        )
        assert response.status_code == 400, bad
        assert response.json()["error"]["code"] in ("invalid_idempotency_key",)
    first = post(api, "/api/wallet/charges/", {"model": "gpt-test", "input_tokens": 5}, key="a")
    replay = post(api, "/api/wallet/charges/", {"model": "gpt-test", "input_tokens": 5}, key="a")
    assert first.status_code == replay.status_code == 201
    assert first.json()["id"] == replay.json()["id"]
    conflict = post(api, "/api/wallet/charges/", {"model": "gpt-test", "input_tokens": 6}, key="a")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert balance(user) == 995


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gpt-test", "input_tokens": -1},
        {"model": "gpt-test", "input_tokens": 10**12 + 1},
        {"model": "gpt-test", "input_tokens": 1.5},
        {"model": "gpt-test", "input_tokens": "5"},
        {"model": "gpt-test", "output_tokens": True},
        {"input_tokens": 5},
    ],
)
def test_bad_usage_is_400(api, user, body):
    fund(user, 1000)
    response = post(api, "/api/wallet/charges/", body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert balance(user) == 1000


def test_unknown_model_is_422(api, user):
    fund(user, 1000)
    response = post(api, "/api/wallet/charges/", {"model": "nope", "input_tokens": 5})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_model"


def test_allowance_exceeded_is_403(api, user, app):
    from wallet import services

    services.allowance_set(user=user, app=app, monthly_limit=10)
    fund(user, 1000)
    response = post(api, "/api/wallet/charges/", {"model": "gpt-test", "input_tokens": 11})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "allowance_exceeded"


def test_refunds(api, user):
    fund(user, 1000)
    charge_id = post(
        api, "/api/wallet/charges/", {"model": "gpt-test", "input_tokens": 100}
    ).json()["id"]
    first = post(api, f"/api/wallet/charges/{charge_id}/refunds/", {"amount": 60}, key="r1")
    assert first.status_code == 201
    too_much = post(api, f"/api/wallet/charges/{charge_id}/refunds/", {"amount": 41}, key="r2")
    assert too_much.status_code == 409
    assert too_much.json()["error"]["details"] == {"refundable": 40, "requested": 41}
    assert api.get(f"/api/wallet/charges/{charge_id}/").json()["refunded_amount"] == 60
    assert balance(user) == 960


def test_other_apps_and_users_objects_are_404(api, user, price):
    fund(user, 1000)
    hold_id = post(api, "/api/wallet/holds/", {"amount": 100}, key="h").json()["id"]
    other_app = WalletAppFactory()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, other_app)}")
    assert other.get(f"/api/wallet/holds/{hold_id}/").status_code == 404
    assert post(other, f"/api/wallet/holds/{hold_id}/release/", key="x").status_code == 404
    assert (
        post(other, "/api/wallet/holds/999999/capture/", {"model": "gpt-test"}).status_code == 404
    )
    assert Hold.objects.get(pk=hold_id).status == "open"


def test_batch_usage_with_per_record_results_and_replay(api, user):
    fund(user, 1000)
    records = [
        {"model": "gpt-test", "input_tokens": 100, "idempotency_key": f"r{i}"} for i in range(3)
    ]
    records.append({"model": "gpt-test", "input_tokens": "bad"})
    records.append({"model": "gpt-test", "input_tokens": 900})  # more than is left
    records.append({"model": "gpt-test", "output_tokens": 50})  # no key: derived from the header
    response = post(api, "/api/wallet/usage/batch/", {"records": records}, key="batch-1")
    assert response.status_code == 200
    body = response.json()
    assert (body["charged"], body["failed"]) == (4, 2)
    statuses = [(r["status"], r["error"] and r["error"]["code"]) for r in body["results"]]
    assert statuses == [
        ("charged", None),
        ("charged", None),
        ("charged", None),
        ("error", "invalid_request"),
        ("error", "insufficient_balance"),
        ("charged", None),
    ]
    assert body["results"][5]["idempotency_key"] == "batch-1#5"
    assert balance(user) == 600
    # Replaying the batch charges nothing twice.
    replay = post(api, "/api/wallet/usage/batch/", {"records": records}, key="batch-1")
    assert replay.json()["charged"] == 4
    assert balance(user) == 600
    assert Charge.objects.count() == 4


def test_batch_size_limit(api, user, settings):
    records = [{"model": "gpt-test", "input_tokens": 1}] * 1001
    response = post(api, "/api/wallet/usage/batch/", {"records": records})
    assert response.status_code == 400
    assert post(api, "/api/wallet/usage/batch/", {"records": []}).status_code == 400
    assert post(api, "/api/wallet/usage/batch/", {"records": "x"}).status_code == 400


def test_full_batch_of_a_thousand_records(api, user):
    fund(user, 10_000)
    records = [{"model": "gpt-test", "input_tokens": 10} for _ in range(1000)]
    response = post(api, "/api/wallet/usage/batch/", {"records": records}, key="big")
    assert response.json()["charged"] == 1000
    assert balance(user) == 0


def test_openapi_schema_documents_the_wallet_api(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    text = response.content.decode()
    for path in ["/api/wallet/holds/", "/api/wallet/usage/batch/", "/api/wallet/balance/"]:
        assert path in text
    assert "Idempotency-Key" in text


def test_another_users_token_cannot_see_a_charge(api, user, app):
    fund(user, 1000)
    charge_id = post(api, "/api/wallet/charges/", {"model": "gpt-test", "input_tokens": 1}).json()[
        "id"
    ]
    stranger = UserFactory()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(stranger, app)}")
    assert other.get(f"/api/wallet/charges/{charge_id}/").status_code == 404
    assert (
        post(other, f"/api/wallet/charges/{charge_id}/refunds/", {"amount": 1}).status_code == 404
    )


def test_hold_metadata_is_kept_small(api, user):
    fund(user, 100)
    response = post(api, "/api/wallet/holds/", {"amount": 1, "metadata": {"x": "y" * 5000}})
    assert response.status_code == 400
    assert "metadata" in response.json()["error"]["details"]
    ok = post(api, "/api/wallet/holds/", {"amount": 1, "metadata": {"request": "abc"}}, key="m")
    assert ok.status_code == 201
    assert Hold.objects.get(pk=ok.json()["id"]).metadata == {"request": "abc"}


def test_balance_of_a_user_without_a_wallet_is_zero(api, user):
    response = api.get("/api/wallet/balance/")
    assert response.json()["balance"] == 0
    assert response.json()["held"] == 0


def test_a_deactivated_users_token_cannot_charge(api, user):
    fund(user, 100)
    user.is_active = False
    user.save(update_fields=["is_active"])
    response = post(api, "/api/wallet/charges/", {"model": "gpt-test", "input_tokens": 1})
    assert response.status_code in (401, 403)
    assert balance(user) == 100


def test_charge_bodies_are_what_the_charge_serializer_gives(api, user):
    """The charge endpoints build their answer directly (serializers.charge_represent); it
    stays what ChargeSerializer gives, field for field."""
    import json

    from rest_framework.renderers import JSONRenderer

    from wallet.api.serializers import ChargeSerializer

    def serialized(charge_id: int) -> dict:
        data = ChargeSerializer(Charge.objects.get(pk=charge_id)).data
        return json.loads(JSONRenderer().render(data))

    fund(user, 10_000)
    usage = {"model": "gpt-test", "input_tokens": 1000, "cached_input_tokens": 7}
    charged = post(api, "/api/wallet/charges/", usage, key="r-1")
    assert charged.status_code == 201
    assert charged.json() == serialized(charged.json()["id"])
    assert post(api, "/api/wallet/charges/", usage, key="r-1").json() == charged.json()
    hold_id = post(api, "/api/wallet/holds/", {"amount": 3000}, key="r-2").json()["id"]
    captured = post(api, f"/api/wallet/holds/{hold_id}/capture/", usage, key="r-3").json()
    assert captured["hold"] == hold_id
    assert captured == serialized(captured["id"])
    refund = {"amount": 5}
    refunded = post(api, f"/api/wallet/charges/{captured['id']}/refunds/", refund, key="r-4")
    assert refunded.status_code == 201
    fetched = api.get(f"/api/wallet/charges/{captured['id']}/").json()
    assert fetched["refunded_amount"] == 5
    assert fetched == serialized(captured["id"])


@pytest.mark.parametrize(
    ("body", "details"),
    [
        ({"input_tokens": 1}, {"model": ["This field is required."]}),
        (
            {"model": "gpt-test", "input_tokens": "1"},
            {"input_tokens": ["A JSON integer is required."]},
        ),
        ([1, 2], {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}),
    ],
)
def test_bad_usage_details_name_the_fields(api, user, body, details):
    for _attempt in range(2):  # the same answer from the validator kept between requests
        response = api.post(
            "/api/wallet/charges/", body, format="json", headers={"Idempotency-Key": "d"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["details"] == details
