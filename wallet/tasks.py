"""Periodic wallet work (Celery beat). Each task is idempotent and only calls a service."""

import logging

from celery import shared_task

from wallet import services
from wallet.audit import wallet_audit_run

logger = logging.getLogger(__name__)


@shared_task(name="wallet.tasks.holds_expire", acks_late=True)
def holds_expire() -> int:
    return services.wallet_holds_expire_due()


@shared_task(name="wallet.tasks.buckets_expire", acks_late=True)
def buckets_expire() -> int:
    return services.wallet_buckets_expire_due()


@shared_task(name="wallet.tasks.plan_grants", acks_late=True)
def plan_grants() -> int:
    return services.subscriptions_grant_due()


@shared_task(name="wallet.tasks.audit", acks_late=True)
def audit() -> dict:
    run = wallet_audit_run()
    if not run.ok:
        logger.error("wallet audit %s failed: %s", run.pk, run.problems[:10])
    return {"run": run.pk, "ok": run.ok, "problems": len(run.problems)}
