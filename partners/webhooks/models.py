"""The webhook outbox (imported by partners.models).

An event is written in the same transaction as the change it reports, with one delivery per
endpoint that subscribed to its type; Celery delivers after the commit and records every try as
an insert-only attempt row. The signing secret of an endpoint is never stored: it is derived
from a random per-endpoint salt and the server key (partners.webhooks.signing), so a copy of
the database alone cannot forge our signatures.
"""

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class WebhookEventType(models.TextChoices):
    STATEMENT_ISSUED = "statement.issued", _("statement issued")
    STATEMENT_PAID = "statement.paid", _("statement paid")
    CHARGE_REFUNDED = "charge.refunded", _("charge refunded")
    APP_APPROVED = "app.approved", _("app approved")
    APP_SUSPENDED = "app.suspended", _("app suspended")


class WebhookEndpoint(models.Model):
    """Where a partner wants to hear about events, and which ones."""

    partner = models.ForeignKey(
        "partners.Partner", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(_("URL"), max_length=500)
    description = models.CharField(_("description"), max_length=200, blank=True)
    # Space separated WebhookEventType values.
    event_types = models.TextField(_("event types"))
    secret_salt = models.CharField(max_length=64)
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now)

    class Meta:
        verbose_name = _("webhook endpoint")
        verbose_name_plural = _("webhook endpoints")
        ordering = ["partner", "pk"]

    def __str__(self) -> str:
        return self.url

    def event_type_list(self) -> list[str]:
        return self.event_types.split()


class WebhookEvent(models.Model):
    """Something that happened to a partner, as the JSON body we send (insert-only)."""

    partner = models.ForeignKey(
        "partners.Partner", on_delete=models.CASCADE, related_name="webhook_events"
    )
    public_id = models.CharField(max_length=40, unique=True)
    event_type = models.CharField(_("type"), max_length=40, choices=WebhookEventType.choices)
    # The exact body every delivery sends, so that all endpoints and every retry sign and send
    # the same bytes.
    body = models.TextField()
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("webhook event")
        verbose_name_plural = _("webhook events")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.public_id}"


class WebhookDelivery(models.Model):
    """One event owed to one endpoint."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        DELIVERED = "delivered", _("delivered")
        FAILED = "failed", _("failed")

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(
        _("last HTTP status"), null=True, blank=True
    )
    last_error = models.CharField(_("last error"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now)
    delivered_at = models.DateTimeField(_("delivered"), null=True, blank=True)

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="webhookdelivery_once")
        ]
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="webhookdelivery_endpoint"),
            models.Index(fields=["status", "next_attempt_at"], name="webhookdelivery_due"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.endpoint}: {self.get_status_display()}"


class WebhookAttempt(models.Model):
    """One POST of an event to an endpoint (insert-only)."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_rows"
    )
    number = models.PositiveSmallIntegerField(_("attempt"))
    started_at = models.DateTimeField(_("started"), default=timezone.now)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), default=0)
    status_code = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    error = models.CharField(_("error"), max_length=500, blank=True)
    succeeded = models.BooleanField(_("succeeded"), default=False)

    class Meta:
        verbose_name = _("webhook attempt")
        verbose_name_plural = _("webhook attempts")
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhookattempt_number")
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} of delivery #{self.delivery_id}"
