import secrets
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

PUBLIC_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_public_id() -> str:
    """A random, URL-safe, never-reused identifier: the OIDC `sub` of the user."""
    return "u_" + "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(24))


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(
        self,
        email: str | None = None,
        password: str | None = None,
        *,
        phone: str | None = None,
        **extra: Any,
    ) -> "User":
        if not email and not phone:
            raise ValueError("A user needs a phone number or an email address.")
        user = self.model(email=email.lower() if email else None, phone=phone or None, **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(
        self, email: str | None = None, password: str | None = None, **extra: Any
    ) -> "User":
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        extra.setdefault("email_verified", True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """One account per person. The phone number (E.164) is the primary identity, as a
    carrier's users expect; an email address is the alternative. At least one is present."""

    public_id = models.CharField(
        _("public id"), max_length=32, unique=True, default=new_public_id, editable=False
    )
    phone = models.CharField(_("phone number"), max_length=16, unique=True, null=True, blank=True)
    phone_verified = models.BooleanField(_("phone verified"), default=False)
    email = models.EmailField(
        _("email address"), max_length=254, unique=True, null=True, blank=True
    )
    email_verified = models.BooleanField(_("email verified"), default=False)
    display_name = models.CharField(_("display name"), max_length=100, blank=True)
    locale = models.CharField(
        _("language"), max_length=10, choices=settings.LANGUAGES, default="en"
    )
    time_zone = models.CharField(_("time zone"), max_length=64, default="UTC")
    is_active = models.BooleanField(_("active"), default=True)
    is_staff = models.BooleanField(_("staff status"), default=False)
    date_joined = models.DateTimeField(_("date joined"), default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(phone__isnull=False) | models.Q(email__isnull=False),
                name="user_has_phone_or_email",
            ),
            # Emails are stored lower-cased by the services; the database holds us to it.
            models.CheckConstraint(
                condition=models.Q(email=Lower("email")), name="user_email_lowercase"
            ),
            models.CheckConstraint(
                condition=models.Q(phone__startswith="+"), name="user_phone_e164"
            ),
        ]

    def __str__(self) -> str:
        return self.phone or self.email or self.public_id

    def get_full_name(self) -> str:
        return self.display_name or str(self)

    def get_short_name(self) -> str:
        return self.display_name or str(self)


class OneTimeCode(models.Model):
    """A 6-digit code sent by SMS or email. Only a keyed hash of the code is stored."""

    class Purpose(models.TextChoices):
        SIGNUP = "signup", _("sign-up")
        LOGIN = "login", _("login")
        RESET = "reset", _("password reset")
        VERIFY = "verify", _("verification")

    class Channel(models.TextChoices):
        SMS = "sms", _("SMS")
        EMAIL = "email", _("email")

    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    recipient = models.CharField(max_length=254)
    code_hash = models.CharField(max_length=64)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    # Asked for from a browser that signed in to the account before: counted against the
    # owner's own send budget (accounts/known_devices.py).
    known_device = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["recipient", "created_at"], name="otc_recipient_created"),
            models.Index(fields=["ip_address", "created_at"], name="otc_ip_created"),
        ]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()} code for {self.recipient}"


class AuditEvent(models.Model):
    """Insert-only security log. Rows are never updated or deleted (a database trigger on
    PostgreSQL refuses it)."""

    class Action(models.TextChoices):
        SIGNUP = "signup", _("signed up")
        LOGIN_SUCCESS = "login_success", _("signed in")
        LOGIN_FAILURE = "login_failure", _("sign-in failed")
        LOCKOUT = "lockout", _("locked out")
        UNLOCK = "unlock", _("unlocked by staff")
        LOGOUT = "logout", _("signed out")
        SESSIONS_REVOKED = "sessions_revoked", _("signed out other sessions")
        PASSWORD_CHANGE = "password_change", _("password changed")
        PASSWORD_RESET = "password_reset", _("password reset")
        MFA_ENABLED = "mfa_enabled", _("two-factor enabled")
        MFA_DISABLED = "mfa_disabled", _("two-factor disabled")
        MFA_RECOVERY_USED = "mfa_recovery_used", _("recovery code used")
        MFA_RECOVERY_REGENERATED = "mfa_recovery_regenerated", _("recovery codes regenerated")
        PROFILE_CHANGE = "profile_change", _("profile changed")
        TOKEN_REUSE = "token_reuse", _("refresh token reuse detected")
        APP_AUTHORIZED = "app_authorized", _("app authorized")
        APP_REVOKED = "app_revoked", _("app access revoked")
        WALLET_CREDIT = "wallet_credit", _("wallet credited by staff")

    action = models.CharField(max_length=40, choices=Action.choices, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="audit_events",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
        help_text=_("Who did it, when not the user (staff)."),
    )
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"], name="audit_user_created")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class UserSession(models.Model):
    """One signed-in browser session, listed on the security page so that a person can see
    where they are signed in and end the sessions they do not recognise. The row lives as long
    as the Django session it mirrors: it is written when a session starts and deleted, together
    with the session, on sign-out and revocation."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="user_sessions"
    )
    session_key = models.CharField(max_length=40, unique=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("session")
        verbose_name_plural = _("sessions")
        indexes = [models.Index(fields=["user", "-last_seen_at"], name="usersession_user_seen")]

    def __str__(self) -> str:
        return f"{self.user} since {self.created_at:%Y-%m-%d %H:%M}"
