"""Account pages: profile, security (password, two-factor, sessions) and the security log."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms_account import AccountPasswordChangeForm, ProfileForm
from accounts.models import User
from accounts.selectors_account import (
    audit_event_list_for_user,
    reauth_blocked,
    user_session_list,
    user_time_zone,
)
from accounts.services_account import (
    reauth_failure_record,
    user_password_change,
    user_profile_update,
    user_session_end,
    user_session_ensure,
    user_sessions_end_others,
    user_sessions_prune,
)
from accounts.services_mfa import mfa_enabled, recovery_codes_left

SECURITY_LOG_PAGE_SIZE = 25


@login_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    form = ProfileForm(
        request.POST or None,
        initial={
            "display_name": user.display_name,
            "locale": user.locale,
            "time_zone": user.time_zone,
        },
    )
    if request.method == "POST" and form.is_valid():
        changed = user_profile_update(request=request, user=user, **form.cleaned_data)
        if "locale" in changed:
            translation.activate(user.locale)
        messages.success(request, _("Your profile is saved.") if changed else _("Nothing changed."))
        response = redirect("accounts:profile")
        if "locale" in changed:
            # The page language follows the chosen language from the next page on.
            response.set_cookie(
                settings.LANGUAGE_COOKIE_NAME,
                user.locale,
                max_age=settings.LANGUAGE_COOKIE_AGE,
                samesite="Lax",
                secure=request.is_secure(),
            )
        return response
    return render(
        request,
        "accounts/profile.html",
        {"form": form, "account": user},
        status=400 if form.errors else 200,
    )


def _security_page(
    request: HttpRequest, *, password_form: AccountPasswordChangeForm, status: int = 200
) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    user_sessions_prune(user=user)
    user_session_ensure(request=request, user=user)
    enabled = mfa_enabled(user=user)
    return render(
        request,
        "accounts/security.html",
        {
            "password_form": password_form,
            "mfa_enabled": enabled,
            "recovery_codes_left": recovery_codes_left(user=user) if enabled else 0,
            "sessions": user_session_list(user=user),
            "current_session_key": request.session.session_key,
            "tz_name": user_time_zone(user=user),
        },
        status=status,
    )


@login_required
@sensitive_post_parameters("old_password", "new_password1", "new_password2")
@require_http_methods(["GET", "POST"])
def security(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    blocked = request.method == "POST" and reauth_blocked(user=user)
    form = AccountPasswordChangeForm(user, request.POST or None, blocked=blocked)
    if request.method == "POST":
        if form.is_valid():
            ended = user_password_change(
                request=request, user=user, new_password=form.cleaned_data["new_password1"]
            )
            message = _("Your password is changed.")
            if ended:
                message += " " + ngettext(
                    "%(count)d other session was signed out.",
                    "%(count)d other sessions were signed out.",
                    ended,
                ) % {"count": ended}
            messages.success(request, message)
            return redirect("accounts:security")
        if form.wrong_password:
            reauth_failure_record(user=user, request=request, purpose="password_change")
        return _security_page(request, password_form=form, status=429 if blocked else 400)
    return _security_page(request, password_form=form)


@login_required
@require_POST
def sessions_end_others(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    ended = user_sessions_end_others(
        user=user, keep_session_key=request.session.session_key, request=request
    )
    if ended:
        messages.success(
            request,
            ngettext(
                "Signed out %(count)d other session.",
                "Signed out %(count)d other sessions.",
                ended,
            )
            % {"count": ended},
        )
    else:
        messages.info(request, _("You were not signed in anywhere else."))
    return redirect("accounts:security")


@login_required
@require_POST
def session_end(request: HttpRequest, session_id: int) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    if user_session_end(user=user, session_id=session_id, request=request):
        messages.success(request, _("That session is signed out."))
    else:
        messages.info(request, _("That session had already ended."))
    return redirect("accounts:security")


@login_required
def security_log(request: HttpRequest) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    paginator = Paginator(audit_event_list_for_user(user=user), SECURITY_LOG_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return render(
        request,
        "accounts/security_log.html",
        {"page": page, "tz_name": user_time_zone(user=user)},
    )
