"""Pages of the identity flows: sign-up, password and code login, password reset, sign-out.

Views parse input with accounts.forms, call accounts.services, and keep the state of a flow
that spans pages (the pending sign-up, the address a code went to) in the session. Answers do
not depend on whether an account exists: the services write and limit the same rows either
way and the pages say the same thing."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.hashers import make_password
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.crypto import constant_time_compare
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from accounts.audit import client_ip
from accounts.forms import CodeForm, IdentifierForm, PasswordLoginForm, SetPasswordForm, SignupForm
from accounts.known_devices import known_device_users
from accounts.login_flow import complete_primary_login, safe_next_url
from accounts.models import OneTimeCode, User
from accounts.selectors import login_lockout_retry_at
from accounts.services import (
    OtpCheck,
    OtpRateLimited,
    login_code_complete,
    login_code_start,
    login_password_attempt,
    logout_record,
    password_reset_complete,
    password_reset_start,
    password_reset_verify,
    signup_complete,
    signup_start,
)

SIGNUP_SESSION_KEY = "tokenpass_signup"
LOGIN_CODE_SESSION_KEY = "tokenpass_login_code"
RESET_SESSION_KEY = "tokenpass_reset"
RESET_VERIFIED_SESSION_KEY = "tokenpass_reset_verified"
# A flow left half-way is forgotten after this long; the person starts again.
PENDING_MAX_AGE = 30 * 60
RESET_PASSWORD_MAX_AGE = 10 * 60
NEXT_MAX_LENGTH = 2048

LOGIN_FAILED = _("The phone number, email or password is not right.")
CODE_ERRORS = {
    OtpCheck.WRONG: _("That code is not right. Check the message and try again."),
    OtpCheck.EXPIRED: _("That code has expired. Send a new one."),
    OtpCheck.EXHAUSTED: _("Too many wrong tries for this code. Send a new one."),
    OtpCheck.USED: _("That code has already been used. Send a new one."),
    OtpCheck.MISSING: _("That code is not right. Send a new one."),
}


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("accounts:profile")
    return redirect("accounts:login")


def _next_param(request: HttpRequest) -> str:
    """The `next` URL of this request if it is a safe, same-site target, else ""."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if len(candidate) <= NEXT_MAX_LENGTH and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return ""


def _with_next(url: str, next_url: str) -> str:
    return f"{url}?{urlencode({'next': next_url})}" if next_url else url


def _rate_limited_message(retry_after: int) -> str:
    return ngettext(
        "Too many codes were requested. You can ask for a new one in %(seconds)d second.",
        "Too many codes were requested. You can ask for a new one in %(seconds)d seconds.",
        retry_after,
    ) % {"seconds": retry_after}


def _rate_limited(response: HttpResponse, retry_after: int) -> HttpResponse:
    response.status_code = 429
    response["Retry-After"] = str(retry_after)
    return response


def _pending(request: HttpRequest, key: str) -> dict[str, Any] | None:
    pending = request.session.get(key)
    if not isinstance(pending, dict):
        return None
    if time.time() - pending.get("started", 0) > PENDING_MAX_AGE:
        request.session.pop(key, None)
        return None
    return pending


def _language() -> str:
    return translation.get_language() or "en"


# Password login ------------------------------------------------------------------------------


@sensitive_post_parameters("password")
@never_cache
@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    next_url = _next_param(request)
    if request.method == "GET" and request.user.is_authenticated:
        return HttpResponseRedirect(safe_next_url(request, next_url))
    form = PasswordLoginForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            result = login_password_attempt(
                request=request,
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password"],
            )
            if result.user is not None:
                return complete_primary_login(
                    request, user=result.user, method="pwd", next_url=next_url
                )
            if result.locked_out:
                return login_lockout_response(
                    request, credentials={"username": form.cleaned_data["username"]}
                )
            form.add_error(None, LOGIN_FAILED)
            status = 400
        else:
            status = 400
    return render(
        request,
        "accounts/login.html",
        {"form": form, "next": next_url, "tab": "password"},
        status=status,
    )


def login_lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
) -> HttpResponse:
    """The page for a password login that django-axes refuses (AXES_LOCKOUT_CALLABLE): it says
    when to try again and offers sign-in by code, which the lock-out does not cover."""
    username = (credentials or {}).get("username") or None
    ip_address = getattr(request, "axes_ip_address", None) or client_ip(request)
    retry_at = login_lockout_retry_at(request=request, username=username, ip_address=ip_address)
    seconds = max(1, math.ceil((retry_at - timezone.now()).total_seconds())) if retry_at else None
    wait_text = ""
    if seconds is not None:
        minutes = math.ceil(seconds / 60)
        wait_text = ngettext(
            "Try again in %(minutes)d minute.", "Try again in %(minutes)d minutes.", minutes
        ) % {"minutes": minutes}
    response = render(
        request,
        "accounts/login_locked.html",
        {
            "retry_at": retry_at,
            "retry_seconds": seconds,
            "wait_text": wait_text,
            "next": _next_param(request),
        },
        status=429,
    )
    if seconds is not None:
        response["Retry-After"] = str(seconds)
    return response


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout_record(request=request)
    logout(request)
    messages.success(request, _("You have signed out."))
    return redirect("accounts:login")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return render(request, "errors/csrf.html", {"reason": reason}, status=403)


# Flows that send a code -----------------------------------------------------------------------


@dataclass(frozen=True)
class CodeFlow:
    """What differs between the pages that ask for a code sent by a start page."""

    session_key: str
    start_url: str
    verify_url: str
    title: Any
    sent_text: Any  # with %(recipient)s


SIGNUP_FLOW = CodeFlow(
    session_key=SIGNUP_SESSION_KEY,
    start_url="accounts:signup",
    verify_url="accounts:signup_verify",
    title=_("Confirm your number"),
    sent_text=_("We sent a 6-digit code to %(recipient)s. Enter it to create your account."),
)
LOGIN_CODE_FLOW = CodeFlow(
    session_key=LOGIN_CODE_SESSION_KEY,
    start_url="accounts:login_code",
    verify_url="accounts:login_code_verify",
    title=_("Enter your sign-in code"),
    sent_text=_(
        "If %(recipient)s belongs to a Tokenpass account, we sent it a 6-digit code. "
        "Enter it to sign in."
    ),
)
RESET_FLOW = CodeFlow(
    session_key=RESET_SESSION_KEY,
    start_url="accounts:reset",
    verify_url="accounts:reset_verify",
    title=_("Enter your reset code"),
    sent_text=_(
        "If %(recipient)s belongs to a Tokenpass account, we sent it a 6-digit code. "
        "Enter it to choose a new password."
    ),
)


def _code_page(
    request: HttpRequest,
    flow: CodeFlow,
    pending: dict[str, Any],
    form: CodeForm,
    status: int = 200,
    error: str = "",
) -> HttpResponse:
    title = flow.title
    if flow is SIGNUP_FLOW and pending["channel"] == OneTimeCode.Channel.EMAIL:
        title = _("Confirm your email")
    return render(
        request,
        "accounts/code_verify.html",
        {
            "form": form,
            "title": title,
            "sent_text": flow.sent_text % {"recipient": pending["recipient"]},
            "start_url": _with_next(reverse(flow.start_url), pending.get("next", "")),
            "flow": flow,
            "error": error,
        },
        status=status,
    )


def _code_resend(
    request: HttpRequest, flow: CodeFlow, pending: dict[str, Any], start: Any
) -> HttpResponse:
    try:
        start(
            channel=pending["channel"],
            recipient=pending["recipient"],
            ip_address=client_ip(request),
            language=_language(),
            known_users=known_device_users(request),
        )
    except OtpRateLimited as exc:
        page = _code_page(
            request, flow, pending, CodeForm(), error=_rate_limited_message(exc.retry_after)
        )
        return _rate_limited(page, exc.retry_after)
    messages.info(request, _("We sent a new code. Codes sent before it no longer work."))
    return redirect(flow.verify_url)


def _code_verify(
    request: HttpRequest,
    flow: CodeFlow,
    *,
    start: Callable[..., Any],
    check: Callable[[dict[str, Any], str], tuple[Any, User | None]],
    success: Callable[[dict[str, Any], User], HttpResponse],
) -> HttpResponse:
    """The page that takes the code a start page sent: resend, check, then the flow's next step.

    ``check`` answers (outcome, user) for the code typed; ``success`` runs once the pending
    state has left the session.
    """
    pending = _pending(request, flow.session_key)
    if pending is None:
        return redirect(flow.start_url)
    if request.method == "POST" and "resend" in request.POST:
        return _code_resend(request, flow, pending, start)
    form = CodeForm(request.POST if request.method == "POST" else None)
    if request.method != "POST":
        return _code_page(request, flow, pending, form)
    if not form.is_valid():
        return _code_page(request, flow, pending, form, status=400)
    outcome, user = check(pending, form.cleaned_data["code"])
    if user is None:
        form.add_error("code", CODE_ERRORS[outcome])
        return _code_page(request, flow, pending, form, status=400)
    request.session.pop(flow.session_key, None)
    return success(pending, user)


def _login_method(pending: dict[str, Any]) -> str:
    return "sms" if pending["channel"] == OneTimeCode.Channel.SMS else "otp-email"


# Sign-up ----------------------------------------------------------------------------------------


@sensitive_post_parameters("password1", "password2")
@never_cache
@require_http_methods(["GET", "POST"])
def signup_view(request: HttpRequest) -> HttpResponse:
    next_url = _next_param(request)
    via = request.POST.get("via") or request.GET.get("via") or "phone"
    via = via if via in ("phone", "email") else "phone"
    status = 200
    if request.method == "POST":
        form = SignupForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                signup_start(
                    channel=data["channel"],
                    recipient=data["recipient"],
                    ip_address=client_ip(request),
                    language=_language(),
                )
            except OtpRateLimited as exc:
                form.add_error(None, _rate_limited_message(exc.retry_after))
                return _rate_limited(_signup_page(request, form, via, next_url), exc.retry_after)
            # Only the hash of the password waits in the session for the code.
            request.session[SIGNUP_SESSION_KEY] = {
                "channel": data["channel"],
                "recipient": data["recipient"],
                "password_hash": make_password(data["password1"]),
                "display_name": data["display_name"].strip(),
                "next": next_url,
                "started": int(time.time()),
            }
            return redirect("accounts:signup_verify")
        status = 400
    else:
        form = SignupForm(initial={"via": via})
    return _signup_page(request, form, via, next_url, status=status)


def _signup_page(
    request: HttpRequest, form: SignupForm, via: str, next_url: str, status: int = 200
) -> HttpResponse:
    return render(
        request,
        "accounts/signup.html",
        {
            "form": form,
            "via": via,
            "next": next_url,
            "phone_tab_url": _with_next(reverse("accounts:signup"), next_url),
            "email_tab_url": _with_next(reverse("accounts:signup"), next_url)
            + ("&" if next_url else "?")
            + "via=email",
            "login_url": _with_next(reverse("accounts:login"), next_url),
        },
        status=status,
    )


@never_cache
@require_http_methods(["GET", "POST"])
def signup_verify_view(request: HttpRequest) -> HttpResponse:
    def check(pending: dict[str, Any], code: str) -> tuple[Any, User | None]:
        result = signup_complete(
            channel=pending["channel"],
            recipient=pending["recipient"],
            password_hash=pending["password_hash"],
            display_name=pending["display_name"],
            code=code,
            locale=_language(),
            request=request,
        )
        return result.check, result.user

    def success(pending: dict[str, Any], user: User) -> HttpResponse:
        messages.success(request, _("Welcome to Tokenpass! Your account is ready."))
        return complete_primary_login(
            request, user=user, method=_login_method(pending), next_url=pending.get("next") or None
        )

    return _code_verify(request, SIGNUP_FLOW, start=signup_start, check=check, success=success)


# Sign-in by code -------------------------------------------------------------------------------


def _identifier_start(
    request: HttpRequest, flow: CodeFlow, start: Any, template: str, extra: dict[str, Any]
) -> HttpResponse:
    next_url = _next_param(request)
    form = IdentifierForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            recipient = form.cleaned_data["username"]
            try:
                start(
                    channel=form.channel,
                    recipient=recipient,
                    ip_address=client_ip(request),
                    language=_language(),
                    known_users=known_device_users(request),
                )
            except OtpRateLimited as exc:
                form.add_error(None, _rate_limited_message(exc.retry_after))
                response = render(
                    request, template, {"form": form, "next": next_url, **extra}, status=429
                )
                return _rate_limited(response, exc.retry_after)
            request.session[flow.session_key] = {
                "channel": form.channel,
                "recipient": recipient,
                "next": next_url,
                "started": int(time.time()),
            }
            return redirect(flow.verify_url)
        status = 400
    return render(request, template, {"form": form, "next": next_url, **extra}, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
def login_code_view(request: HttpRequest) -> HttpResponse:
    return _identifier_start(
        request, LOGIN_CODE_FLOW, login_code_start, "accounts/login_code.html", {"tab": "code"}
    )


@never_cache
@require_http_methods(["GET", "POST"])
def login_code_verify_view(request: HttpRequest) -> HttpResponse:
    def check(pending: dict[str, Any], code: str) -> tuple[Any, User | None]:
        return login_code_complete(
            channel=pending["channel"], recipient=pending["recipient"], code=code, request=request
        )

    def success(pending: dict[str, Any], user: User) -> HttpResponse:
        return complete_primary_login(
            request, user=user, method=_login_method(pending), next_url=pending.get("next") or None
        )

    return _code_verify(
        request, LOGIN_CODE_FLOW, start=login_code_start, check=check, success=success
    )


# Password reset -------------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
def reset_view(request: HttpRequest) -> HttpResponse:
    return _identifier_start(request, RESET_FLOW, password_reset_start, "accounts/reset.html", {})


@never_cache
@require_http_methods(["GET", "POST"])
def reset_verify_view(request: HttpRequest) -> HttpResponse:
    def check(pending: dict[str, Any], code: str) -> tuple[Any, User | None]:
        return password_reset_verify(
            channel=pending["channel"], recipient=pending["recipient"], code=code
        )

    def success(pending: dict[str, Any], user: User) -> HttpResponse:
        # A new session key: whoever knew the old one (fixation) does not get to set the password.
        request.session.cycle_key()
        request.session[RESET_VERIFIED_SESSION_KEY] = {
            "user_id": user.pk,
            "auth_hash": user.get_session_auth_hash(),
            "started": int(time.time()),
        }
        return redirect("accounts:reset_password")

    return _code_verify(
        request, RESET_FLOW, start=password_reset_start, check=check, success=success
    )


@sensitive_post_parameters("password1", "password2")
@never_cache
@require_http_methods(["GET", "POST"])
def reset_password_view(request: HttpRequest) -> HttpResponse:
    verified = request.session.get(RESET_VERIFIED_SESSION_KEY)
    user = None
    if isinstance(verified, dict) and time.time() - verified["started"] <= RESET_PASSWORD_MAX_AGE:
        user = User.objects.filter(pk=verified["user_id"], is_active=True).first()
        # The code was for the password the account had then; if it changed since, start over.
        if user is not None and not constant_time_compare(
            user.get_session_auth_hash(), verified.get("auth_hash", "")
        ):
            user = None
    if user is None:
        request.session.pop(RESET_VERIFIED_SESSION_KEY, None)
        messages.error(request, _("Your reset code has expired. Ask for a new one."))
        return redirect("accounts:reset")
    form = SetPasswordForm(request.POST if request.method == "POST" else None, user=user)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            password_reset_complete(
                user=user, password=form.cleaned_data["password1"], request=request
            )
            request.session.pop(RESET_VERIFIED_SESSION_KEY, None)
            messages.success(
                request,
                _("Your password has been changed and your other sessions were signed out."),
            )
            if request.user.is_authenticated:
                return redirect("accounts:profile")
            return redirect("accounts:login")
        status = 400
    return render(request, "accounts/reset_password.html", {"form": form}, status=status)
