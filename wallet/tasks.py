"""Periodic wallet work (Celery beat). Each task is idempotent (it re-reads state under the
services' locks and does nothing if the work is done) and only calls a service."""

import logging
from typing import Any

from celery import shared_task
from django.db import DatabaseError

from wallet import services
from wallet.audit import wallet_audit_run

logger = logging.getLogger(__name__)

# A transient database error (a failover, a dropped connection) retries with backoff; the
# services make a retry safe.
RETRY: dict[str, Any] = {
    "acks_late": True,
    "autoretry_for": (DatabaseError,),
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "max_retries": 5,
    "soft_time_limit": 240,
    "time_limit": 300,
}


@shared_task(name="wallet.tasks.balances_fold", **RETRY)
def balances_fold() -> int:
    return services.wallet_balances_fold()


@shared_task(name="wallet.tasks.holds_expire", **RETRY)
def holds_expire() -> int:
    return services.wallet_holds_expire_due()


@shared_task(name="wallet.tasks.buckets_expire", **RETRY)
def buckets_expire() -> int:
    return services.wallet_buckets_expire_due()


@shared_task(name="wallet.tasks.plan_grants", **RETRY)
def plan_grants() -> int:
    return services.subscriptions_grant_due()


@shared_task(name="wallet.tasks.audit", **RETRY)
def audit() -> dict:
    run = wallet_audit_run()
    if not run.ok:
        logger.error("wallet audit %s failed: %s", run.pk, run.problems[:10])
    return {"run": run.pk, "ok": run.ok, "problems": len(run.problems)}
