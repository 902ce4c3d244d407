"""Writes for the identity flows: one-time codes, sign-up, password login, password reset and
sign-out. Views call these; they never change accounts or codes themselves."""

import enum
import hashlib
import logging
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from axes.handlers.proxy import AxesProxyHandler
from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib.auth import authenticate, update_session_auth_hash
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from accounts.audit import audit_event_record
from accounts.models import AuditEvent, OneTimeCode, User
from accounts.selectors import otp_send_retry_after, user_get_by_recipient
from accounts.sms.backends import get_sms_backend

logger = logging.getLogger(__name__)

CODE_DIGITS = 6
# Key derivation salt for the code HMAC; changing it invalidates every outstanding code.
CODE_HASH_SALT = "tokenpass.accounts.OneTimeCode.code_hash"


class MessageKind(enum.StrEnum):
    """What the message sent with a one-time code row says."""

    CODE = "code"  # the code itself
    SIGNUP_EXISTS = "signup_exists"  # "you already have an account, sign in instead"
    NONE = "none"  # nothing is sent (no account to send a login or reset code for)


class OtpCheck(enum.StrEnum):
    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"
    USED = "used"
    MISSING = "missing"


class OtpRateLimited(Exception):
    """Too many codes were sent to this recipient or from this address recently."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} seconds")
        self.retry_after = retry_after


def otp_code_generate() -> str:
    """Six uniformly random digits from the OS CSPRNG."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def otp_code_digest(*, purpose: str, recipient: str, code: str) -> str:
    """Keyed HMAC-SHA256 of a code, bound to its purpose and recipient so that a stored hash is
    worthless for any other flow. The key is derived from SECRET_KEY; a database dump alone
    cannot be brute-forced over the million possible codes."""
    return salted_hmac(
        CODE_HASH_SALT, f"{purpose}\n{recipient}\n{code}", algorithm="sha256"
    ).hexdigest()


def _advisory_lock_key(value: str) -> int:
    digest = hashlib.sha256(("tokenpass.otp-send\n" + value).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _otp_send_lock(*, recipient: str, ip_address: str | None) -> None:
    """Serialise code sending per recipient and per client address until the transaction ends,
    so that two concurrent requests cannot both see room under a limit and both insert.
    Keys are taken in sorted order so that two requests never wait on each other in a cycle.
    SQLite (the local demo) serialises writers on its own and has no advisory locks."""
    if connection.vendor != "postgresql":
        return
    keys = {_advisory_lock_key("r:" + recipient)}
    if ip_address:
        keys.add(_advisory_lock_key("ip:" + ip_address))
    with connection.cursor() as cursor:
        for key in sorted(keys):
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def otp_code_issue(
    *,
    purpose: str,
    channel: str,
    recipient: str,
    ip_address: str | None,
    message: MessageKind = MessageKind.CODE,
    language: str | None = None,
    known_device: bool = False,
    now: datetime | None = None,
) -> OneTimeCode:
    """Create a new code for (`recipient`, `purpose`), which supersedes every older one, and
    queue its delivery once the transaction commits.

    A row is written even when `message` is not CODE, so that a flow answers, limits and counts
    attempts identically whether or not an account exists; such a row holds the hash of a code
    nobody is ever told.

    Raises OtpRateLimited (nothing written) when a send limit is reached.
    """
    from accounts.tasks import otp_code_deliver  # the task module imports this one

    with transaction.atomic():
        _otp_send_lock(recipient=recipient, ip_address=ip_address)
        # Read the clock after the lock: a request that waited must not count with a stale now.
        now = now or timezone.now()
        retry_after = otp_send_retry_after(
            recipient=recipient, ip_address=ip_address, now=now, known_device=known_device
        )
        if retry_after:
            raise OtpRateLimited(retry_after)
        code = otp_code_generate()
        row = OneTimeCode.objects.create(
            purpose=purpose,
            channel=channel,
            recipient=recipient,
            code_hash=otp_code_digest(purpose=purpose, recipient=recipient, code=code),
            ip_address=ip_address,
            known_device=known_device,
            created_at=now,
            expires_at=now + settings.OTP_CODE_TTL,
        )
        if message != MessageKind.NONE:
            kwargs = {
                "code_id": row.pk,
                "code": code if message == MessageKind.CODE else "",
                "kind": str(message),
                "language": language or translation.get_language() or settings.LANGUAGE_CODE,
            }
            # The code travels in the broker message (it is stored nowhere else in clear);
            # kwargsrepr keeps it out of worker logs, events and monitoring tools.
            masked = {**kwargs, "code": "******"}
            # robust: if the broker is down the failure is logged and the page still answers;
            # the person can ask for a new code.
            transaction.on_commit(
                lambda: otp_code_deliver.apply_async(
                    kwargs=kwargs,
                    kwargsrepr=repr(masked),  # type: ignore[call-arg]  # missing from the stubs
                ),
                robust=True,
            )
    return row


def otp_code_check(
    *, purpose: str, recipient: str, code: str, now: datetime | None = None
) -> OtpCheck:
    """Check `code` against the newest code for (`recipient`, `purpose`) and consume it if it
    matches. Older codes are superseded and never match. Every check of a live code counts as
    an attempt, committed even when the code is wrong; after OTP_CODE_MAX_ATTEMPTS the code is
    dead. The row is locked, so one code signs in at most once however many requests race."""
    with transaction.atomic():
        row = (
            OneTimeCode.objects.select_for_update()
            .filter(purpose=purpose, recipient=recipient)
            .order_by("-created_at", "-id")
            .first()
        )
        now = now or timezone.now()
        if row is None:
            return OtpCheck.MISSING
        if row.consumed_at is not None:
            return OtpCheck.USED
        if now >= row.expires_at:
            return OtpCheck.EXPIRED
        if row.attempts >= settings.OTP_CODE_MAX_ATTEMPTS:
            return OtpCheck.EXHAUSTED
        row.attempts += 1
        expected = otp_code_digest(purpose=purpose, recipient=recipient, code=code)
        if not constant_time_compare(row.code_hash, expected):
            row.save(update_fields=["attempts"])
            return OtpCheck.WRONG
        row.consumed_at = now
        row.save(update_fields=["attempts", "consumed_at"])
        return OtpCheck.OK


def _message_text(*, kind: str, purpose: str, code: str) -> tuple[str, str]:
    """(subject, body) of a code message in the active language."""
    minutes = max(1, int(settings.OTP_CODE_TTL.total_seconds() // 60))
    if kind == MessageKind.SIGNUP_EXISTS:
        login_url = settings.SITE_URL + reverse("accounts:login")
        return (
            _("You already have a Tokenpass account"),
            _(
                "Someone asked to create a Tokenpass account with this phone number or email "
                "address, but it already has one. Sign in at %(url)s (you can reset your password there). If it was not "
                "you, ignore this message."
            )
            % {"url": login_url},
        )
    texts: dict[str, str] = {
        OneTimeCode.Purpose.SIGNUP: _("Your Tokenpass sign-up code is %(code)s."),
        OneTimeCode.Purpose.LOGIN: _("Your Tokenpass sign-in code is %(code)s."),
        OneTimeCode.Purpose.RESET: _("Your Tokenpass password reset code is %(code)s."),
        OneTimeCode.Purpose.VERIFY: _("Your Tokenpass verification code is %(code)s."),
    }
    body = texts.get(purpose, texts[OneTimeCode.Purpose.VERIFY]) % {"code": code}
    body += " " + ngettext(
        "It expires in %(minutes)d minute. Never share it: Tokenpass will never ask you for it.",
        "It expires in %(minutes)d minutes. Never share it: Tokenpass will never ask you for it.",
        minutes,
    ) % {"minutes": minutes}
    return _("Your Tokenpass code: %(code)s") % {"code": code}, body


def otp_code_message_send(*, code_id: int, code: str, kind: str, language: str) -> bool:
    """Deliver the message for one code row by SMS or email. Does nothing (returns False) if
    the row is gone, used, expired or superseded: a late retry must not send a dead code.
    Raises SmsDeliveryError or SMTPException for the caller (the task) to retry."""
    row = OneTimeCode.objects.filter(pk=code_id).first()
    now = timezone.now()
    if row is None or row.consumed_at is not None or row.expires_at <= now:
        logger.info("code %s is no longer live; not sending", code_id)
        return False
    newer = OneTimeCode.objects.filter(
        purpose=row.purpose, recipient=row.recipient, created_at__gt=row.created_at
    ).exists()
    if newer:
        logger.info("code %s was superseded; not sending", code_id)
        return False
    if kind == MessageKind.CODE and not constant_time_compare(
        row.code_hash, otp_code_digest(purpose=row.purpose, recipient=row.recipient, code=code)
    ):
        logger.error("code %s does not match its row; not sending", code_id)
        return False
    with translation.override(language):
        subject, body = _message_text(kind=kind, purpose=row.purpose, code=code)
    if row.channel == OneTimeCode.Channel.SMS:
        get_sms_backend().send(to=row.recipient, body=body)
    else:
        send_mail(subject, body, None, [row.recipient], fail_silently=False)
    logger.info("sent %s message for code %s by %s", kind, code_id, row.channel)
    return True


# Sign-up ---------------------------------------------------------------------------------


def signup_start(
    *,
    channel: str,
    recipient: str,
    ip_address: str | None,
    language: str | None = None,
    known_users: Collection[str] = (),
) -> OneTimeCode:
    """Send a sign-up code to `recipient`. If an account already uses it, send a message that
    tells its owner to sign in instead; the caller cannot tell the two apart.
    Raises OtpRateLimited. `known_users` is not used: a sign-up has no owner's device yet."""
    exists = user_get_by_recipient(channel=channel, recipient=recipient) is not None
    return otp_code_issue(
        purpose=OneTimeCode.Purpose.SIGNUP,
        channel=channel,
        recipient=recipient,
        ip_address=ip_address,
        message=MessageKind.SIGNUP_EXISTS if exists else MessageKind.CODE,
        language=language,
    )


@dataclass(frozen=True)
class SignupResult:
    check: OtpCheck
    user: User | None


def signup_complete(
    *,
    channel: str,
    recipient: str,
    password_hash: str,
    display_name: str,
    code: str,
    locale: str | None = None,
    request: HttpRequest | None = None,
) -> SignupResult:
    """Create the account once its code checks out, with the contact marked verified, and
    write SIGNUP. If the phone or email was taken meanwhile nothing is created and the answer
    is the same as for a wrong code (user None)."""
    with transaction.atomic():
        check = otp_code_check(purpose=OneTimeCode.Purpose.SIGNUP, recipient=recipient, code=code)
        if check != OtpCheck.OK:
            return SignupResult(check=check, user=None)
        if user_get_by_recipient(channel=channel, recipient=recipient) is not None:
            return SignupResult(check=OtpCheck.WRONG, user=None)
        is_sms = channel == OneTimeCode.Channel.SMS
        user = User(
            phone=recipient if is_sms else None,
            phone_verified=is_sms,
            email=None if is_sms else recipient,
            email_verified=not is_sms,
            display_name=display_name,
            password=password_hash,
        )
        if locale and locale in dict(settings.LANGUAGES):
            user.locale = locale
        try:
            # A savepoint: a concurrent sign-up that won the unique constraint must not undo
            # the consumption of this code.
            with transaction.atomic():
                user.save()
        except IntegrityError:
            return SignupResult(check=OtpCheck.WRONG, user=None)
        audit_event_record(
            action=AuditEvent.Action.SIGNUP, user=user, request=request, data={"via": channel}
        )
    return SignupResult(check=OtpCheck.OK, user=user)


# Passwordless login and password reset ------------------------------------------------------


def _live_user(*, channel: str, recipient: str) -> User | None:
    user = user_get_by_recipient(channel=channel, recipient=recipient)
    return user if user is not None and user.is_active else None


def login_code_start(
    *,
    channel: str,
    recipient: str,
    ip_address: str | None,
    language: str | None = None,
    known_users: Collection[str] = (),
) -> OneTimeCode:
    """Send a sign-in code if an active account has this phone or email; otherwise write the
    same row and send nothing. `known_users`: the public ids of the accounts the requesting
    browser signed in to before (their owner's requests have a send budget of their own).
    Raises OtpRateLimited."""
    user = _live_user(channel=channel, recipient=recipient)
    return otp_code_issue(
        purpose=OneTimeCode.Purpose.LOGIN,
        channel=channel,
        recipient=recipient,
        ip_address=ip_address,
        message=MessageKind.CODE if user is not None else MessageKind.NONE,
        language=language,
        known_device=user is not None and user.public_id in known_users,
    )


def _mark_contact_verified(user: User, channel: str) -> None:
    field = "phone_verified" if channel == OneTimeCode.Channel.SMS else "email_verified"
    if not getattr(user, field):
        setattr(user, field, True)
        user.save(update_fields=[field])


def login_code_complete(
    *, channel: str, recipient: str, code: str, request: HttpRequest | None = None
) -> tuple[OtpCheck, User | None]:
    """The account signed in by a code, or None. A right code for no account cannot happen
    (nobody was told one) and would answer like a wrong code. A failure against an existing
    account writes LOGIN_FAILURE, as a wrong password does."""
    method = "sms" if channel == OneTimeCode.Channel.SMS else "otp-email"
    with transaction.atomic():
        check = otp_code_check(purpose=OneTimeCode.Purpose.LOGIN, recipient=recipient, code=code)
        user = _live_user(channel=channel, recipient=recipient)
        if check != OtpCheck.OK or user is None:
            if user is not None:
                audit_event_record(
                    action=AuditEvent.Action.LOGIN_FAILURE,
                    user=user,
                    request=request,
                    data={"method": method, "reason": str(check)},
                )
            return (check if check != OtpCheck.OK else OtpCheck.WRONG), None
        _mark_contact_verified(user, channel)
    return check, user


def password_reset_start(
    *,
    channel: str,
    recipient: str,
    ip_address: str | None,
    language: str | None = None,
    known_users: Collection[str] = (),
) -> OneTimeCode:
    """Send a password reset code if an active account has this phone or email; otherwise
    write the same row and send nothing. `known_users` as for login_code_start.
    Raises OtpRateLimited."""
    user = _live_user(channel=channel, recipient=recipient)
    return otp_code_issue(
        purpose=OneTimeCode.Purpose.RESET,
        channel=channel,
        recipient=recipient,
        ip_address=ip_address,
        message=MessageKind.CODE if user is not None else MessageKind.NONE,
        language=language,
        known_device=user is not None and user.public_id in known_users,
    )


def password_reset_verify(
    *, channel: str, recipient: str, code: str
) -> tuple[OtpCheck, User | None]:
    """Consume a reset code; the account whose password may now be set, or None."""
    with transaction.atomic():
        check = otp_code_check(purpose=OneTimeCode.Purpose.RESET, recipient=recipient, code=code)
        if check != OtpCheck.OK:
            return check, None
        user = _live_user(channel=channel, recipient=recipient)
        if user is None:
            return OtpCheck.WRONG, None
        _mark_contact_verified(user, channel)
    return check, user


def password_reset_complete(
    *, user: User, password: str, request: HttpRequest | None = None
) -> None:
    """Set a new password and write PASSWORD_RESET. Changing the hash changes the session
    auth hash, so every session signed in before is signed out at its next request; the
    current one is kept if it belongs to this user. Password login lock-outs for the account
    are lifted: the person has just proved they own it."""
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        locked.set_password(password)
        locked.save(update_fields=["password"])
        audit_event_record(action=AuditEvent.Action.PASSWORD_RESET, user=locked, request=request)
    user.password = locked.password
    if request is not None and getattr(request, "user", None) == locked:
        update_session_auth_hash(request, locked)
    for username in filter(None, [locked.phone, locked.email]):
        axes_reset(username=username)


# Password login and sign-out -----------------------------------------------------------------


@dataclass(frozen=True)
class PasswordLoginResult:
    user: User | None
    locked_out: bool


def login_password_attempt(
    *, request: HttpRequest, username: str, password: str
) -> PasswordLoginResult:
    """Check a password through django.contrib.auth.authenticate, where django-axes counts
    failures and refuses locked-out (username, address) pairs. `username` must already be the
    canonical phone (E.164) or lower-cased email, so that spelling a number differently does
    not reset the count. Writes LOGIN_FAILURE for every failure and LOCKOUT once, when this
    attempt is the one that locks."""
    credentials = {"username": username}
    was_locked = AxesProxyHandler.is_locked(request, credentials)
    user = authenticate(request=request, username=username, password=password)
    if user is not None:
        assert isinstance(user, User)
        return PasswordLoginResult(user=user, locked_out=False)
    locked_out = bool(getattr(request, "axes_locked_out", False)) or AxesProxyHandler.is_locked(
        request, credentials
    )
    account = user_get_by_recipient(
        channel=OneTimeCode.Channel.EMAIL if "@" in username else OneTimeCode.Channel.SMS,
        recipient=username,
    )
    with transaction.atomic():
        audit_event_record(
            action=AuditEvent.Action.LOGIN_FAILURE,
            user=account,
            request=request,
            data={
                "method": "pwd",
                "username": username,
                "reason": "locked_out" if was_locked else "bad_credentials",
            },
        )
        if locked_out and not was_locked:
            audit_event_record(
                action=AuditEvent.Action.LOCKOUT,
                user=account,
                request=request,
                data={"username": username, "failure_limit": settings.AXES_FAILURE_LIMIT},
            )
    return PasswordLoginResult(user=None, locked_out=locked_out)


def logout_record(*, request: HttpRequest) -> None:
    """Write LOGOUT for the signed-in user of `request` (the caller then ends the session)."""
    user = getattr(request, "user", None)
    if isinstance(user, User) and user.is_authenticated:
        audit_event_record(action=AuditEvent.Action.LOGOUT, user=user, request=request)
