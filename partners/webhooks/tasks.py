"""Celery tasks for webhooks. Thin: ids as arguments, retries and time limits here, the work in
partners.webhooks.services."""

from datetime import timedelta

from celery import Task, shared_task
from django.utils import timezone

from partners.webhooks.models import WebhookDelivery
from partners.webhooks.services import AttemptOutcome, retry_delay_seconds, webhook_delivery_attempt

# A pending delivery this far past its next attempt lost its task (a broker restart): requeue.
OVERDUE = timedelta(minutes=10)


@shared_task(
    bind=True,
    name="partners.webhook_deliver",
    # The attempt count is ours (WEBHOOKS_RETRY_DELAYS), not Celery's.
    max_retries=None,
    # One POST with a 10 s connect and a 10 s read timeout, and two short transactions.
    soft_time_limit=45,
    time_limit=60,
    acks_late=True,
    ignore_result=True,
)
def webhook_deliver(self: Task, delivery_id: int) -> str:
    """Deliver one webhook; retry later with backoff while the endpoint does not take it."""
    outcome = webhook_delivery_attempt(delivery_id=delivery_id)
    if outcome == AttemptOutcome.RETRY:
        attempts = (
            WebhookDelivery.objects.filter(pk=delivery_id)
            .values_list("attempts", flat=True)
            .first()
        )
        raise self.retry(countdown=retry_delay_seconds(attempts_done=attempts or 1))
    return outcome.value


@shared_task(name="partners.webhooks_requeue_overdue", ignore_result=True)
def webhooks_requeue_overdue(limit: int = 500) -> int:
    """Queue again the pending deliveries whose task was lost. Idempotent: a delivery that is
    finished meanwhile is skipped by the attempt."""
    due = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=timezone.now() - OVERDUE
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    for delivery_id in due:
        webhook_deliver.delay(delivery_id)
    return len(due)
