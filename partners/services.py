"""Writes of the partners core: staff review of partners and their apps.

Every change writes a PartnerEvent in its transaction, and the changes partners hear about
(app.approved, app.suspended) go to the webhook outbox in that same transaction.
"""

from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import User
from partners.models import (
    Application,
    ApplicationReview,
    Partner,
    PartnerEvent,
    PartnerMember,
)
from partners.webhooks.models import WebhookEventType
from partners.webhooks.services import webhook_event_enqueue


class ReviewTransitionError(ValueError):
    """The partner or app is not in a state this decision applies to."""


def application_webhook_payload(*, application: Application, reason: str = "") -> dict[str, Any]:
    payload: dict[str, Any] = {
        "application": {
            "client_id": application.client_id,
            "name": application.name,
        }
    }
    if reason:
        payload["reason"] = reason
    return payload


def partner_event_record(
    *,
    partner: Partner,
    action: str,
    actor: User | None = None,
    application: Application | None = None,
    data: dict[str, Any] | None = None,
) -> PartnerEvent:
    """Insert one row of the partner log. Call it inside the transaction of the change."""
    return PartnerEvent.objects.create(
        partner=partner,
        action=action,
        actor=actor if actor is not None and actor.pk else None,
        application_id=application.pk if application is not None else None,
        data=data or {},
    )


def _partner_lock(partner: Partner) -> Partner:
    return Partner.objects.select_for_update().get(pk=partner.pk)


def _approved_apps(partner: Partner) -> list[Application]:
    apps = Application.objects.filter(partner=partner).select_related("review").order_by("pk")
    return [
        app
        for app in apps
        if not hasattr(app, "review") or app.review.status == ApplicationReview.Status.APPROVED
    ]


def partner_approve(*, partner: Partner, actor: User | None) -> Partner:
    """Staff let a pending partner go live, or reinstate a suspended one; its approved apps
    work again (and the partner hears app.approved for each when reinstated). Raises
    ReviewTransitionError if the partner is already active."""
    with transaction.atomic():
        locked = _partner_lock(partner)
        previous = locked.status
        if previous == Partner.Status.ACTIVE:
            raise ReviewTransitionError("The partner is already active.")
        locked.status = Partner.Status.ACTIVE
        fields = ["status"]
        if locked.approved_at is None:
            locked.approved_at = timezone.now()
            fields.append("approved_at")
        locked.save(update_fields=fields)
        reinstated = previous == Partner.Status.SUSPENDED
        partner_event_record(
            partner=locked,
            action=(
                PartnerEvent.Action.PARTNER_REINSTATED
                if reinstated
                else PartnerEvent.Action.PARTNER_APPROVED
            ),
            actor=actor,
            data={"from": previous},
        )
        if reinstated:
            for app in _approved_apps(locked):
                webhook_event_enqueue(
                    partner=locked,
                    event_type=WebhookEventType.APP_APPROVED,
                    payload=application_webhook_payload(
                        application=app, reason="partner_reinstated"
                    ),
                )
    partner.refresh_from_db()
    return partner


def partner_suspend(*, partner: Partner, actor: User | None, reason: str = "") -> Partner:
    """Staff suspend a partner: none of its apps gets tokens or charges wallets until it is
    reinstated, and the partner hears app.suspended for each app that was live. Raises
    ReviewTransitionError if the partner is already suspended."""
    with transaction.atomic():
        locked = _partner_lock(partner)
        previous = locked.status
        if previous == Partner.Status.SUSPENDED:
            raise ReviewTransitionError("The partner is already suspended.")
        locked.status = Partner.Status.SUSPENDED
        locked.save(update_fields=["status"])
        partner_event_record(
            partner=locked,
            action=PartnerEvent.Action.PARTNER_SUSPENDED,
            actor=actor,
            data={"from": previous, "reason": reason},
        )
        if previous == Partner.Status.ACTIVE:
            for app in _approved_apps(locked):
                webhook_event_enqueue(
                    partner=locked,
                    event_type=WebhookEventType.APP_SUSPENDED,
                    payload=application_webhook_payload(
                        application=app, reason=reason or "partner_suspended"
                    ),
                )
    partner.refresh_from_db()
    return partner


def _review_lock(application: Application) -> ApplicationReview:
    # Apps staff registered directly have no review row and count as approved.
    review, _created = ApplicationReview.objects.select_for_update().get_or_create(
        application=application, defaults={"status": ApplicationReview.Status.APPROVED}
    )
    return review


def _application_decide(
    *,
    application: Application,
    actor: User | None,
    status: str,
    already: str,
    action: str,
    event_type: str,
    data: dict[str, Any],
    payload: dict[str, Any],
) -> ApplicationReview:
    """Move a partner app's review to `status` under its lock, with the partner log entry and
    the webhook event in the same transaction. Raises ReviewTransitionError(`already`) if it
    is there already."""
    if application.partner_id is None:
        raise ReviewTransitionError("Only partner apps are reviewed.")
    with transaction.atomic():
        review = _review_lock(application)
        if review.status == status:
            raise ReviewTransitionError(already)
        previous = review.status
        review.status = status
        review.decided_by = actor
        review.decided_at = timezone.now()
        review.save(update_fields=["status", "decided_by", "decided_at"])
        partner = application.partner
        assert partner is not None
        partner_event_record(
            partner=partner,
            action=action,
            actor=actor,
            application=application,
            data={"client_id": application.client_id, "from": previous, **data},
        )
        webhook_event_enqueue(partner=partner, event_type=event_type, payload=payload)
    return review


def application_approve(*, application: Application, actor: User | None) -> ApplicationReview:
    """Staff approve a pending (or reinstate a suspended) partner app: it may get tokens as
    soon as its partner is active too. Writes the partner log and app.approved. Raises
    ReviewTransitionError if the app is already approved."""
    return _application_decide(
        application=application,
        actor=actor,
        status=ApplicationReview.Status.APPROVED,
        already="The app is already approved.",
        action=PartnerEvent.Action.APP_APPROVED,
        event_type=WebhookEventType.APP_APPROVED,
        data={},
        payload=application_webhook_payload(application=application),
    )


def application_suspend(
    *, application: Application, actor: User | None, reason: str = ""
) -> ApplicationReview:
    """Staff suspend one partner app: it gets no tokens and its live tokens stop working.
    Writes the partner log and app.suspended. Raises ReviewTransitionError if the app is
    already suspended."""
    return _application_decide(
        application=application,
        actor=actor,
        status=ApplicationReview.Status.SUSPENDED,
        already="The app is already suspended.",
        action=PartnerEvent.Action.APP_SUSPENDED,
        event_type=WebhookEventType.APP_SUSPENDED,
        data={"reason": reason},
        payload=application_webhook_payload(application=application, reason=reason),
    )


def partner_member_add(
    *, partner: Partner, user: User, role: str, actor: User | None
) -> PartnerMember:
    """Give a person a role at the partner (one membership per person and partner: the
    database refuses a second)."""
    with transaction.atomic():
        membership = PartnerMember.objects.create(partner=partner, user=user, role=role)
        partner_event_record(
            partner=partner,
            action=PartnerEvent.Action.MEMBER_ADDED,
            actor=actor,
            data={"user": user.public_id, "role": role},
        )
    return membership


def partner_member_role_set(
    *, membership: PartnerMember, role: str, actor: User | None
) -> PartnerMember:
    with transaction.atomic():
        locked = PartnerMember.objects.select_for_update().get(pk=membership.pk)
        previous = locked.role
        if previous != role:
            locked.role = role
            locked.save(update_fields=["role"])
            partner_event_record(
                partner=locked.partner,
                action=PartnerEvent.Action.MEMBER_CHANGED,
                actor=actor,
                data={"user": locked.user.public_id, "from": previous, "role": role},
            )
    return locked


def partner_member_remove(*, membership: PartnerMember, actor: User | None) -> None:
    with transaction.atomic():
        partner_event_record(
            partner=membership.partner,
            action=PartnerEvent.Action.MEMBER_REMOVED,
            actor=actor,
            data={"user": membership.user.public_id, "role": membership.role},
        )
        PartnerMember.objects.filter(pk=membership.pk).delete()
