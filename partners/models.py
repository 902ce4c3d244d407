from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider.models import AbstractApplication


class Partner(models.Model):
    """A model vendor or app developer organization that owns apps on Tokenpass."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        ACTIVE = "active", _("active")
        SUSPENDED = "suspended", _("suspended")

    name = models.CharField(_("name"), max_length=200)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("partner")
        verbose_name_plural = _("partners")

    def __str__(self) -> str:
        return self.name


class Application(AbstractApplication):
    """A partner app: DOT's OAuth client, swapped in from the first migration.

    DOT's single ``authorization_grant_type`` is kept for compatibility; what an app may use
    is ``allowed_grant_types`` (space separated), so one app can hold the authorization code,
    refresh, device and client credentials grants at once.
    """

    partner = models.ForeignKey(
        Partner, on_delete=models.PROTECT, related_name="applications", null=True, blank=True
    )
    logo = models.ImageField(_("logo"), upload_to="app-logos/", blank=True)
    homepage_url = models.URLField(_("homepage"), blank=True)
    privacy_policy_url = models.URLField(_("privacy policy"), blank=True)
    backchannel_logout_uri = models.URLField(_("back-channel logout URI"), blank=True)
    allowed_grant_types = models.TextField(
        _("allowed grant types"), blank=True, help_text=_("Space separated grant types.")
    )
    allowed_scopes = models.TextField(
        _("allowed scopes"), blank=True, help_text=_("Space separated scopes the app may request.")
    )

    class Meta(AbstractApplication.Meta):
        swappable = "OAUTH2_PROVIDER_APPLICATION_MODEL"
        verbose_name = _("application")
        verbose_name_plural = _("applications")
