"""POST /api/wallet/usage/batch/ over HTTP: plainly valid records skip the serializers, every
other record and body gets exactly the serializers' answer, and the charges read as the
charge endpoint shows them."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from partners.agreements.models import SplitLine
from tests.factories import PartnerFactory, PriceFactory, UserFactory, WalletAppFactory
from tests.wallet.conftest import balance, fund
from tests.wallet.test_api import post, token_for
from tests.wallet.test_batch import agreements_for
from wallet import services
from wallet.api import serializers as s
from wallet.audit import wallet_audit_run
from wallet.models import Charge

pytestmark = pytest.mark.django_db

URL = "/api/wallet/usage/batch/"


@pytest.fixture
def api(user, app, price):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, app)}")
    return client


def as_json(value):
    return json.loads(JSONRenderer().render(value))


def serializer_answer(raw):
    """What the record serializer makes of ``raw``: (validated model and counts, or None;
    the error details, or None)."""
    serializer = s.BatchRecordSerializer(data=raw)
    if serializer.is_valid():
        data = dict(serializer.validated_data)
        data.pop("idempotency_key", None)
        return data, None
    return None, as_json(serializer.errors)


UNUSUAL_RECORDS = [
    {"model": " gpt-test ", "input_tokens": 3},  # stripped: a valid gpt-test record
    {"model": "gpt-test", "input_tokens": 3, "idempotency_key": 5},  # a number is a string
    {"model": "gpt-test", "input_tokens": 3, "idempotency_key": " spaced "},
    {"model": "gpt-test", "input_tokens": 3, "idempotency_key": "ключ"},  # not ASCII
    {"model": "gpt-test", "input_tokens": 3, "note": "ignored"},
    {"model": "gpt-tést", "input_tokens": 3},  # not ASCII: unknown model
    {"model": 5, "input_tokens": 3},  # a string "5": unknown model
    {"model": None},
    {"model": ""},
    {"model": "   "},
    {"model": "x" * 121},
    {"model": "gpt\x00test"},
    {"model": "gpt-test", "input_tokens": "3"},
    {"model": "gpt-test", "input_tokens": 3.0},
    {"model": "gpt-test", "input_tokens": True},
    {"model": "gpt-test", "input_tokens": None},
    {"model": "gpt-test", "input_tokens": -1},
    {"model": "gpt-test", "output_tokens": 10**12 + 1},
    {"model": "gpt-test", "cached_input_tokens": [1]},
    {"model": "gpt-test", "idempotency_key": ""},
    {"model": "gpt-test", "idempotency_key": None},
    {"model": "gpt-test", "idempotency_key": "k" * 256},
    {"model": "gpt-test", "idempotency_key": "tab\tinside"},
    {"input_tokens": 3},
]


def test_records_that_are_not_plainly_valid_get_the_serializers_answer(api, user):
    fund(user, 10_000)
    records = [{"model": "gpt-test", "input_tokens": 1}, *UNUSUAL_RECORDS]

    body = post(api, URL, {"records": records}, key="odd").json()

    for index, (raw, result) in enumerate(zip(records, body["results"], strict=True)):
        data, errors = serializer_answer(raw)
        key = raw.get("idempotency_key")
        expected_key = key if isinstance(key, str) and key else f"odd#{index}"
        assert result["index"] == index
        assert result["idempotency_key"] == expected_key, raw
        if errors is not None:
            assert result == {
                "index": index,
                "idempotency_key": expected_key,
                "status": "error",
                "charge": None,
                "error": {
                    "code": "invalid_request",
                    "message": "The record is not valid.",
                    "details": errors,
                },
            }, raw
        elif data["model"] != "gpt-test":
            assert result["error"]["code"] == "unknown_model", raw
        elif expected_key == "tab\tinside":
            assert result["error"]["code"] == "invalid_request", raw  # not printable
        else:
            assert result["status"] == "charged", raw
            charge = result["charge"]
            assert (charge["model"], charge["input_tokens"]) == (
                data["model"],
                data["input_tokens"],
            ), raw
    charged = [r["charge"]["id"] for r in body["results"] if r["status"] == "charged"]
    assert len(charged) == body["charged"] == 6
    assert balance(user) == 10_000 - 1 - 5 * 3
    assert Charge.objects.count() == 6


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"records": "x"},
        {"records": None},
        {"records": []},
        {"records": [1]},
        {"records": [{"model": "gpt-test"}, "x"]},
        {"records": [{"model": "gpt-test"}] * 1001},
        [{"model": "gpt-test"}],
    ],
)
def test_a_body_that_is_not_a_list_of_records_gets_the_serializers_answer(api, data):
    serializer = s.BatchSerializer(data=data)
    assert not serializer.is_valid()

    response = post(api, URL, data)

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalid_request",
            "message": "The request is not valid.",
            "details": as_json(serializer.errors),
        }
    }


def test_new_and_replayed_charges_read_as_the_charge_endpoint_shows_them(api, user, price):
    fund(user, 10_000)
    earlier = post(api, "/api/wallet/charges/", {"model": "gpt-test", "input_tokens": 5}, key="e")
    # A newer price version: the earlier charge keeps its own.
    PriceFactory(model=price.model, effective_from=timezone.now() - timedelta(minutes=1))
    records = [
        {"model": "gpt-test", "input_tokens": 5, "idempotency_key": "e"},
        {"model": "gpt-test", "input_tokens": 10, "output_tokens": 2},
        {"model": "gpt-test", "cached_input_tokens": 100},
    ]

    body = post(api, URL, {"records": records}, key="mixed").json()

    assert [r["status"] for r in body["results"]] == ["charged"] * 3
    assert body["results"][0]["charge"] == earlier.json()
    versions = {r["charge"]["price_version"]["id"] for r in body["results"]}
    assert len(versions) == 2
    for result in body["results"]:
        charge = result["charge"]
        assert charge == api.get(f"/api/wallet/charges/{charge['id']}/").json()
    replay = post(api, URL, {"records": records}, key="mixed").json()
    assert replay == body


def test_a_full_batch_with_agreements_in_a_bounded_number_of_queries(
    django_assert_max_num_queries,
):
    app_partner, vendor = PartnerFactory(), PartnerFactory()
    PriceFactory(model__name="shared", model__vendor=vendor)
    agreements_for(app_partner=app_partner, vendor=vendor, model_name="shared")
    user, app = UserFactory(), WalletAppFactory(partner=app_partner)
    fund(user, 10**7)
    services.allowance_set(user=user, app=app, monthly_limit=10**7)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, app)}")
    records = [
        {"model": "shared", "input_tokens": 1000 + n, "output_tokens": n % 50} for n in range(1000)
    ]

    with django_assert_max_num_queries(60):
        body = post(client, URL, {"records": records}, key="full").json()

    assert (body["charged"], body["failed"]) == (1000, 0)
    assert SplitLine.objects.filter(app_id=app.pk).count() == 4000
    total = sum(r["charge"]["amount"] for r in body["results"])
    assert balance(user) == 10**7 - total
    assert wallet_audit_run().ok


def test_the_garbage_collector_runs_again_after_a_batch(api, user):
    # The view pauses the collector while it works; whatever the outcome, it resumes after.
    import gc

    fund(user, 100)
    assert (
        post(api, URL, {"records": [{"model": "gpt-test", "input_tokens": 1}]}).status_code == 200
    )
    assert gc.isenabled()
    assert post(api, URL, {"records": []}, key="k-2").status_code == 400
    assert gc.isenabled()
    gc.disable()
    try:
        assert post(api, URL, {"records": [{"model": "gpt-test"}]}, key="k-3").status_code == 200
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
