"""Settlement periods: a calendar day or a calendar month, in UTC, as [start, end)."""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from partners.settlement.models import Statement

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


class InvalidPeriod(ValueError):
    """The period is not YYYY-MM or YYYY-MM-DD."""


@dataclass(frozen=True)
class Period:
    kind: str
    start: date
    end: date

    @property
    def label(self) -> str:
        return (
            self.start.strftime("%Y-%m") if self.kind == Statement.Period.MONTH else str(self.start)
        )

    @property
    def starts_at(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=UTC)

    @property
    def ends_at(self) -> datetime:
        return datetime.combine(self.end, time.min, tzinfo=UTC)


def month_after(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def period_parse(value: str) -> Period:
    """``2026-11`` (a month) or ``2026-11-27`` (a day). Raises InvalidPeriod."""
    value = (value or "").strip()
    try:
        if match := _MONTH.match(value):
            start = date(int(match[1]), int(match[2]), 1)
            return Period(Statement.Period.MONTH, start, month_after(start))
        if match := _DAY.match(value):
            start = date(int(match[1]), int(match[2]), int(match[3]))
            return Period(Statement.Period.DAY, start, start + timedelta(days=1))
    except ValueError:
        pass
    raise InvalidPeriod(f"not a period (YYYY-MM or YYYY-MM-DD): {value!r}")


def period_of(*, kind: str, start: date) -> Period:
    return period_parse(start.strftime("%Y-%m") if kind == Statement.Period.MONTH else str(start))
