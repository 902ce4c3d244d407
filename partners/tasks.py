"""Celery tasks of the partners app. Thin: JSON arguments, retries and time limits here, the
work in partners services."""

from datetime import timedelta

from celery import Task, shared_task

from partners.oauth.backchannel import (
    AttemptOutcome,
    backchannel_logout_attempt,
    backchannel_logout_requeue_stale,
    retry_delay_seconds,
)
from partners.oauth.services import oauth_expired_prune


@shared_task(
    bind=True,
    name="partners.backchannel_logout_deliver",
    # The attempt count lives on the delivery row (BACKCHANNEL_LOGOUT_MAX_ATTEMPTS), so that a
    # requeued task carries on where the lost one stopped; Celery does not count for us.
    max_retries=None,
    # One POST with a 5 s connect and a 5 s read timeout, and two short transactions.
    soft_time_limit=30,
    time_limit=45,
    acks_late=True,
    ignore_result=True,
)
def backchannel_logout_deliver(self: Task, delivery_id: int) -> str:
    """Deliver one back-channel logout token; retry later with exponential backoff while the
    app answers with a temporary error."""
    outcome, attempts = backchannel_logout_attempt(delivery_id=delivery_id)
    if outcome == AttemptOutcome.RETRY:
        raise self.retry(countdown=retry_delay_seconds(retries_done=attempts - 1))
    return outcome.value


@shared_task(
    name="partners.backchannel_logout_requeue_stale",
    soft_time_limit=60,
    time_limit=90,
    ignore_result=True,
)
def backchannel_logout_requeue_stale_task(minutes: int = 30) -> int:
    """Beat: queue again back-channel logouts whose task was lost."""
    return backchannel_logout_requeue_stale(older_than=timedelta(minutes=minutes))


@shared_task(
    name="partners.oauth_cleanup",
    soft_time_limit=600,
    time_limit=660,
    ignore_result=True,
)
def oauth_cleanup_task(code_days: float = 2.0) -> dict[str, int]:
    """Beat: delete expired tokens and grants, authorization code records no live token
    needs (kept ``code_days`` for replay detection) and ended client authentication failure
    windows."""
    return oauth_expired_prune(code_older_than_seconds=int(code_days * 86400))
