"""OpenID Connect Back-Channel Logout deliveries (imported by partners.models).

One delivery per app and sign-out: the logout token that tells the app's server to end the
person's session there. Each try to reach the app is an insert-only attempt row, so that staff
can see what the app answered and when.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class BackchannelLogoutDelivery(models.Model):
    """A logout notice owed to one app. ``jti`` is the logout token's id: every retry signs a
    fresh token (new iat/exp) with the same jti, so an app that did receive an earlier try can
    recognise the repeat."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        DELIVERED = "delivered", _("delivered")
        FAILED = "failed", _("failed")

    application = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="backchannel_logout_deliveries",
        verbose_name=_("application"),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("user"),
    )
    # The logout token's `sub` (User.public_id), kept so the delivery outlives the user row.
    subject = models.CharField(_("subject"), max_length=32)
    jti = models.CharField(_("token id"), max_length=64, unique=True)
    # The ending session's OpenID session id, when one session ended (blank: all of them).
    sid = models.CharField(_("session id"), max_length=64, blank=True)
    # The URI as it was at sign-out: a later edit of the app does not redirect old notices.
    logout_uri = models.URLField(_("back-channel logout URI"), max_length=500)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_status_code = models.PositiveSmallIntegerField(
        _("last HTTP status"), null=True, blank=True
    )
    last_error = models.CharField(_("last error"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now)
    delivered_at = models.DateTimeField(_("delivered"), null=True, blank=True)

    class Meta:
        verbose_name = _("back-channel logout delivery")
        verbose_name_plural = _("back-channel logout deliveries")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "created_at"], name="bcl_delivery_status_created"),
            models.Index(fields=["application", "-created_at"], name="bcl_delivery_app_created"),
        ]

    def __str__(self) -> str:
        return f"Logout of {self.subject} at {self.application}: {self.get_status_display()}"


class BackchannelLogoutAttempt(models.Model):
    """One POST of a logout token to an app (insert-only)."""

    delivery = models.ForeignKey(
        BackchannelLogoutDelivery,
        on_delete=models.CASCADE,
        related_name="attempt_rows",
        verbose_name=_("delivery"),
    )
    number = models.PositiveSmallIntegerField(_("attempt"))
    started_at = models.DateTimeField(_("started"), default=timezone.now)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    status_code = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    error = models.CharField(_("error"), max_length=500, blank=True)
    succeeded = models.BooleanField(_("succeeded"), default=False)

    class Meta:
        verbose_name = _("back-channel logout attempt")
        verbose_name_plural = _("back-channel logout attempts")
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="bcl_attempt_number")
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} of delivery #{self.delivery_id}"
