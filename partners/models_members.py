"""Partner members, staff review of partner apps, and the partner audit log (imported by
partners.models)."""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class PartnerMember(models.Model):
    """A Tokenpass account that works for a partner, with one role there. Owners manage
    everything; developers manage apps and webhooks; finance sees statements, usage and
    payout details but changes no app."""

    class Role(models.TextChoices):
        OWNER = "owner", _("owner")
        DEVELOPER = "developer", _("developer")
        FINANCE = "finance", _("finance")

    partner = models.ForeignKey(
        "partners.Partner", on_delete=models.CASCADE, related_name="members"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="partner_memberships"
    )
    role = models.CharField(_("role"), max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("partner member")
        verbose_name_plural = _("partner members")
        constraints = [
            models.UniqueConstraint(fields=["user", "partner"], name="partnermember_user_partner")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display()}) at {self.partner}"


class ApplicationReview(models.Model):
    """Staff review of a partner app. An app created in the partner portal starts pending and
    gets no tokens until staff approve it; staff may suspend it later. Apps without a review
    row (registered by staff in the admin) are not held back."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending review")
        APPROVED = "approved", _("approved")
        SUSPENDED = "suspended", _("suspended")

    application = models.OneToOneField(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="review",
        verbose_name=_("application"),
    )
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("submitted by"),
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("decided by"),
    )
    decided_at = models.DateTimeField(_("decided"), null=True, blank=True)
    created_at = models.DateTimeField(_("submitted"), default=timezone.now)

    class Meta:
        verbose_name = _("app review")
        verbose_name_plural = _("app reviews")
        ordering = ["status", "-created_at"]

    def __str__(self) -> str:
        return f"{self.application} ({self.get_status_display()})"


class PartnerEvent(models.Model):
    """Insert-only log of what happened to a partner and its apps, and who did it (a database
    trigger on PostgreSQL refuses updates and deletes)."""

    class Action(models.TextChoices):
        PARTNER_APPROVED = "partner_approved", _("partner approved")
        PARTNER_SUSPENDED = "partner_suspended", _("partner suspended")
        PARTNER_REINSTATED = "partner_reinstated", _("partner reinstated")
        PARTNER_UPDATED = "partner_updated", _("partner details changed")
        APP_CREATED = "app_created", _("app created")
        APP_UPDATED = "app_updated", _("app changed")
        APP_APPROVED = "app_approved", _("app approved")
        APP_SUSPENDED = "app_suspended", _("app suspended")
        APP_SECRET_ROTATED = "app_secret_rotated", _("app client secret rotated")
        APP_CLIENT_UNLOCKED = "app_client_unlocked", _("app client authentication unlocked")
        APP_CLIENT_TOKENS_REVOKED = (
            "app_client_tokens_revoked",
            _("app client credentials tokens revoked"),
        )
        WEBHOOK_CREATED = "webhook_created", _("webhook endpoint added")
        WEBHOOK_UPDATED = "webhook_updated", _("webhook endpoint changed")
        WEBHOOK_DELETED = "webhook_deleted", _("webhook endpoint removed")
        WEBHOOK_SECRET_ROTATED = "webhook_secret_rotated", _("webhook secret rotated")
        MEMBER_ADDED = "member_added", _("member added")
        MEMBER_CHANGED = "member_changed", _("member role changed")
        MEMBER_REMOVED = "member_removed", _("member removed")

    partner = models.ForeignKey(
        "partners.Partner",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="events",
    )
    action = models.CharField(max_length=40, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    # Ids, not foreign keys: the log outlives what it talks about.
    application_id = models.BigIntegerField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("partner event")
        verbose_name_plural = _("partner events")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["partner", "-created_at"], name="partnerevent_partner")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} at {self.created_at:%Y-%m-%d %H:%M:%S}"
