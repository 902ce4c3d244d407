"""The arithmetic of a split, integers only, with no database access.

Rules (docs/settlement.md explains them with examples):

* Every partner amount is rounded down, once, on the exact sum of its parts; the platform takes
  what is left, so rounding never costs the user or the platform more than the charge.
* Precedence when the payouts would exceed the captured amount: supply costs first (the model
  vendor's price, then co-built capacity cost), then the app partner's revenue share, then the
  co-builder's revenue share. Each leg is capped at what the earlier legs left; the platform
  gets the remainder, which is never negative.
* A volume tier applies to the part of a capture that lies above its threshold: a capture that
  crosses a threshold is cut at it, each part earns its own rate, and the rounding happens once
  on the sum.
"""

from collections.abc import Sequence
from dataclasses import dataclass

BPS = 10_000
PER_MILLION = 1_000_000


@dataclass(frozen=True)
class Tier:
    threshold: int
    bps: int


def tiers_parse(raw: object) -> list[Tier]:
    """The tiers of an agreement as stored (already validated)."""
    if not isinstance(raw, list):
        return []
    return [Tier(threshold=int(item["from"]), bps=int(item["bps"])) for item in raw]


def tiered_share(*, spent_before: int, amount: int, base_bps: int, tiers: Sequence[Tier]) -> int:
    """The share of ``amount`` when ``spent_before`` was already spent in the period: the
    capture occupies [spent_before, spent_before + amount) of the period's spend; each band
    [threshold_i, threshold_i+1) of it earns its own rate. Rounded down once."""
    bands = [(0, base_bps), *((tier.threshold, tier.bps) for tier in tiers)]
    low, high = spent_before, spent_before + amount
    weighted = 0
    for index, (start, bps) in enumerate(bands):
        end = bands[index + 1][0] if index + 1 < len(bands) else None
        top = high if end is None else min(high, end)
        portion = top - max(low, start)
        if portion > 0:
            weighted += portion * bps
    return weighted // BPS


def tokens_cost(
    *,
    input_tokens: int,
    cached_input_tokens: int,
    output_tokens: int,
    input_per_million: int,
    cached_input_per_million: int,
    output_per_million: int,
) -> int:
    """What a supplier is owed for the tokens served, at its own per-million prices, rounded
    down once on the sum (the wallet rounds the user's cost up; the supplier's down)."""
    total = (
        input_tokens * input_per_million
        + cached_input_tokens * cached_input_per_million
        + output_tokens * output_per_million
    )
    return total // PER_MILLION


def legs_cap(*, amount: int, wanted: Sequence[int]) -> list[int]:
    """Cap each wanted payout, in order of precedence, at what the previous ones left."""
    left = amount
    paid = []
    for want in wanted:
        take = max(0, min(want, left))
        paid.append(take)
        left -= take
    return paid
