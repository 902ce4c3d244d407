"""Writes behind the partner portal: apps a partner registers, and its profile. Apps created
here start pending staff review (partners.services.application_approve)."""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils.translation import gettext as _
from oauth2_provider.generators import generate_client_secret

from accounts.models import User
from partners.models import Application, ApplicationReview, Partner, PartnerEvent
from partners.oauth.services import application_client_secret_rotate
from partners.services import partner_event_record

# What the partner chooses on the form; the rest of the app's fields are ours.
APP_FIELDS = ("name", "client_type", "redirect_uris", "allowed_grant_types", "allowed_scopes")
PROFILE_FIELDS = (
    "name",
    "legal_name",
    "registration_id",
    "address",
    "contact_email",
    "is_model_vendor",
    "is_app_developer",
)
# Apps are reviewed by people: a partner that needs more asks staff.
MAX_APPS_PER_PARTNER = 50
PAYOUT_FIELDS = (
    "payout_bank_name",
    "payout_account_name",
    "payout_account_number",
    "payout_swift_code",
    "payout_currency",
)


def _grant_field(grant_types: list[str]) -> str:
    # DOT's single authorization_grant_type must hold one of the app's grants.
    for grant in (
        Application.GRANT_AUTHORIZATION_CODE,
        Application.GRANT_CLIENT_CREDENTIALS,
        Application.GRANT_DEVICE_CODE,
    ):
        if grant in grant_types:
            return grant
    return Application.GRANT_AUTHORIZATION_CODE


def portal_application_build(
    *, partner: Partner, data: dict[str, Any], instance: Application | None = None
) -> Application:
    """An unsaved app with the partner's choices applied, for full_clean() before saving."""
    app = instance or Application(
        partner=partner,
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=False,
        hash_client_secret=True,
        client_secret=generate_client_secret(),
    )
    grants = list(data["allowed_grant_types"])
    app.name = data["name"]
    app.client_type = data["client_type"]
    app.redirect_uris = "\n".join(data["redirect_uris"])
    app.post_logout_redirect_uris = app.redirect_uris
    app.allowed_grant_types = " ".join(grants)
    app.authorization_grant_type = _grant_field(grants)
    app.allowed_scopes = " ".join(data["allowed_scopes"])
    app.homepage_url = data.get("homepage_url", "") or ""
    app.privacy_policy_url = data.get("privacy_policy_url", "") or ""
    return app


def portal_application_create(
    *, partner: Partner, actor: User, app: Application, logo: UploadedFile | None = None
) -> tuple[Application, str | None]:
    """Save an app built (and cleaned) by portal_application_build, pending review. Returns it
    with its client secret in plain text (None for a public app): the only time anyone sees
    it. Raises ValidationError when the partner has MAX_APPS_PER_PARTNER apps already."""
    with transaction.atomic():
        # The partner's row is the lock that keeps concurrent creations under the limit.
        Partner.objects.select_for_update().get(pk=partner.pk)
        if Application.objects.filter(partner=partner).count() >= MAX_APPS_PER_PARTNER:
            raise ValidationError(
                _("An organization may have at most %(limit)d apps; contact Tokenpass for more."),
                params={"limit": MAX_APPS_PER_PARTNER},
                code="too_many_apps",
            )
        if logo is not None:
            app.logo.save(logo.name or "logo", logo, save=False)
        app.save()
        ApplicationReview.objects.create(
            application=app, status=ApplicationReview.Status.PENDING, submitted_by=actor
        )
        secret = None
        if app.client_type == Application.CLIENT_CONFIDENTIAL:
            secret = application_client_secret_rotate(application=app)
        partner_event_record(
            partner=partner,
            action=PartnerEvent.Action.APP_CREATED,
            actor=actor,
            application=app,
            data={"client_id": app.client_id, "name": app.name},
        )
    return app, secret


def portal_application_update(
    *, partner: Partner, actor: User, app: Application, logo: UploadedFile | None = None
) -> Application:
    """Save changes to an app built by portal_application_build on the stored one. A live
    app stays live: staff review concerns the partner and the app's purpose, and every
    change is in the partner log."""
    with transaction.atomic():
        if logo is not None:
            app.logo.save(logo.name or "logo", logo, save=False)
        app.save()
        partner_event_record(
            partner=partner,
            action=PartnerEvent.Action.APP_UPDATED,
            actor=actor,
            application=app,
            data={
                "client_id": app.client_id,
                "redirect_uris": app.redirect_uris.split(),
                "grant_types": app.allowed_grant_types.split(),
                "scopes": app.allowed_scopes.split(),
            },
        )
    return app


def portal_application_secret_rotate(*, partner: Partner, actor: User, app: Application) -> str:
    """A new client secret for a confidential app, in plain text, once. The old one stops
    working at once."""
    if app.client_type != Application.CLIENT_CONFIDENTIAL:
        raise ValueError("Public apps have no client secret.")
    with transaction.atomic():
        secret = application_client_secret_rotate(application=app)
        partner_event_record(
            partner=partner,
            action=PartnerEvent.Action.APP_SECRET_ROTATED,
            actor=actor,
            application=app,
            data={"client_id": app.client_id},
        )
    return secret


def partner_profile_update(
    *, partner: Partner, actor: User, data: dict[str, Any], payout: bool
) -> Partner:
    """Change the partner's details (and its payout details when `payout`). The log keeps
    which fields changed, not the payout values themselves."""
    fields = list(PROFILE_FIELDS) + (list(PAYOUT_FIELDS) if payout else [])
    with transaction.atomic():
        locked = Partner.objects.select_for_update().get(pk=partner.pk)
        changed = [f for f in fields if f in data and getattr(locked, f) != data[f]]
        for field in changed:
            setattr(locked, field, data[field])
        if changed:
            locked.save(update_fields=changed)
            partner_event_record(
                partner=locked,
                action=PartnerEvent.Action.PARTNER_UPDATED,
                actor=actor,
                data={"fields": changed},
            )
    return locked
