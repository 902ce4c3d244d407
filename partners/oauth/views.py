"""OAuth 2.0 / OpenID Connect endpoints: DOT's views with Tokenpass's rules on top.

Every endpoint caps parameter sizes (invalid_request), never redirects to an unregistered
redirect URI (an error page with status 400 instead), and answers bad input with RFC 6749 /
OpenID Connect errors rather than a server error."""

import calendar
import json
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST
from oauth2_provider import views as dot_views
from oauth2_provider.exceptions import OAuthToolkitError
from oauth2_provider.models import get_device_grant_model
from oauth2_provider.oauth2_backends import _add_iss_to_redirect
from oauth2_provider.signals import app_authorized
from oauth2_provider.views.mixins import OAuthLibMixin
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from partners.models import Application
from partners.oauth import grants, keys, ratelimit
from partners.oauth.backends import session_auth_time
from partners.oauth.device import (
    device_code_digest,
    device_grant_codes_seal,
    user_code_digest,
    user_code_normalize,
)
from partners.oauth.selectors import (
    client_credentials_access_token,
    connected_apps_for_user,
    consent_covers,
    scope_descriptions,
)
from partners.oauth.services import (
    authorization_code_details_set,
    consent_record,
    consent_revoke,
    token_checksum,
)
from partners.oauth.spending import AuthorizationDetailsRefused, spending_limits
from partners.oauth.tokens import client_credentials_claims, issuer

# Longest value accepted per parameter; anything else is capped at DEFAULT_PARAM_LIMIT.
PARAM_LIMITS = {
    "client_id": 255,
    "client_secret": 255,
    "redirect_uri": 2000,
    "post_logout_redirect_uri": 2000,
    "state": 1024,
    "nonce": 512,
    "scope": 1000,
    "response_type": 50,
    "response_mode": 20,
    "grant_type": 100,
    "code": 255,
    "code_challenge": 128,
    "code_challenge_method": 10,
    "code_verifier": 128,
    "prompt": 50,
    "max_age": 10,
    "login_hint": 255,
    "ui_locales": 100,
    "token": 4096,
    "token_type_hint": 20,
    "refresh_token": 255,
    "id_token_hint": 8192,
    "device_code": 100,
    "user_code": 32,
}
DEFAULT_PARAM_LIMIT = 2048
MAX_PARAMS = 40
MAX_AUTHORIZATION_HEADER = 8192
PKCE_S256_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def oversized_parameter(request: HttpRequest) -> str | None:
    """The name of the first parameter that is too long or holds a NUL byte (or "parameters"
    if there are too many), or None."""
    return oversized_among(
        (
            (name, value)
            for query in (request.GET, request.POST)
            for name, values in query.lists()
            for value in values
        ),
        authorization=request.META.get("HTTP_AUTHORIZATION", ""),
    )


def oversized_among(parameters: Iterable[tuple[str, str]], *, authorization: str) -> str | None:
    """oversized_parameter's rule on a request's parameters, as (name, value) pairs (a
    repeated parameter once per value), and its Authorization header."""
    count = 0
    for name, value in parameters:
        count += 1
        if len(name) > 100 or len(value) > PARAM_LIMITS.get(name, DEFAULT_PARAM_LIMIT):
            return name[:100]
        # PostgreSQL text cannot hold NUL; no legitimate OAuth parameter contains one.
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "")[:100] or "parameters"
    if count > MAX_PARAMS:
        return "parameters"
    if len(authorization) > MAX_AUTHORIZATION_HEADER:
        return "Authorization"
    return None


def oauth_json_error(error: str, description: str, status: int = 400) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    return response


def oversized_json_error(name: str) -> JsonResponse:
    return oauth_json_error("invalid_request", f"The {name} parameter is too long or malformed.")


def oauth_error_page(
    request: HttpRequest, *, error: str, description: str, status: int = 400
) -> HttpResponse:
    return render(
        request,
        "partners/oauth_error.html",
        {"error": error, "description": description},
        status=status,
    )


def _with_params(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _without_params(full_path: str, *names: str) -> str:
    parts = urlsplit(full_path)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    return urlunsplit(parts._replace(query=urlencode(query)))


# ---------------------------------------------------------------------------------------
# Authorization endpoint


class AuthorizationView(dot_views.AuthorizationView):
    """The authorization endpoint and the consent page.

    Consent is remembered per person, app and scope set; a new scope, or prompt=consent,
    asks again. prompt=login and an exceeded max_age send the person to sign in afresh;
    prompt=none never shows a page."""

    template_name = "partners/authorize.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        too_long = oversized_parameter(request)
        if too_long:
            return oauth_error_page(
                request,
                error="invalid_request",
                description=_("The %(name)s parameter is too long or malformed.")
                % {"name": too_long},
            )
        return super().dispatch(request, *args, **kwargs)

    # -- errors: never to an unregistered redirect URI, always with iss (RFC 9207)

    def error_response(self, error: Any, application: Any, **kwargs: Any) -> HttpResponse:
        redirect_allowed, response = OAuthLibMixin.error_response(self, error, **kwargs)
        oauthlib_error = response["error"]
        if redirect_allowed and oauthlib_error.redirect_uri:
            url = _add_iss_to_redirect(response["url"], issuer())
            return self.redirect(url, application)
        return oauth_error_page(
            self.request,
            error=oauthlib_error.error,
            description=oauthlib_error.description or "",
            status=oauthlib_error.status_code or 400,
        )

    def handle_no_permission(self) -> HttpResponse:
        response = super().handle_no_permission()
        # DOT answers prompt=none without a session with login_required but no iss (RFC 9207).
        location = response.get("Location", "") if response.status_code == 302 else ""
        if "error=" in location and not location.startswith(str(self.get_login_url())):
            response["Location"] = _add_iss_to_redirect(location, issuer())
        return response

    def _error_redirect(
        self, *, credentials: dict, application: Any, error: str, description: str
    ) -> HttpResponse:
        params = {"error": error, "error_description": description}
        if credentials.get("state"):
            params["state"] = credentials["state"]
        url = _with_params(credentials["redirect_uri"], **params)
        return self.redirect(_add_iss_to_redirect(url, issuer()), application)

    def _fresh_login(self, *, drop: tuple[str, ...]) -> HttpResponse:
        """Send the person to sign in again and come back here. The current session ends:
        the login page would otherwise wave a signed-in person straight through."""
        next_url = _without_params(self.request.get_full_path(), *drop)
        logout(self.request)
        return redirect_to_login(next_url, self.get_login_url(), self.get_redirect_field_name())

    def _issue_code(
        self,
        *,
        scopes: list[str],
        credentials: dict,
        application: Any,
        monthly_allowance: int | None = None,
    ) -> HttpResponse:
        """A code without a page; `monthly_allowance`: the limit in force, when the client
        asked for it as authorization details (the token response then carries it)."""
        try:
            with transaction.atomic():
                uri, _headers, _body, _status = self.create_authorization_response(
                    request=self.request,
                    scopes=" ".join(scopes),
                    credentials=credentials,
                    allow=True,
                )
                if monthly_allowance is not None:
                    _code_details_record(uri, monthly_allowance)
        except OAuthToolkitError as error:
            return self.error_response(error, application)
        return self.redirect(uri, application)

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            scopes, credentials = self.validate_authorization_request(request)
        except OAuthToolkitError as error:
            return self.error_response(error, application=None)
        except (ValueError, UnicodeError):
            return oauth_error_page(
                request, error="invalid_request", description=_("Malformed request.")
            )
        application = Application.objects.select_related("partner").get(
            client_id=credentials["client_id"]
        )
        # PKCE with S256 only, for every client (RFC 9700 §2.1.1).
        if credentials.get("code_challenge_method") != "S256" or not PKCE_S256_CHALLENGE.match(
            credentials.get("code_challenge") or ""
        ):
            return self._error_redirect(
                credentials=credentials,
                application=application,
                error="invalid_request",
                description="PKCE with code_challenge_method=S256 is required.",
            )
        # The wallet's spending allowance, if the client asks for one (RFC 9396).
        limits = spending_limits()
        try:
            raw_details = request.GET.get("authorization_details")
            if limits is None and raw_details:
                raise AuthorizationDetailsRefused("No authorization_details type is supported.")
            requested_allowance = (
                limits.requested(raw_details, scopes=scopes) if limits is not None else None
            )
        except AuthorizationDetailsRefused as error:
            return self._error_redirect(
                credentials=credentials,
                application=application,
                error="invalid_authorization_details",
                description=str(error),
            )
        prompt = set(request.GET.get("prompt", "").split())
        if "none" in prompt and len(prompt) > 1:
            return self._error_redirect(
                credentials=credentials,
                application=application,
                error="invalid_request",
                description="prompt=none cannot be combined with other values.",
            )
        max_age_seconds: int | None = None
        max_age = request.GET.get("max_age") or ""
        if max_age:
            try:
                max_age_seconds = int(max_age)
                if max_age_seconds < 0:
                    raise ValueError
            except ValueError:
                return self._error_redirect(
                    credentials=credentials,
                    application=application,
                    error="invalid_request",
                    description="max_age must be a non-negative integer.",
                )
        too_old = (
            max_age_seconds is not None
            and time.time() - session_auth_time(request) > max_age_seconds
        )
        consented = application.skip_authorization or consent_covers(
            user=request.user,  # type: ignore[arg-type]
            application=application,
            scopes=scopes,
        )
        current_allowance = (
            limits.current(user=request.user, app=application).monthly_limit  # type: ignore[arg-type]
            if limits is not None and limits.scope in scopes
            else None
        )
        if requested_allowance is not None and requested_allowance != current_allowance:
            # A different limit than the one in force is a new request: the person decides.
            consented = False
        if "none" in prompt:
            # Checked here as well as in the validator: oauthlib only runs its silent-login
            # hooks for OpenID requests, and prompt=none must never show a page or skip consent.
            if too_old:
                return self._error_redirect(
                    credentials=credentials,
                    application=application,
                    error="login_required",
                    description="The session is older than max_age.",
                )
            if not consented:
                return self._error_redirect(
                    credentials=credentials,
                    application=application,
                    error="consent_required",
                    description="The user has not allowed this app these scopes.",
                )
        elif "login" in prompt:
            return self._fresh_login(drop=("prompt",))
        elif too_old:
            return self._fresh_login(drop=())
        if "ui_locales" in credentials and isinstance(credentials["ui_locales"], list):
            credentials["ui_locales"] = " ".join(credentials["ui_locales"])
        if "none" in prompt or ("consent" not in prompt and consented):
            return self._issue_code(
                scopes=scopes,
                credentials=credentials,
                application=application,
                monthly_allowance=current_allowance if requested_allowance is not None else None,
            )

        self.oauth2_data = {
            "application": application,
            "client_id": credentials["client_id"],
            "redirect_uri": credentials["redirect_uri"],
            "response_type": credentials["response_type"],
            "state": credentials["state"],
            "scopes": scopes,
            "code_challenge": credentials.get("code_challenge"),
            "code_challenge_method": credentials.get("code_challenge_method"),
            "nonce": credentials.get("nonce"),
            "claims": json.dumps(credentials["claims"]) if credentials.get("claims") else None,
        }
        form = self.get_form(self.get_form_class())
        allowance_form = None
        if limits is not None and current_allowance is not None:
            initial = current_allowance if requested_allowance is None else requested_allowance
            allowance_form = limits.form(initial=initial)
        return self._consent_page(
            form=form,
            application=application,
            scopes=scopes,
            allowance_form=allowance_form,
            details_requested=requested_allowance is not None and allowance_form is not None,
        )

    def _consent_page(
        self,
        *,
        form: Any,
        application: Application,
        scopes: list[str],
        allowance_form: Any,
        details_requested: bool,
        status: int = 200,
    ) -> HttpResponse:
        response: HttpResponse = self.render_to_response(
            self.get_context_data(
                form=form,
                application=application,
                partner=application.partner,
                scope_items=scope_descriptions(scopes),
                allowance_form=allowance_form,
                details_requested=details_requested,
            ),
            status=status,
        )
        return response

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = self.get_form()
        if not form.is_valid():
            return oauth_error_page(
                request, error="invalid_request", description=_("The form was incomplete.")
            )
        client_id = form.cleaned_data["client_id"]
        application = Application.objects.filter(client_id=client_id).first()
        if application is None:
            return oauth_error_page(
                request, error="invalid_client", description=_("Unknown application.")
            )
        scopes = (form.cleaned_data.get("scope") or "").split()
        monthly_allowance: int | None = None
        limits = spending_limits()
        if form.cleaned_data.get("allow") and limits is not None and limits.scope in scopes:
            allowance_form = limits.form(request.POST)
            if not allowance_form.is_valid():
                # Nothing is issued or remembered until the limit is a valid amount.
                return self._consent_page(
                    form=form,
                    application=application,
                    scopes=scopes,
                    allowance_form=allowance_form,
                    details_requested=bool(request.POST.get("authorization_details_requested")),
                    status=400,
                )
            monthly_allowance = allowance_form.cleaned_data["monthly_allowance"]
        response = self.form_valid(form)
        location = response.get("Location", "") if response.status_code == 302 else ""
        returned = parse_qs(urlsplit(location).query)
        if form.cleaned_data.get("allow") and "code" in returned and "error" not in returned:
            # The consent and the spending limit it came with are saved together.
            with transaction.atomic():
                consent_record(
                    user=request.user,  # type: ignore[arg-type]
                    application=application,
                    scopes=scopes,
                    request=request,
                )
                if limits is not None and monthly_allowance is not None:
                    limits.save(
                        user=request.user,  # type: ignore[arg-type]
                        app=application,
                        monthly_limit=monthly_allowance,
                    )
                    if request.POST.get("authorization_details_requested"):
                        _code_details_record(location, monthly_allowance)
        return response


def _code_details_record(redirect_uri: str, monthly_allowance: int) -> None:
    """RFC 9396: the code in this redirect was granted the wallet allowance the client asked
    for as authorization details, with the limit the person chose."""
    code = parse_qs(urlsplit(redirect_uri).query).get("code", [""])[0]
    limits = spending_limits()
    if code and limits is not None:
        authorization_code_details_set(
            code=code,
            details=[{"type": limits.details_type, "monthly_limit": monthly_allowance}],
        )


# ---------------------------------------------------------------------------------------
# Token, revocation and introspection endpoints


def _client_auth_retry_after(response: HttpResponse) -> HttpResponse:
    if response.status_code == 429:
        response["Retry-After"] = str(settings.OAUTH_CLIENT_AUTH_FAILURE_WINDOW)
    return response


# Token endpoint parameters that are secrets: kept out of error reports (the Authorization
# header is, by Django's own filter).
SECRET_TOKEN_PARAMETERS = (
    "client_secret",
    "refresh_token",
    "code",
    "code_verifier",
    "device_code",
    "password",
)


# The token endpoint's body (RFC 6749 §3.2), and the bodies Django parses into request.POST.
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_FORM_TYPES = frozenset({FORM_CONTENT_TYPE, "multipart/form-data"})


class TokenView(dot_views.TokenView):
    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # DOT wraps dispatch in method_decorator(csrf_exempt) and (login_not_required), which
        # rebuild their wrappers on every request (a tenth of what Django costs a grant here)
        # and only mark the view. The marks are set below; as_view copies them to the view.
        return View.dispatch(self, request, *args, **kwargs)

    dispatch.csrf_exempt = True  # type: ignore[attr-defined]
    dispatch.login_required = False  # type: ignore[attr-defined]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # What @sensitive_post_parameters(...) does, without its per-request wrappers.
        request.sensitive_post_parameters = SECRET_TOKEN_PARAMETERS  # type: ignore[attr-defined]
        too_long = oversized_parameter(request)
        if too_long:
            return oversized_json_error(too_long)
        grant_type = request.POST.get("grant_type")
        if grant_type is None and request.content_type not in _FORM_TYPES and request.body:
            # oauthlib would find no grant_type in a JSON body and call it unsupported.
            return oauth_json_error(
                "invalid_request",
                f"The token endpoint takes its parameters as {FORM_CONTENT_TYPE} "
                "(RFC 6749 section 3.2).",
            )
        if grant_type and grant_type not in {
            "authorization_code",
            "refresh_token",
            "client_credentials",
            Application.GRANT_DEVICE_CODE,
        }:
            return oauth_json_error("unsupported_grant_type", "This grant type is not supported.")
        if grant_type == Application.GRANT_DEVICE_CODE:
            return _client_auth_retry_after(self._device_token(request))
        answered = grants.token_response(request=request)
        if answered is not None:
            return answered
        return _client_auth_retry_after(self.authorization_flow_token_response(request))

    @method_decorator(sensitive_post_parameters(*SECRET_TOKEN_PARAMETERS))
    def authorization_flow_token_response(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        """DOT's, except that the token just issued is read back (one more query per grant)
        only when something listens to the app_authorized signal, and that a client
        credentials token, which is not stored, is built from its claims for the signal."""
        _url, headers, body, status = self.create_token_response(request)
        if status == 200 and app_authorized.has_listeners():
            issued = json.loads(body).get("access_token")
            if issued is not None:
                # Its row, or for a client credentials token (not stored) the unsaved
                # instance its claims stand for: as bearer tokens are looked up.
                token = self.get_validator_class()()._load_access_token(issued)
                if token is not None:
                    app_authorized.send(sender=self, request=request, token=token)
        response = HttpResponse(content=body, status=status)
        for name, value in headers.items():
            response[name] = value
        return response

    def _device_token(self, request: HttpRequest) -> HttpResponse:
        device_code = request.POST.get("device_code")
        if not device_code:
            return oauth_json_error("invalid_request", "The device_code parameter is missing.")
        client_id = ratelimit.presented_client_id(
            authorization=request.META.get("HTTP_AUTHORIZATION"),
            body_client_id=request.POST.get("client_id"),
        )
        device_model = get_device_grant_model()
        sealed = device_code_digest(device_code)
        device = device_model.objects.filter(device_code=sealed).first()
        # A device code is only good for the client it was issued to.
        if device is None or device.client_id != client_id:
            return oauth_json_error("invalid_grant", "Unknown device code.")
        device.is_expired()
        if device.status == device_model.AUTHORIZATION_PENDING:
            # RFC 8628 §3.5: polling faster than the interval earns slow_down.
            key = f"oauth:device-poll:{sealed}"
            if not cache.add(key, 1, timeout=max(device.interval, 1)):
                return oauth_json_error("slow_down", "Poll less often.")
        return self.device_flow_token_response(request, sealed)


@method_decorator(csrf_exempt, name="dispatch")
class RevokeTokenView(dot_views.RevokeTokenView):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        too_long = oversized_parameter(request)
        if too_long:
            return oversized_json_error(too_long)
        if not request.POST.get("token"):
            return oauth_json_error("invalid_request", "The token parameter is missing.")
        return _client_auth_retry_after(super().post(request, *args, **kwargs))


@method_decorator(csrf_exempt, name="dispatch")
class IntrospectTokenView(OAuthLibMixin, View):
    """RFC 7662. The caller authenticates as a client; it learns about tokens issued to its
    own partner's apps only (any other token is reported inactive)."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        from oauth2_provider.models import get_access_token_model, get_refresh_token_model

        too_long = oversized_parameter(request)
        if too_long:
            return oversized_json_error(too_long)
        client_id = ratelimit.presented_client_id(
            authorization=request.META.get("HTTP_AUTHORIZATION"),
            body_client_id=request.POST.get("client_id"),
        )
        ip = request.META.get("REMOTE_ADDR")
        if ratelimit.client_auth_blocked(client_id=client_id, ip=ip):
            return _client_auth_retry_after(
                oauth_json_error("invalid_client", "Too many failed client authentications.", 429)
            )
        # Failures are counted by the validator's authenticate_client.
        caller = self._authenticate_client(request)
        if caller is None:
            response = oauth_json_error("invalid_client", "Client authentication failed.", 401)
            response["WWW-Authenticate"] = 'Basic realm="tokenpass"'
            return response
        token_value = request.POST.get("token")
        if not token_value:
            return oauth_json_error("invalid_request", "The token parameter is missing.")
        checksum = token_checksum(token_value)
        inactive = JsonResponse({"active": False})
        inactive["Cache-Control"] = "no-store"
        hint = request.POST.get("token_type_hint")
        access = None
        refresh = None
        claims = client_credentials_claims(token_value)
        if claims is not None:
            # Not stored: the signature is checked, then the revocation list.
            access = client_credentials_access_token(token=token_value, claims=claims)
            if access is None:
                return inactive
        elif hint != "refresh_token":
            access = (
                get_access_token_model()
                .objects.select_related("user", "application__partner")
                .filter(token_checksum=checksum)
                .first()
            )
        if access is None:
            refresh = (
                get_refresh_token_model()
                .objects.select_related("user", "application__partner", "access_token")
                .filter(token_checksum=checksum, revoked__isnull=True)
                .first()
            )
        if access is None and refresh is None and hint == "refresh_token":
            access = (
                get_access_token_model()
                .objects.select_related("user", "application__partner")
                .filter(token_checksum=checksum)
                .first()
            )
        token = access or refresh
        if token is None or token.application is None:
            return inactive
        application = token.application
        if not self._may_see(caller, application) or not application.is_usable(None):
            return inactive
        data: dict[str, Any] = {
            "active": True,
            "iss": issuer(),
            "client_id": application.client_id,
            "iat": int(calendar.timegm(token.created.utctimetuple())),
        }
        if token.user is not None:
            data["sub"] = token.user.public_id
        if access is not None:
            if access.is_expired():
                return inactive
            data["scope"] = access.scope
            data["token_type"] = "Bearer"
            data["exp"] = int(calendar.timegm(access.expires.utctimetuple()))
            token_claims = claims if claims is not None else _unverified_claims(token_value)
            if token_claims.get("jti"):
                data["jti"] = token_claims["jti"]
            data["aud"] = token_claims.get("aud", application.client_id)
        else:
            assert refresh is not None
            current = refresh.access_token
            data["scope"] = current.scope if current is not None else ""
            data["token_type"] = "refresh_token"
            if current is None:
                return inactive
        response = JsonResponse(data)
        response["Cache-Control"] = "no-store"
        return response

    def _authenticate_client(self, request: HttpRequest) -> Application | None:
        from oauthlib.common import Request as OauthlibRequest

        core = self.get_oauthlib_core()
        uri, http_method, body, headers = core._extract_params(request)
        oauth_request = OauthlibRequest(uri, http_method, body, headers)
        validator = core.server.request_validator
        try:
            if not validator.authenticate_client(oauth_request):
                return None
        except oauth_errors.OAuth2Error:
            return None
        client = oauth_request.client
        if client is None or client.client_type != Application.CLIENT_CONFIDENTIAL:
            return None
        return client if client.is_usable(None) else None

    @staticmethod
    def _may_see(caller: Application, application: Application) -> bool:
        if caller.pk == application.pk:
            return True
        return caller.partner_id is not None and caller.partner_id == application.partner_id


def _unverified_claims(token: str) -> dict[str, Any]:
    """Claims of one of our own JWTs, already matched by checksum (so trusted)."""
    from jwcrypto import jws

    try:
        parsed = jws.JWS()
        parsed.deserialize(token)
        claims = json.loads(parsed.objects["payload"].decode("utf-8"))
    except Exception:  # any parse failure: no claims
        return {}
    return claims if isinstance(claims, dict) else {}


# ---------------------------------------------------------------------------------------
# Device authorization grant (RFC 8628)


@method_decorator(csrf_exempt, name="dispatch")
class DeviceAuthorizationView(dot_views.DeviceAuthorizationView):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        too_long = oversized_parameter(request)
        if too_long:
            return oversized_json_error(too_long)
        client_id = request.POST.get("client_id") or ratelimit.presented_client_id(
            authorization=request.META.get("HTTP_AUTHORIZATION"), body_client_id=None
        )
        # PostgreSQL text cannot hold NUL (the body's parameters were checked; Basic's not).
        usable_id = client_id and "\x00" not in client_id
        application = Application.objects.filter(client_id=client_id).first() if usable_id else None
        if application is None or not application.is_usable(None):
            return oauth_json_error("invalid_client", "Unknown client.", 401)
        if not application.allows_grant_type(Application.GRANT_DEVICE_CODE):
            return oauth_json_error(
                "unauthorized_client", "This client may not use the device authorization grant."
            )
        requested = request.POST.get("scope", "").split()
        if any(scope not in application.scope_list() for scope in requested):
            return oauth_json_error("invalid_scope", "A requested scope is not allowed.")
        if "client_id" not in request.POST:
            # DOT reads client_id from the body; a confidential client may have sent Basic.
            body = request.POST.copy()
            body["client_id"] = client_id
            request.POST = body  # type: ignore[assignment]
        with transaction.atomic():
            response = super().post(request, *args, **kwargs)
            if response.status_code == 200:
                issued = json.loads(response.content)
                device_grant_codes_seal(
                    device_code=issued["device_code"], user_code=issued["user_code"]
                )
        return _client_auth_retry_after(response)


DEVICE_CODE_ATTEMPTS = 10
DEVICE_CODE_WINDOW = 600


@method_decorator(never_cache, name="dispatch")
class DeviceVerifyView(View):
    """/device: the signed-in person types the code shown on the device, sees which app is
    asking for what, and approves or denies it."""

    template_name = "partners/device.html"

    def _attempt_key(self, request: HttpRequest) -> str:
        return f"oauth:device-verify:{request.user.pk}:{request.META.get('REMOTE_ADDR')}"

    def get(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        code = user_code_normalize(request.GET.get("user_code", ""))
        return render(request, self.template_name, {"user_code": code, "step": "enter"})

    def post(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(reverse("oauth-device"))
        code = user_code_normalize(request.POST.get("user_code", ""))
        action = request.POST.get("action", "")
        key = self._attempt_key(request)
        if int(cache.get(key, 0)) >= DEVICE_CODE_ATTEMPTS:
            return render(
                request,
                self.template_name,
                {
                    "step": "enter",
                    "user_code": code,
                    "error": _("Too many attempts. Wait a few minutes and try again."),
                },
                status=429,
            )
        device_model = get_device_grant_model()
        device = (
            device_model.objects.filter(user_code=user_code_digest(code)).first() if code else None
        )
        if (
            device is None
            or device.is_expired()
            or device.status != device_model.AUTHORIZATION_PENDING
        ):
            if not cache.add(key, 1, timeout=DEVICE_CODE_WINDOW):
                cache.incr(key)
            return render(
                request,
                self.template_name,
                {
                    "step": "enter",
                    "user_code": code,
                    "error": _(
                        "That code is not valid. Check the code on your device and try again."
                    ),
                },
                status=400,
            )
        application = (
            Application.objects.select_related("partner").filter(client_id=device.client_id).first()
        )
        if application is None or not application.is_usable(None):
            return render(
                request,
                self.template_name,
                {"step": "enter", "user_code": code, "error": _("This app is not available.")},
                status=400,
            )
        scopes = device.scope.split() if device.scope else []
        if action not in ("approve", "deny"):
            return render(
                request,
                self.template_name,
                {
                    "step": "confirm",
                    "user_code": code,
                    "application": application,
                    "partner": application.partner,
                    "scope_items": scope_descriptions(scopes),
                },
            )
        if action == "deny":
            device_model.objects.filter(
                pk=device.pk, status=device_model.AUTHORIZATION_PENDING
            ).update(status=device_model.DENIED, user=request.user)
            return render(
                request, self.template_name, {"step": "denied", "application": application}
            )
        updated = device_model.objects.filter(
            pk=device.pk, status=device_model.AUTHORIZATION_PENDING
        ).update(status=device_model.AUTHORIZED, user=request.user)
        if updated:
            consent_record(
                user=request.user, application=application, scopes=scopes, request=request
            )
        return render(request, self.template_name, {"step": "approved", "application": application})


# ---------------------------------------------------------------------------------------
# OpenID Connect: discovery, JWKS, userinfo, RP-initiated logout


@method_decorator(csrf_exempt, name="dispatch")
class UserInfoView(dot_views.UserInfoView):
    pass


def openid_configuration(request: HttpRequest) -> JsonResponse:
    """OpenID Provider metadata (also served as RFC 8414 authorization server metadata)."""

    def url(name: str) -> str:
        return request.build_absolute_uri(reverse(name))

    scopes = list(settings.OAUTH2_PROVIDER["SCOPES"])
    from accounts.oidc import CLAIMS_SUPPORTED

    data = {
        "issuer": issuer(),
        "authorization_endpoint": url("oauth2_provider:authorize"),
        "token_endpoint": url("oauth2_provider:token"),
        "userinfo_endpoint": url("oauth2_provider:user-info"),
        "jwks_uri": url("oidc-jwks"),
        "revocation_endpoint": url("oauth2_provider:revoke-token"),
        "introspection_endpoint": url("oauth2_provider:introspect"),
        "device_authorization_endpoint": url("oauth2_provider:device-authorization"),
        "end_session_endpoint": url("oauth2_provider:rp-initiated-logout"),
        # OpenID Connect Back-Channel Logout 1.0 (partners/oauth/backchannel.py); logout
        # tokens name the person (sub), not a session.
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            Application.GRANT_DEVICE_CODE,
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [*CLAIMS_SUPPORTED, "iss", "aud", "exp", "iat", "auth_time", "nonce"],
        "prompt_values_supported": ["none", "login", "consent"],
        "authorization_response_iss_parameter_supported": True,
        "ui_locales_supported": ["en", "zh-Hans"],
    }
    response = JsonResponse(data)
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = "public, max-age=300"
    return response


def jwks(request: HttpRequest) -> JsonResponse:
    """Every published key. Short cache: a staged key must reach partners before it signs."""
    response = JsonResponse(keys.public_jwks())
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = "public, max-age=300"
    return response


class RPInitiatedLogoutView(dot_views.RPInitiatedLogoutView):
    template_name = "partners/logout_confirm.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        too_long = oversized_parameter(request)
        if too_long:
            return oauth_error_page(
                request,
                error="invalid_request",
                description=_("The %(name)s parameter is too long or malformed.")
                % {"name": too_long},
            )
        try:
            return super().dispatch(request, *args, **kwargs)
        except Application.DoesNotExist:
            return oauth_error_page(
                request, error="invalid_client", description=_("Unknown application.")
            )

    def error_response(self, error: Any) -> HttpResponse:
        return oauth_error_page(
            self.request,
            error=getattr(error, "error", "invalid_request"),
            description=str(getattr(error, "description", "")),
            status=getattr(error, "status_code", 400),
        )


# ---------------------------------------------------------------------------------------
# Connected apps (account page)


@login_required
@never_cache
def connected_apps(request: HttpRequest) -> HttpResponse:
    apps = connected_apps_for_user(user=request.user)  # type: ignore[arg-type]
    # Apps allowed to charge the wallet show their monthly limit and this month's spend.
    limits = spending_limits()
    rows = [
        (
            item,
            limits.current(user=request.user, app=item.application)  # type: ignore[arg-type]
            if limits is not None
            and any(scope == limits.scope for scope, _description in item.scopes)
            else None,
        )
        for item in apps
    ]
    return render(
        request, "partners/connected_apps.html", {"connected_apps": apps, "connected_rows": rows}
    )


@login_required
@require_POST
def connected_app_revoke(request: HttpRequest, client_id: str) -> HttpResponse:
    from django.contrib import messages

    application = Application.objects.filter(client_id=client_id).first()
    if application is None or not consent_revoke(
        user=request.user,  # type: ignore[arg-type]
        application=application,
        request=request,
    ):
        messages.error(request, _("That app has no access to revoke."))
        return redirect("connected-apps")
    messages.success(
        request,
        _("%(app)s can no longer access your account.")
        % {"app": application.name or application.client_id},
    )
    return redirect("connected-apps")
