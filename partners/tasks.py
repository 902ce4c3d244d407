"""Celery tasks of the partners app. Thin: JSON arguments, retries and time limits here, the
work in partners services."""

from celery import Task, shared_task

from partners.oauth.backchannel import (
    AttemptOutcome,
    backchannel_logout_attempt,
    max_attempts,
    retry_delay_seconds,
)


@shared_task(
    bind=True,
    name="partners.backchannel_logout_deliver",
    # The attempt count is ours (BACKCHANNEL_LOGOUT_MAX_ATTEMPTS), not Celery's.
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
    retries_done = self.request.retries or 0
    final = retries_done + 1 >= max_attempts()
    outcome = backchannel_logout_attempt(delivery_id=delivery_id, final=final)
    if outcome == AttemptOutcome.RETRY:
        raise self.retry(countdown=retry_delay_seconds(retries_done=retries_done))
    return outcome.value
