"""Settlement tasks. Thin: JSON arguments (ids and period strings), late acks so that a
worker lost mid-run leaves the message to be redelivered, retries with backoff; the work and
its exactly-once guarantee are in partners.settlement.services."""

from datetime import datetime
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from partners.settlement import selectors, services

# Late acks: a worker lost mid-run leaves the message to be redelivered; a database that went
# away is retried with backoff. The work itself is idempotent.
DB_TASK: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 5,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 10,
}


@shared_task(
    name="partners.settlement.close",
    **DB_TASK,
    soft_time_limit=240,
    time_limit=300,
    ignore_result=True,
)
def settlement_close(partner_id: int, period: str) -> int:
    """Close one partner's period (idempotent). Returns the statement id."""
    return services.settlement_statement_close(partner_id=partner_id, period=period).statement.pk


@shared_task(
    name="partners.settlement.run",
    **DB_TASK,
    soft_time_limit=1800,
    time_limit=2000,
    ignore_result=True,
)
def settlement_run(period: str) -> int:
    """Close a period for every partner in one run (idempotent). Returns how many statements
    it created."""
    results = services.settlement_run_execute(period=period)
    return sum(1 for result in results if result.created)


@shared_task(name="partners.settlement.close_due", acks_late=True, ignore_result=True)
def settlement_close_due(as_of: str | None = None) -> int:
    """Beat: queue a run for every recent period that some partner has no statement for.
    ``as_of`` (an ISO 8601 time with its offset) looks back from then instead of now, for
    catching up by hand after an outage longer than SETTLEMENT_CATCH_UP_DAYS."""
    now = timezone.now() if as_of is None else datetime.fromisoformat(as_of)
    if timezone.is_naive(now):
        raise ValueError("as_of needs a UTC offset")
    periods = sorted({period for _partner_id, period in selectors.settlement_due(now=now)})
    for period in periods:
        settlement_run.delay(period)
    return len(periods)
