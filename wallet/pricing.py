"""Pricing: the one place where usage becomes a cost in platform tokens.

Prices are integers (platform tokens per million tokens). The cost of a usage is

    ceil((input * p_input + cached * p_cached + output * p_output) / 1_000_000)

computed with integers only. Rounding is always up, once, on the sum: a request never costs
less than its exact price, and rounding happens once per charge rather than per component.
Input and cached-input counts are disjoint: ``input_tokens`` are the uncached ones.
"""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from wallet.exceptions import InvalidRequest, UnknownModel
from wallet.models import Price, PriceModel

PER = 1_000_000


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


def usage_validate(*, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> Usage:
    """Return the usage if every count is an integer in [0, WALLET_MAX_TOKEN_COUNT]; raise
    InvalidRequest otherwise (the cap keeps every product far inside a 64-bit integer)."""
    cap = settings.WALLET_MAX_TOKEN_COUNT
    counts = {
        "input_tokens": input_tokens,
        "cached_input_tokens": cached_input_tokens,
        "output_tokens": output_tokens,
    }
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= cap:
            raise InvalidRequest(
                _("%(field)s must be an integer between 0 and %(cap)s.")
                % {"field": name, "cap": cap},
                details={"field": name},
            )
    return Usage(input_tokens, cached_input_tokens, output_tokens)


def cost_compute(*, price: Price, usage: Usage) -> int:
    """The cost in platform tokens, rounded up (see the module docstring)."""
    total = (
        usage.input_tokens * price.input_per_million
        + usage.cached_input_tokens * price.cached_input_per_million
        + usage.output_tokens * price.output_per_million
    )
    return -(-total // PER)


def price_in_force(*, model_name: str, at: datetime | None = None) -> Price:
    """The price version of an active model in force at ``at`` (now by default)."""
    at = at or timezone.now()
    price = (
        Price.objects.select_related("model", "model__vendor")
        .filter(Q(model__name=model_name) & Q(model__is_active=True), effective_from__lte=at)
        .order_by("-effective_from")
        .first()
    )
    if price is None:
        raise UnknownModel(details={"model": model_name})
    return price


def price_model_get(*, name: str) -> PriceModel:
    try:
        return PriceModel.objects.get(name=name)
    except PriceModel.DoesNotExist:
        raise UnknownModel(details={"model": name}) from None
