"""What webhook deliveries and back-channel logout deliveries share: the outcome of one
attempt, and recording it.

Both POST outside any transaction, then record the attempt and move the delivery on in one
short transaction under the delivery's row lock, so that a task delivered twice never moves a
finished delivery back to pending."""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import models, transaction
from django.db.models import F
from django.utils import timezone


class AttemptOutcome(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"
    # The delivery was already finished (a repeated task): nothing was sent.
    DONE = "done"


def delivery_attempt_record(
    *,
    delivery_model: type[models.Model],
    attempt_model: type[models.Model],
    delivery_id: int,
    started_at: datetime,
    duration_ms: int,
    status_code: int | None,
    error: str,
    outcome: AttemptOutcome,
    next_attempt_at: Callable[[int, datetime], datetime] | None = None,
) -> int:
    """Record one attempt (DELIVERED, RETRY or FAILED) and the delivery's new state; returns
    the attempt's number. ``next_attempt_at(number, now)`` schedules a retry, for deliveries
    that keep their own schedule (the field is cleared once the delivery is finished)."""
    status = delivery_model.Status  # type: ignore[attr-defined]
    with transaction.atomic():
        locked = delivery_model._default_manager.select_for_update().get(pk=delivery_id)
        number = locked.attempts + 1  # type: ignore[attr-defined]
        attempt_model._default_manager.create(
            delivery=locked,
            number=number,
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=status_code,
            error=error,
            succeeded=outcome == AttemptOutcome.DELIVERED,
        )
        now = timezone.now()
        update: dict[str, Any] = {
            "attempts": F("attempts") + 1,
            "last_status_code": status_code,
            "last_error": error,
            "updated_at": now,
        }
        # A concurrent attempt may have finished the delivery: never move it back to pending,
        # and never un-deliver it.
        if locked.status == status.PENDING:  # type: ignore[attr-defined]
            if outcome == AttemptOutcome.DELIVERED:
                update.update(status=status.DELIVERED, delivered_at=now)
            elif outcome == AttemptOutcome.FAILED:
                update["status"] = status.FAILED
            if next_attempt_at is not None:
                retry = outcome == AttemptOutcome.RETRY
                update["next_attempt_at"] = next_attempt_at(number, now) if retry else None
        delivery_model._default_manager.filter(pk=delivery_id).update(**update)
    return number
