from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import PriceFactory, PriceModelFactory
from wallet.exceptions import InvalidRequest, UnknownModel
from wallet.models import Price
from wallet.pricing import cost_compute, price_in_force, usage_validate

pytestmark = pytest.mark.django_db


def _cost(price: Price, i: int, c: int, o: int) -> int:
    return cost_compute(
        price=price,
        usage=usage_validate(input_tokens=i, cached_input_tokens=c, output_tokens=o),
    )


def test_cost_sums_components_and_rounds_up_once():
    price = Price(input_per_million=3, cached_input_per_million=1, output_per_million=7)
    # 1000*3 + 1000*1 + 1000*7 = 11000 -> 11000 / 1e6 = 0.011 -> 1
    assert _cost(price, 1000, 1000, 1000) == 1
    # exact multiples do not round
    assert _cost(price, 1_000_000, 0, 0) == 3
    # one unit over a multiple rounds up
    big = Price(input_per_million=1_000_001, cached_input_per_million=0, output_per_million=0)
    assert _cost(big, 1, 0, 0) == 2
    assert _cost(price, 0, 0, 0) == 0


def test_cost_is_exact_at_the_largest_counts():
    cap = 10**12
    price = Price(input_per_million=10**9, cached_input_per_million=10**9, output_per_million=10**9)
    assert _cost(price, cap, cap, cap) == 3 * cap * 10**9 // 10**6


@pytest.mark.parametrize("bad", [-1, 10**12 + 1, 1.5, "10", True, None])
def test_token_counts_out_of_range_are_refused(bad):
    with pytest.raises(InvalidRequest):
        usage_validate(input_tokens=bad, cached_input_tokens=0, output_tokens=0)


def test_price_in_force_follows_effective_dates():
    model = PriceModelFactory(name="versioned")
    now = timezone.now()
    old = PriceFactory(model=model, effective_from=now - timedelta(days=10), input_per_million=5)
    new = PriceFactory(model=model, effective_from=now - timedelta(days=1), input_per_million=7)
    PriceFactory(model=model, effective_from=now + timedelta(days=1), input_per_million=9)
    assert price_in_force(model_name="versioned") == new
    assert price_in_force(model_name="versioned", at=now - timedelta(days=5)) == old
    with pytest.raises(UnknownModel):
        price_in_force(model_name="versioned", at=now - timedelta(days=30))


def test_unknown_and_inactive_models_have_no_price():
    PriceFactory(model__name="retired", model__is_active=False)
    with pytest.raises(UnknownModel):
        price_in_force(model_name="retired")
    with pytest.raises(UnknownModel):
        price_in_force(model_name="nope")
