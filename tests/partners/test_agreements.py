"""Agreement validation through the service and the admin add form: nothing is written when
the terms are inconsistent."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from partners.agreements import services as agreements
from partners.agreements.models import Agreement
from partners.agreements.split import legs_cap, tiered_share, tiers_parse, tokens_cost
from tests.factories import PartnerFactory, WalletAppFactory

pytestmark = pytest.mark.django_db

RS = Agreement.Kind.REVENUE_SHARE
CP = Agreement.Kind.CAPABILITY_PURCHASE
CB = Agreement.Kind.CO_BUILDING


@pytest.fixture
def partner(db):
    return PartnerFactory()


# One base instant for the module: two calls of now() may fall in different seconds.
BASE = timezone.now().replace(microsecond=0)


def day(n: int):
    return BASE + timedelta(days=n)


def errors_of(call) -> dict:
    with pytest.raises(ValidationError) as raised:
        call()
    return raised.value.message_dict


def test_versions_of_one_subject_may_follow_each_other_but_not_overlap(partner):
    first = agreements.agreement_create(
        partner_id=partner.pk, kind=RS, share_bps=5000, effective_from=day(0), effective_to=day(10)
    )
    second = agreements.agreement_create(
        partner_id=partner.pk, kind=RS, share_bps=6000, effective_from=day(10)
    )
    assert (first.version, second.version) == (1, 2)

    errors = errors_of(
        lambda: agreements.agreement_create(
            partner_id=partner.pk,
            kind=RS,
            share_bps=7000,
            effective_from=day(5),
            effective_to=day(6),
        )
    )

    assert "effective_from" in errors
    assert Agreement.objects.count() == 2


def test_supersede_ends_the_current_version_where_the_new_one_starts(partner):
    first = agreements.agreement_create(
        partner_id=partner.pk, kind=RS, share_bps=5000, effective_from=day(0)
    )
    second = agreements.agreement_create(
        partner_id=partner.pk, kind=RS, share_bps=6000, effective_from=day(3), supersede=True
    )
    first.refresh_from_db()
    assert first.effective_to == second.effective_from == day(3)


def test_a_failed_supersede_leaves_the_current_version_untouched(partner):
    first = agreements.agreement_create(
        partner_id=partner.pk, kind=RS, share_bps=5000, effective_from=day(0)
    )
    errors_of(
        lambda: agreements.agreement_create(
            partner_id=partner.pk, kind=RS, share_bps=12_000, effective_from=day(3), supersede=True
        )
    )
    first.refresh_from_db()
    assert first.effective_to is None
    assert Agreement.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": RS, "share_bps": 10_001}, "share_bps"),
        ({"kind": RS, "share_bps": -1}, "share_bps"),
        (
            {
                "kind": RS,
                "share_bps": 7000,
                "tiers": [{"from": 100, "bps": 8000}, {"from": 100, "bps": 9000}],
            },
            "tiers",
        ),
        (
            {
                "kind": RS,
                "share_bps": 7000,
                "tiers": [{"from": 200, "bps": 8000}, {"from": 100, "bps": 9000}],
            },
            "tiers",
        ),
        ({"kind": RS, "share_bps": 7000, "tiers": [{"from": 0, "bps": 8000}]}, "tiers"),
        ({"kind": RS, "share_bps": 7000, "tiers": [{"from": 100, "bps": 10_001}]}, "tiers"),
        ({"kind": RS, "share_bps": 7000, "tiers": [{"from": "100", "bps": 8000}]}, "tiers"),
        ({"kind": RS, "share_bps": 7000, "input_per_million": 5}, "input_per_million"),
        ({"kind": CP, "model_name": "m1"}, "input_per_million"),
        ({"kind": CP, "input_per_million": -5}, "input_per_million"),
        ({"kind": CP, "input_per_million": 5, "share_bps": 100}, "share_bps"),
        ({"kind": CB, "input_per_million": 5, "committed_amount": 100}, "model_name"),
        ({"kind": CB, "model_name": "m1", "input_per_million": 5}, "committed_amount"),
        (
            {"kind": CB, "model_name": "m1", "input_per_million": 5, "committed_amount": -1},
            "committed_amount",
        ),
        ({"kind": RS, "share_bps": 10, "effective_to": "start"}, "effective_to"),
    ],
)
def test_inconsistent_terms_are_refused_and_nothing_is_written(partner, fields, field):
    if fields.get("effective_to") == "start":
        fields = {**fields, "effective_to": day(0)}

    errors = errors_of(
        lambda: agreements.agreement_create(partner_id=partner.pk, effective_from=day(0), **fields)
    )

    assert field in errors
    assert not Agreement.objects.exists()


def test_an_app_of_another_partner_is_refused(partner):
    foreign_app = WalletAppFactory()
    errors = errors_of(
        lambda: agreements.agreement_create(
            partner_id=partner.pk,
            kind=RS,
            app_id=foreign_app.pk,
            share_bps=10,
            effective_from=day(0),
        )
    )
    assert "app" in errors


def test_shares_that_could_stack_above_the_charge_are_refused(partner):
    builder = PartnerFactory()
    agreements.agreement_create(
        partner_id=partner.pk,
        kind=RS,
        share_bps=7000,
        tiers=[{"from": 1000, "bps": 9000}],
        effective_from=day(0),
    )

    errors = errors_of(
        lambda: agreements.agreement_create(
            partner_id=builder.pk,
            kind=CB,
            model_name="m1",
            input_per_million=1,
            committed_amount=10,
            share_bps=1500,  # 9000 (top tier) + 1500 > 10000
            effective_from=day(1),
        )
    )
    assert "share_bps" in errors
    # After the revenue share ends, the same terms are fine.
    agreements.agreement_end(agreement_id=Agreement.objects.get().pk, effective_to=day(1))
    agreements.agreement_create(
        partner_id=builder.pk,
        kind=CB,
        model_name="m1",
        input_per_million=1,
        committed_amount=10,
        share_bps=1500,
        effective_from=day(1),
    )


def test_an_agreement_is_shortened_never_extended(partner):
    agreement = agreements.agreement_create(
        partner_id=partner.pk, kind=RS, share_bps=10, effective_from=day(0), effective_to=day(5)
    )
    errors_of(lambda: agreements.agreement_end(agreement_id=agreement.pk, effective_to=day(6)))
    agreements.agreement_end(agreement_id=agreement.pk, effective_to=day(4))
    agreement.refresh_from_db()
    assert agreement.effective_to == day(4)


def test_split_arithmetic_rounds_down_once_and_caps_in_precedence_order():
    tiers = tiers_parse([{"from": 1500, "bps": 8500}])
    assert tiered_share(spent_before=1000, amount=1000, base_bps=7000, tiers=tiers) == 775
    assert tiered_share(spent_before=0, amount=3, base_bps=3333, tiers=[]) == 0  # 0.9999
    assert tiered_share(spent_before=1499, amount=2, base_bps=7000, tiers=tiers) == 1  # 1.55
    cost = tokens_cost(
        input_tokens=1,
        cached_input_tokens=1,
        output_tokens=1,
        input_per_million=999_999,
        cached_input_per_million=0,
        output_per_million=0,
    )
    assert cost == 0
    assert legs_cap(amount=100, wanted=[70, 50, 10]) == [70, 30, 0]


# The admin: the add form shows the service's errors and writes nothing -------------------------


def add_form(partner, **overrides) -> dict:
    data = {
        "partner": partner.pk,
        "kind": RS,
        "app": "",
        "model_name": "",
        "effective_from_0": day(0).strftime("%Y-%m-%d"),
        "effective_from_1": "00:00:00",
        "effective_to_0": "",
        "effective_to_1": "",
        "share_bps": "7000",
        "tiers": "[]",
        "input_per_million": "0",
        "cached_input_per_million": "0",
        "output_per_million": "0",
        "committed_amount": "",
        "note": "",
    }
    data.update(overrides)
    return data


def test_admin_adds_a_version_through_the_service(staff_client, partner):
    response = staff_client.post(
        reverse("admin:partners_agreement_add"),
        add_form(partner, tiers='[{"from": 1000000, "bps": 8500}]'),
    )
    assert response.status_code == 302, response.content[:2000]
    agreement = Agreement.objects.get()
    assert (agreement.version, agreement.share_bps) == (1, 7000)
    assert agreement.created_by is not None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"share_bps": "12000"}, "10000"),
        (
            {"tiers": '[{"from": 500, "bps": 8000}, {"from": 400, "bps": 9000}]'},
            "strictly increasing",
        ),
    ],
)
def test_admin_add_form_shows_errors_and_writes_nothing(staff_client, partner, overrides, message):
    response = staff_client.post(
        reverse("admin:partners_agreement_add"), add_form(partner, **overrides)
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Agreement.objects.exists()


def test_admin_refuses_an_overlapping_version(staff_client, partner):
    agreements.agreement_create(
        partner_id=partner.pk, kind=RS, share_bps=10, effective_from=day(-1)
    )
    response = staff_client.post(reverse("admin:partners_agreement_add"), add_form(partner))
    assert response.status_code == 200
    assert "in force in this period" in response.content.decode()
    assert Agreement.objects.count() == 1
