"""The staff admin, behind two-factor authentication.

Staff sign in through the normal sign-in page (password, then their authenticator app); the
admin never shows a login form of its own and lets in only sessions that django-otp has
verified. A staff member without two-factor
is sent to set it up first; one whose session predates it is asked for a code.
"""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django_otp.admin import OTPAdminSite

from accounts.login_flow import safe_next_url


class TokenpassAdminSite(OTPAdminSite):
    site_header = _("Tokenpass administration")
    site_title = _("Tokenpass admin")
    index_title = _("Administration")

    def __init__(self, name: str = "admin") -> None:
        super().__init__(name)

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        from accounts.services_mfa import mfa_enabled
        from accounts.views_mfa import mfa_step_up_begin

        next_url = safe_next_url(
            request,
            request.GET.get(REDIRECT_FIELD_NAME) or reverse("admin:index", current_app=self.name),
        )
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(next_url, resolve_url(settings.LOGIN_URL))
        # OTPMiddleware gives every request's user is_verified().
        verified = getattr(user, "is_verified", lambda: False)()
        if user.is_active and user.is_staff and not verified:
            if mfa_enabled(user=user):
                return mfa_step_up_begin(request, next_url=next_url)
            messages.warning(
                request,
                _(
                    "Staff accounts need two-factor authentication to use the admin. "
                    "Set it up below, then open the admin again."
                ),
            )
            query = urlencode({REDIRECT_FIELD_NAME: next_url})
            return HttpResponseRedirect(f"{reverse('accounts:mfa_setup')}?{query}")
        if not (user.is_active and user.is_staff):
            # One sign-in page for everyone: the admin never shows a login form of its own.
            messages.error(request, _("Your account does not have access to the admin."))
            return HttpResponseRedirect(reverse("accounts:profile"))
        return super().login(request, extra_context)
