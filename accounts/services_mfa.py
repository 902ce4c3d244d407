"""TOTP two-factor authentication and recovery codes, on django-otp's device models.

A user has two-factor on when they own a confirmed TOTPDevice. Their recovery codes are the
tokens of one StaticDevice; a code is deleted when used. django-otp would keep the codes in
clear, so StaticToken.token holds recovery_code_hash(code) instead and every code we are given
is hashed the same way before django-otp's verify_token looks it up (which keeps its throttling
and single-use deletion). The clear codes exist only in the response that shows them once.
"""

import hashlib
import hmac
from base64 import b32encode, urlsafe_b64encode
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import segno
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django_otp import user_has_device
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.audit import audit_event_record
from accounts.models import AuditEvent, User

RECOVERY_CODE_COUNT = 10
TOTP_DEVICE_NAME = "Authenticator app"
RECOVERY_DEVICE_NAME = "Recovery codes"
# StaticToken.token is a CharField(max_length=16): 16 base64url characters keep 96 bits of the
# HMAC, far more than the 40 bits of a code, so a stored value reveals nothing and two codes
# never share one.
_RECOVERY_HASH_CHARS = 16
_RECOVERY_HASH_KEY_SALT = b"tokenpass.accounts.recovery-code"


class MfaError(Exception):
    """A two-factor operation was refused; the message is safe to show to the user."""


class MfaThrottled(MfaError):
    """Too many wrong codes in a row: django-otp refuses to check codes for a while."""


@dataclass(frozen=True)
class VerifiedFactor:
    device: Device
    recovery: bool
    recovery_codes_left: int


def mfa_enabled(*, user: User) -> bool:
    return user_has_device(user, confirmed=True)


def _totp_confirmed(*, user: User) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def _recovery_device(*, user: User) -> StaticDevice | None:
    return StaticDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def recovery_codes_left(*, user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def totp_setup_device_get_or_create(*, user: User) -> TOTPDevice:
    """The unconfirmed TOTP device that the setup page shows. Reusing it keeps the secret
    stable when the page is reloaded. Raises MfaError if two-factor is already on."""
    if _totp_confirmed(user=user) is not None:
        raise MfaError(_("Two-factor authentication is already on."))
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=False)
    return device


def totp_secret_base32(*, device: TOTPDevice) -> str:
    return b32encode(device.bin_key).decode("ascii").rstrip("=")


def totp_provisioning_uri(*, device: TOTPDevice) -> str:
    """The otpauth:// URI that authenticator apps read from the QR code. django-otp's own
    config_url labels the account with the username field, which is empty for phone-only
    accounts, so the label here is the phone number or email the person signs in with."""
    issuer = str(getattr(settings, "OTP_TOTP_ISSUER", "Tokenpass")).replace(":", "")
    label = f"{issuer}:{device.user}"
    params = urlencode(
        {
            "secret": totp_secret_base32(device=device),
            "algorithm": "SHA1",
            "digits": device.digits,
            "period": device.step,
        }
    )
    return f"otpauth://totp/{quote(label)}?{params}&issuer={quote(issuer)}"


def totp_qr_svg(*, device: TOTPDevice) -> str:
    """The provisioning URI as an inline SVG document (no external request, no image file)."""
    qr = segno.make(totp_provisioning_uri(device=device), error="m")
    svg: str = qr.svg_inline(scale=5, border=2, dark="#1b2333", light="#ffffff", omitsize=True)
    return svg


def _check_throttle(device: Device) -> None:
    allowed, _info = device.verify_is_allowed()
    if not allowed:
        raise MfaThrottled(_("Too many wrong codes in a row. Wait a few seconds, then try again."))


def recovery_code_hash(*, code: str) -> str:
    """The value stored in StaticToken.token for a recovery code: HMAC-SHA256 keyed from
    SECRET_KEY (a database dump alone cannot be brute-forced through the 40-bit code space),
    truncated to the column's 16 characters. The code is normalised first, as typed input is."""
    key = hashlib.sha256(_RECOVERY_HASH_KEY_SALT + settings.SECRET_KEY.encode()).digest()
    digest = hmac.new(key, _recovery_normal(code).encode(), hashlib.sha256).digest()
    return urlsafe_b64encode(digest).decode("ascii")[:_RECOVERY_HASH_CHARS]


def _recovery_codes_create(*, user: User) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name=RECOVERY_DEVICE_NAME, confirmed=True)
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create(
        [StaticToken(device=device, token=recovery_code_hash(code=code)) for code in codes]
    )
    return codes


def totp_setup_confirm(*, request: HttpRequest | None, user: User, token: str) -> list[str]:
    """Confirm the setup device with a code from the app, turning two-factor on: the device
    becomes confirmed, a fresh set of recovery codes replaces any old one, MFA_ENABLED is
    written. Returns the recovery codes (to show once). Raises MfaError for a wrong code."""
    with transaction.atomic():
        device = (
            TOTPDevice.objects.select_for_update()
            .filter(user=user, confirmed=False)
            .order_by("-pk")
            .first()
        )
        if device is None or _totp_confirmed(user=user) is not None:
            raise MfaError(_("Start the two-factor setup again."))
        _check_throttle(device)
    codes: list[str] = []
    # verify_token records a failure for throttling, so a wrong code must still commit: the
    # error is raised only after the transaction.
    with transaction.atomic():
        device = TOTPDevice.objects.select_for_update().get(pk=device.pk)
        verified = device.verify_token(_digits(token))
        if verified:
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            TOTPDevice.objects.filter(user=user, confirmed=False).delete()
            codes = _recovery_codes_create(user=user)
            audit_event_record(action=AuditEvent.Action.MFA_ENABLED, user=user, request=request)
    if not verified:
        raise MfaError(_("That code is not valid. Check the time on your phone and retry."))
    return codes


def recovery_codes_regenerate(*, request: HttpRequest | None, user: User) -> list[str]:
    """Replace the recovery codes with 10 new ones (the old ones stop working). Writes
    MFA_RECOVERY_REGENERATED. Raises MfaError if two-factor is off."""
    with transaction.atomic():
        if _totp_confirmed(user=user) is None:
            raise MfaError(_("Two-factor authentication is off."))
        codes = _recovery_codes_create(user=user)
        audit_event_record(
            action=AuditEvent.Action.MFA_RECOVERY_REGENERATED, user=user, request=request
        )
    return codes


def mfa_disable(*, request: HttpRequest | None, user: User, actor: User | None = None) -> None:
    """Turn two-factor off: every OTP device of the user (app and recovery codes) is deleted.
    Writes MFA_DISABLED (with `actor` when staff did it for a user who lost their phone and
    their codes). The caller has checked the current password or staff's identity.
    Raises MfaError if two-factor was already off."""
    with transaction.atomic():
        deleted = TOTPDevice.objects.filter(user=user).delete()[0]
        deleted += StaticDevice.objects.filter(user=user).delete()[0]
        if deleted == 0:
            raise MfaError(_("Two-factor authentication is off."))
        audit_event_record(
            action=AuditEvent.Action.MFA_DISABLED,
            user=user,
            actor=actor,
            request=request,
            data={"by_staff": True} if actor is not None else {},
        )


def _digits(token: str) -> str:
    return "".join(ch for ch in token if not ch.isspace())


def _recovery_normal(token: str) -> str:
    return "".join(ch for ch in token if ch.isalnum()).lower()


def second_factor_verify(
    *, request: HttpRequest | None, user: User, token: str
) -> VerifiedFactor | None:
    """Check a code from the authenticator app, or a recovery code, for `user`.

    A six-digit code is checked against the TOTP device (replays of an already used code are
    refused by django-otp); anything else against the recovery codes, each of which works once
    and writes MFA_RECOVERY_USED. Returns None for a wrong code. Raises MfaThrottled while
    django-otp's back-off after repeated failures is in force."""
    cleaned = _digits(token)
    if cleaned.isdigit() and len(cleaned) == 6:
        totp = _totp_confirmed(user=user)
        if totp is None:
            return None
        _check_throttle(totp)
        # Each check commits on its own: a failure must be counted even though we return None.
        with transaction.atomic():
            device = TOTPDevice.objects.select_for_update().get(pk=totp.pk)
            if device.verify_token(cleaned):
                return VerifiedFactor(device=device, recovery=False, recovery_codes_left=-1)
        return None
    static = _recovery_device(user=user)
    if static is None:
        return None
    _check_throttle(static)
    with transaction.atomic():
        device = StaticDevice.objects.select_for_update().get(pk=static.pk)
        # The lookup is by keyed hash, so its timing says nothing useful about any stored code.
        if not device.verify_token(recovery_code_hash(code=token)):
            return None
        left = device.token_set.count()
        audit_event_record(
            action=AuditEvent.Action.MFA_RECOVERY_USED,
            user=user,
            request=request,
            data={"codes_left": left},
        )
    return VerifiedFactor(device=device, recovery=True, recovery_codes_left=left)
