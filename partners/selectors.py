"""Reads of the partners core. Nothing here writes."""

from typing import Any

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from partners.models import Application, ApplicationReview, Partner, PartnerMember


def partner_is_active(*, partner: Partner | None) -> bool:
    """True if staff approved the partner and have not suspended it."""
    return partner is not None and partner.status == Partner.Status.ACTIVE


def application_review_status(*, application: Application) -> str:
    """The app's review status; apps registered by staff (no review row) count as approved."""
    review = ApplicationReview.objects.filter(application_id=application.pk).first()
    return review.status if review is not None else ApplicationReview.Status.APPROVED


def application_is_live(*, application: Any) -> bool:
    """May this app get tokens and charge wallets now? Not when its partner is pending or
    suspended, nor while the app awaits review or is suspended. Apps without a partner
    (first-party) are always live."""
    if application.partner_id is not None and not partner_is_active(partner=application.partner):
        return False
    return application_review_status(application=application) == ApplicationReview.Status.APPROVED


def partner_memberships(*, user: User) -> QuerySet[PartnerMember]:
    """The partners this person works for, by name."""
    if not user.is_authenticated:
        return PartnerMember.objects.none()
    return (
        PartnerMember.objects.filter(user=user).select_related("partner").order_by("partner__name")
    )


def partner_membership_get(*, user: User, partner_id: Any) -> PartnerMember:
    """The person's membership of that partner; Http404 if there is none (a non-member may
    not learn whether the partner exists)."""
    try:
        pk = int(partner_id)
    except (TypeError, ValueError):
        raise Http404 from None
    membership = (
        PartnerMember.objects.filter(user=user, partner_id=pk).select_related("partner").first()
    )
    if membership is None:
        raise Http404
    return membership


def partner_applications(*, partner: Partner) -> QuerySet[Application]:
    return (
        Application.objects.filter(partner=partner).select_related("review").order_by("name", "pk")
    )


def partner_application_get(*, partner: Partner, application_id: Any) -> Application:
    """One of this partner's apps; Http404 for anything else."""
    try:
        pk = int(application_id)
    except (TypeError, ValueError):
        raise Http404 from None
    application = Application.objects.filter(partner=partner, pk=pk).first()
    if application is None:
        raise Http404
    return application
