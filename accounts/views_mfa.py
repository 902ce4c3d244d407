"""Two-factor pages: the second sign-in step, setup, recovery codes, and turning it off."""

import time
from typing import Any

import django_otp
from django.contrib import messages
from django.contrib.auth import REDIRECT_FIELD_NAME, logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.audit import audit_event_record
from accounts.forms_account import PasswordConfirmForm, SecondFactorForm, TotpCodeForm
from accounts.known_devices import known_device_remember
from accounts.login_flow import (
    AUTH_METHODS_SESSION_KEY,
    PENDING_MFA_SESSION_KEY,
    safe_next_url,
    session_start,
)
from accounts.models import AuditEvent, User
from accounts.selectors_account import reauth_blocked
from accounts.services_account import reauth_failure_record
from accounts.services_mfa import (
    MfaError,
    MfaThrottled,
    mfa_disable,
    mfa_enabled,
    recovery_codes_left,
    recovery_codes_regenerate,
    second_factor_verify,
    totp_qr_svg,
    totp_secret_base32,
    totp_setup_confirm,
    totp_setup_device_get_or_create,
)

# A password alone must not keep a half-signed-in state alive for long, nor allow many
# guesses at a six-digit code.
PENDING_MFA_TTL_SECONDS = 5 * 60
PENDING_MFA_MAX_ATTEMPTS = 5


def mfa_step_up_begin(request: HttpRequest, *, next_url: str) -> HttpResponse:
    """Ask a signed-in user with two-factor for a code (their session started before they
    turned it on, so it is not verified), then continue to `next_url`."""
    methods = request.session.get(AUTH_METHODS_SESSION_KEY) or ["pwd"]
    request.session[PENDING_MFA_SESSION_KEY] = {
        "user_id": request.user.pk,
        "method": methods[0],
        "next": safe_next_url(request, next_url),
        "started": int(time.time()),
    }
    return HttpResponseRedirect(reverse("accounts:login_mfa"))


def _pending_drop(request: HttpRequest) -> None:
    request.session.pop(PENDING_MFA_SESSION_KEY, None)


@sensitive_post_parameters("code")
@never_cache
@require_http_methods(["GET", "POST"])
def login_mfa(request: HttpRequest) -> HttpResponse:
    pending: Any = request.session.get(PENDING_MFA_SESSION_KEY)
    if not isinstance(pending, dict) or "user_id" not in pending:
        messages.info(request, _("Sign in first."))
        return redirect("accounts:login")
    if time.time() - int(pending.get("started", 0)) > PENDING_MFA_TTL_SECONDS:
        _pending_drop(request)
        messages.warning(request, _("Your sign-in expired. Sign in again."))
        return redirect("accounts:login")
    user = User.objects.filter(pk=pending["user_id"], is_active=True).first()
    if user is None:
        _pending_drop(request)
        return redirect("accounts:login")

    form = SecondFactorForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        throttled = False
        try:
            factor = second_factor_verify(
                request=request, user=user, token=form.cleaned_data["code"]
            )
        except MfaThrottled as exc:
            factor, throttled = None, True
            form.add_error("code", str(exc))
        if factor is not None:
            _pending_drop(request)
            session_start(request, user=user, methods=[pending.get("method", "pwd"), "otp"])
            django_otp.login(request, factor.device)
            if factor.recovery:
                messages.warning(
                    request,
                    ngettext(
                        "You signed in with a recovery code. %(count)d code is left.",
                        "You signed in with a recovery code. %(count)d codes are left.",
                        factor.recovery_codes_left,
                    )
                    % {"count": factor.recovery_codes_left},
                )
            response = HttpResponseRedirect(safe_next_url(request, pending.get("next")))
            known_device_remember(request, response, user=user)
            return response

        attempts = int(pending.get("attempts", 0)) + 1
        audit_event_record(
            action=AuditEvent.Action.LOGIN_FAILURE,
            user=user,
            request=request,
            data={"factor": "otp", "attempt": attempts},
        )
        if attempts >= PENDING_MFA_MAX_ATTEMPTS:
            _pending_drop(request)
            if request.user.is_authenticated:
                logout(request)
            messages.error(request, _("Too many wrong codes. Sign in again."))
            return redirect("accounts:login")
        pending["attempts"] = attempts
        request.session[PENDING_MFA_SESSION_KEY] = pending
        if not throttled:
            form.add_error("code", _("That code is not valid."))

    attempts_left = PENDING_MFA_MAX_ATTEMPTS - int(pending.get("attempts", 0))
    return render(
        request,
        "accounts/mfa_login.html",
        {"form": form, "attempts_left": attempts_left},
        status=400 if form.errors else 200,
    )


def _next_from(request: HttpRequest) -> str:
    candidate = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME)
    return safe_next_url(request, candidate) if candidate else ""


@login_required
@sensitive_post_parameters("code")
@never_cache
@require_http_methods(["GET", "POST"])
def mfa_setup(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    next_url = _next_from(request)
    try:
        device = totp_setup_device_get_or_create(user=user)
    except MfaError as exc:
        messages.info(request, str(exc))
        return redirect(next_url or "accounts:security")

    form = TotpCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            codes = totp_setup_confirm(request=request, user=user, token=form.cleaned_data["code"])
        except MfaError as exc:
            form.add_error("code", str(exc))
        else:
            # This session proved the factor just now: it counts as verified (the admin, for
            # staff, opens without another code).
            django_otp.login(request, TOTPDevice.objects.get(pk=device.pk))
            messages.success(request, _("Two-factor authentication is on."))
            return render(
                request,
                "accounts/mfa_recovery_codes_new.html",
                {"codes": codes, "next_url": next_url, "first_time": True},
            )

    secret = totp_secret_base32(device=device)
    return render(
        request,
        "accounts/mfa_setup.html",
        {
            "form": form,
            # segno writes the SVG from the otpauth URI; nothing user-supplied goes into it.
            "qr_svg": mark_safe(totp_qr_svg(device=device)),  # noqa: S308
            "secret": secret,
            "secret_groups": [secret[i : i + 4] for i in range(0, len(secret), 4)],
            "next_url": next_url,
        },
        status=400 if form.errors else 200,
    )


def _reauth_blocked_on_post(request: HttpRequest, user: User) -> bool:
    return request.method == "POST" and reauth_blocked(user=user)


def _password_confirmed(request: HttpRequest, form: PasswordConfirmForm, purpose: str) -> bool:
    if form.is_valid():
        return True
    if form.wrong_password:
        reauth_failure_record(user=form.user, request=request, purpose=purpose)
    return False


def _form_status(form: PasswordConfirmForm) -> int:
    if form.blocked:
        return 429
    return 400 if form.errors else 200


@login_required
@sensitive_post_parameters("password")
@never_cache
@require_http_methods(["GET", "POST"])
def mfa_recovery_codes(request: HttpRequest) -> HttpResponse:
    """Shows how many recovery codes are left; with the current password, replaces them."""
    user: User = request.user  # type: ignore[assignment]
    if not mfa_enabled(user=user):
        messages.info(request, _("Turn on two-factor authentication first."))
        return redirect("accounts:security")
    form = PasswordConfirmForm(
        request.POST or None, user=user, blocked=_reauth_blocked_on_post(request, user)
    )
    if request.method == "POST" and _password_confirmed(request, form, "recovery_codes"):
        try:
            codes = recovery_codes_regenerate(request=request, user=user)
        except MfaError as exc:
            messages.error(request, str(exc))
            return redirect("accounts:security")
        messages.success(request, _("New recovery codes are ready. The old ones no longer work."))
        return render(
            request,
            "accounts/mfa_recovery_codes_new.html",
            {"codes": codes, "next_url": "", "first_time": False},
        )
    return render(
        request,
        "accounts/mfa_recovery_codes.html",
        {"form": form, "codes_left": recovery_codes_left(user=user)},
        status=_form_status(form),
    )


@login_required
@sensitive_post_parameters("password")
@never_cache
@require_http_methods(["GET", "POST"])
def mfa_disable_view(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    if not mfa_enabled(user=user):
        messages.info(request, _("Two-factor authentication is already off."))
        return redirect("accounts:security")
    form = PasswordConfirmForm(
        request.POST or None, user=user, blocked=_reauth_blocked_on_post(request, user)
    )
    if request.method == "POST" and _password_confirmed(request, form, "mfa_disable"):
        try:
            mfa_disable(request=request, user=user)
        except MfaError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, _("Two-factor authentication is off."))
        return redirect("accounts:security")
    return render(
        request,
        "accounts/mfa_disable.html",
        {"form": form},
        status=_form_status(form),
    )
