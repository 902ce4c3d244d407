"""Partner portal pages. Thin: every page first finds the person's membership of the partner in
the URL (404 for anyone else, whatever ids they send), checks the role, then calls selectors
and services.

Roles: owners do everything; developers manage apps and webhooks and see usage; finance sees
statements, usage and payout details. Developers never see payout details."""

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import User
from partners import selectors as partner_selectors
from partners.models import Application, ApplicationReview, ClientAuthFailures, PartnerMember
from partners.oauth import ratelimit
from partners.oauth import services as oauth_services
from partners.portal import forms, selectors, services
from partners.webhooks import services as webhook_services
from partners.webhooks.models import WebhookDelivery, WebhookEndpoint

Role = PartnerMember.Role
ALL_ROLES = frozenset(Role.values)
APP_EDITORS = frozenset({Role.OWNER, Role.DEVELOPER})
FINANCE_READERS = frozenset({Role.OWNER, Role.FINANCE})
OWNERS = frozenset({Role.OWNER})
SECRET_SESSION_KEY = "partners_portal_secret"
SECRET_STASH_SALT = "partners.portal.secret-stash"
SECRET_STASH_SECONDS = 600


def member_required(roles: frozenset[str] = ALL_ROLES) -> Callable:
    """Load request.membership for the partner_id in the URL: 404 for a non-member, 403 for a
    member whose role does not allow the page."""

    def decorator(view: Callable) -> Callable:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, partner_id: Any, *args: Any, **kwargs: Any) -> Any:
            assert isinstance(request.user, User)
            membership = partner_selectors.partner_membership_get(
                user=request.user, partner_id=partner_id
            )
            if membership.role not in roles:
                raise PermissionDenied
            return view(request, membership, *args, **kwargs)

        return wrapped

    return decorator


def _context(membership: PartnerMember, active: str, **extra: Any) -> dict[str, Any]:
    role = membership.role
    return {
        "membership": membership,
        "partner": membership.partner,
        "active": active,
        "can_edit_apps": role in APP_EDITORS,
        "can_see_finance": role in FINANCE_READERS,
        "can_manage_webhooks": role in APP_EDITORS,
        "is_owner": role == Role.OWNER,
        **extra,
    }


def _stash_cipher() -> Fernet:
    key = salted_hmac(SECRET_STASH_SALT, "stash", algorithm="sha256").digest()
    return Fernet(base64.urlsafe_b64encode(key))


def _secret_stash(request: HttpRequest, *, kind: str, pk: int, secret: str) -> None:
    """Keep a new secret for the next page to show once. Session data is signed, not
    encrypted, and the session store is a database table: the secret is encrypted with a key
    derived from SECRET_KEY, so that the store and its backups never hold it readable, and it
    expires after SECRET_STASH_SECONDS if the page is never shown."""
    plain = json.dumps({"kind": kind, "pk": pk, "secret": secret}).encode()
    request.session[SECRET_SESSION_KEY] = _stash_cipher().encrypt(plain).decode()


def _secret_take(request: HttpRequest, *, kind: str, pk: int) -> str | None:
    sealed = request.session.get(SECRET_SESSION_KEY)
    if not isinstance(sealed, str):
        return None
    try:
        stashed = json.loads(_stash_cipher().decrypt(sealed, ttl=SECRET_STASH_SECONDS))
    except InvalidToken:
        del request.session[SECRET_SESSION_KEY]
        return None
    if stashed.get("kind") != kind or stashed.get("pk") != pk:
        return None
    del request.session[SECRET_SESSION_KEY]
    return str(stashed["secret"])


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


@login_required
def partner_list(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    memberships = list(partner_selectors.partner_memberships(user=request.user))
    return render(request, "partners/portal/partner_list.html", {"memberships": memberships})


@member_required()
def partner_overview(request: HttpRequest, membership: PartnerMember) -> HttpResponse:
    partner = membership.partner
    show_payout = membership.role in FINANCE_READERS
    payout = None
    if show_payout:
        payout = {
            "bank": partner.payout_bank_name,
            "holder": partner.payout_account_name,
            "account": forms.mask(partner.payout_account_number),
            "swift": forms.mask(partner.payout_swift_code, keep=3),
            "currency": partner.payout_currency,
        }
    members = (
        PartnerMember.objects.filter(partner=partner).select_related("user").order_by("role", "pk")
    )
    apps = list(partner_selectors.partner_applications(partner=partner))
    return render(
        request,
        "partners/portal/overview.html",
        _context(membership, "overview", payout=payout, members=members, app_count=len(apps)),
    )


@member_required(OWNERS)
@require_http_methods(["GET", "POST"])
def partner_settings(request: HttpRequest, membership: PartnerMember) -> HttpResponse:
    assert isinstance(request.user, User)
    partner = membership.partner
    which = request.POST.get("form") if request.method == "POST" else None
    profile_form = forms.PartnerProfileForm(
        request.POST if which == "profile" else None, instance=partner
    )
    payout_form = forms.PayoutForm(
        request.POST if which == "payout" else None,
        initial={"payout_currency": partner.payout_currency},
    )
    if which == "profile" and profile_form.is_valid():
        services.partner_profile_update(
            partner=partner, actor=request.user, data=profile_form.cleaned_data, payout=False
        )
        messages.success(request, _("The organization details were saved."))
        return redirect("partners_portal:settings", partner_id=partner.pk)
    if which == "payout" and payout_form.is_valid():
        services.partner_profile_update(
            partner=partner, actor=request.user, data=payout_form.changes(), payout=True
        )
        messages.success(request, _("The payout details were saved."))
        return redirect("partners_portal:settings", partner_id=partner.pk)
    masked = {
        "payout_bank_name": partner.payout_bank_name,
        "payout_account_name": partner.payout_account_name,
        "payout_account_number": forms.mask(partner.payout_account_number),
        "payout_swift_code": forms.mask(partner.payout_swift_code, keep=3),
    }
    return _no_store(
        render(
            request,
            "partners/portal/settings.html",
            _context(
                membership,
                "settings",
                profile_form=profile_form,
                payout_form=payout_form,
                masked=masked,
            ),
        )
    )


# Apps --------------------------------------------------------------------------------------------


def _review_status(app: Application) -> str:
    return partner_selectors.application_review_status(application=app)


@member_required()
def app_list(request: HttpRequest, membership: PartnerMember) -> HttpResponse:
    apps = [
        (app, _review_status(app))
        for app in partner_selectors.partner_applications(partner=membership.partner)
    ]
    return render(request, "partners/portal/app_list.html", _context(membership, "apps", apps=apps))


@member_required(APP_EDITORS)
@require_http_methods(["GET", "POST"])
def app_create(request: HttpRequest, membership: PartnerMember) -> HttpResponse:
    assert isinstance(request.user, User)
    partner = membership.partner
    form = forms.ApplicationForm(
        request.POST or None,
        request.FILES or None,
        initial={
            "client_type": Application.CLIENT_CONFIDENTIAL,
            "allowed_grant_types": [Application.GRANT_AUTHORIZATION_CODE, "refresh_token"],
            "allowed_scopes": ["openid", "profile"],
        },
    )
    if request.method == "POST" and form.is_valid():
        app = services.portal_application_build(partner=partner, data=form.cleaned_data)
        try:
            app.full_clean(exclude=["client_secret", "user", "logo"])
        except ValidationError as error:
            form.apply_model_errors(error)
        else:
            try:
                app, secret = services.portal_application_create(
                    partner=partner,
                    actor=request.user,
                    app=app,
                    logo=form.cleaned_data.get("logo"),
                )
            except ValidationError as error:
                form.add_error(None, error)
                return render(
                    request,
                    "partners/portal/app_form.html",
                    _context(membership, "apps", form=form, app=None),
                )
            if secret:
                _secret_stash(request, kind="app", pk=app.pk, secret=secret)
            messages.success(
                request, _("The app was created. Staff will review it before it goes live.")
            )
            return redirect("partners_portal:app_detail", partner_id=partner.pk, app_id=app.pk)
    return render(
        request,
        "partners/portal/app_form.html",
        _context(membership, "apps", form=form, app=None),
    )


@member_required()
def app_detail(request: HttpRequest, membership: PartnerMember, app_id: Any) -> HttpResponse:
    app = partner_selectors.partner_application_get(
        partner=membership.partner, application_id=app_id
    )
    secret = _secret_take(request, kind="app", pk=app.pk)
    scopes = app.allowed_scopes.split()
    grants = dict(forms.GRANT_CHOICES)
    return _no_store(
        render(
            request,
            "partners/portal/app_detail.html",
            _context(
                membership,
                "apps",
                app=app,
                secret=secret,
                review_status=_review_status(app),
                review_statuses=ApplicationReview.Status,
                live=partner_selectors.application_is_live(application=app),
                scopes=scopes,
                grants=[grants.get(g, g) for g in app.allowed_grant_types.split()],
                redirect_uris=app.redirect_uris.split(),
                refusals=ratelimit.client_auth_refusals(application=app),
            ),
        )
    )


@member_required(APP_EDITORS)
@require_http_methods(["GET", "POST"])
def app_edit(request: HttpRequest, membership: PartnerMember, app_id: Any) -> HttpResponse:
    assert isinstance(request.user, User)
    partner = membership.partner
    app = partner_selectors.partner_application_get(partner=partner, application_id=app_id)
    initial = {
        "name": app.name,
        "client_type": app.client_type,
        "redirect_uris": "\n".join(app.redirect_uris.split()),
        "allowed_grant_types": sorted(app.grant_types()),
        "allowed_scopes": app.allowed_scopes.split(),
        "homepage_url": app.homepage_url,
        "privacy_policy_url": app.privacy_policy_url,
    }
    form = forms.ApplicationForm(request.POST or None, request.FILES or None, initial=initial)
    # The client type fixes how the app authenticates; changing it is a new app.
    form.fields["client_type"].disabled = True
    if request.method == "POST" and form.is_valid():
        updated = services.portal_application_build(
            partner=partner, data=form.cleaned_data, instance=app
        )
        try:
            updated.full_clean(exclude=["client_secret", "user", "logo"])
        except ValidationError as error:
            form.apply_model_errors(error)
        else:
            services.portal_application_update(
                partner=partner, actor=request.user, app=updated, logo=form.cleaned_data.get("logo")
            )
            messages.success(request, _("The app was saved."))
            return redirect("partners_portal:app_detail", partner_id=partner.pk, app_id=app.pk)
    return render(
        request, "partners/portal/app_form.html", _context(membership, "apps", form=form, app=app)
    )


@member_required(APP_EDITORS)
@require_POST
def app_secret_rotate(request: HttpRequest, membership: PartnerMember, app_id: Any) -> HttpResponse:
    assert isinstance(request.user, User)
    partner = membership.partner
    app = partner_selectors.partner_application_get(partner=partner, application_id=app_id)
    if app.client_type != Application.CLIENT_CONFIDENTIAL:
        raise Http404
    secret = services.portal_application_secret_rotate(partner=partner, actor=request.user, app=app)
    _secret_stash(request, kind="app", pk=app.pk, secret=secret)
    messages.success(request, _("A new client secret was made. The old one no longer works."))
    return redirect("partners_portal:app_detail", partner_id=partner.pk, app_id=app.pk)


@member_required(APP_EDITORS)
@require_POST
def app_client_unlock(request: HttpRequest, membership: PartnerMember, app_id: Any) -> HttpResponse:
    """Let the app authenticate again at once, after too many failed attempts (a server that
    kept an old secret after a rotation, say)."""
    assert isinstance(request.user, User)
    partner = membership.partner
    app = partner_selectors.partner_application_get(partner=partner, application_id=app_id)
    ratelimit.client_auth_unlock(
        windows=ClientAuthFailures.objects.filter(application=app), actor=request.user
    )
    messages.success(request, _("Client authentication is unlocked for this app."))
    return redirect("partners_portal:app_detail", partner_id=partner.pk, app_id=app.pk)


@member_required(APP_EDITORS)
@require_POST
def app_client_tokens_revoke(
    request: HttpRequest, membership: PartnerMember, app_id: Any
) -> HttpResponse:
    """End every client credentials token the app holds now (a token leaked, say); its
    servers ask for new ones as usual."""
    assert isinstance(request.user, User)
    partner = membership.partner
    app = partner_selectors.partner_application_get(partner=partner, application_id=app_id)
    if app.client_type != Application.CLIENT_CONFIDENTIAL:
        raise Http404
    oauth_services.application_client_tokens_revoke(application=app, actor=request.user)
    messages.success(
        request, _("Every client credentials token of this app issued until now is revoked.")
    )
    return redirect("partners_portal:app_detail", partner_id=partner.pk, app_id=app.pk)


# Usage and statements ------------------------------------------------------------------------------


@member_required()
def usage(request: HttpRequest, membership: PartnerMember) -> HttpResponse:
    # Without a range, the last 30 days (the form is always bound, so the page shows them).
    params = request.GET.copy()
    today = timezone.now().date()
    params.setdefault("date_to", today.isoformat())
    params.setdefault("date_from", (today - timedelta(days=29)).isoformat())
    form = forms.UsageFilterForm(params)
    rows: list[selectors.UsageRow] = []
    totals = None
    group_by = "day"
    if form.is_valid():
        data = form.cleaned_data
        group_by = data["group_by"]
        rows = selectors.partner_usage(
            partner=membership.partner,
            date_from=data["date_from"],
            date_to=data["date_to"],
            group_by=[group_by],
        )
        totals = selectors.partner_usage(
            partner=membership.partner,
            date_from=data["date_from"],
            date_to=data["date_to"],
            group_by=[],
        )[0]
    return render(
        request,
        "partners/portal/usage.html",
        _context(membership, "usage", form=form, rows=rows, totals=totals, group_by=group_by),
    )


@member_required(FINANCE_READERS)
def statement_list(request: HttpRequest, membership: PartnerMember) -> HttpResponse:
    statements = selectors.partner_statements(partner=membership.partner)
    page = Paginator(statements, 25).get_page(request.GET.get("page"))
    return render(
        request,
        "partners/portal/statement_list.html",
        _context(membership, "statements", page=page),
    )


def _statement_or_404(membership: PartnerMember, statement_id: Any) -> Any:
    statement = selectors.partner_statement_get(
        partner=membership.partner, statement_id=statement_id
    )
    if statement is None:
        raise Http404
    return statement


@member_required(FINANCE_READERS)
def statement_detail(
    request: HttpRequest, membership: PartnerMember, statement_id: Any
) -> HttpResponse:
    statement = _statement_or_404(membership, statement_id)
    lines = selectors.statement_lines(partner=membership.partner, statement=statement)
    return render(
        request,
        "partners/portal/statement_detail.html",
        _context(membership, "statements", statement=statement, lines=lines),
    )


@member_required(FINANCE_READERS)
def statement_csv(
    request: HttpRequest, membership: PartnerMember, statement_id: Any
) -> HttpResponse:
    statement = _statement_or_404(membership, statement_id)
    body = selectors.statement_csv(partner=membership.partner, statement=statement)
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="statement-{statement.pk}-{statement.period_label}.csv"'
    )
    return _no_store(response)


# Webhooks ----------------------------------------------------------------------------------------


def _endpoint_or_404(membership: PartnerMember, endpoint_id: Any) -> WebhookEndpoint:
    try:
        pk = int(endpoint_id)
    except (TypeError, ValueError):
        raise Http404 from None
    endpoint = WebhookEndpoint.objects.filter(partner=membership.partner, pk=pk).first()
    if endpoint is None:
        raise Http404
    return endpoint


@member_required(APP_EDITORS)
@require_http_methods(["GET", "POST"])
def webhook_list(request: HttpRequest, membership: PartnerMember) -> HttpResponse:
    assert isinstance(request.user, User)
    partner = membership.partner
    form = forms.WebhookEndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint, secret = webhook_services.webhook_endpoint_create(
                partner=partner,
                url=form.cleaned_data["url"],
                event_types=form.cleaned_data["event_types"],
                description=form.cleaned_data["description"],
                actor=request.user,
            )
        except ValidationError as error:
            form.add_error("url" if error.code == "url_refused" else None, error)
        else:
            _secret_stash(request, kind="webhook", pk=endpoint.pk, secret=secret)
            messages.success(request, _("The endpoint was added."))
            return redirect(
                "partners_portal:webhook_detail", partner_id=partner.pk, endpoint_id=endpoint.pk
            )
    endpoints = WebhookEndpoint.objects.filter(partner=partner).order_by("pk")
    return render(
        request,
        "partners/portal/webhook_list.html",
        _context(membership, "webhooks", form=form, endpoints=endpoints),
    )


@member_required(APP_EDITORS)
@require_http_methods(["GET", "POST"])
def webhook_detail(
    request: HttpRequest, membership: PartnerMember, endpoint_id: Any
) -> HttpResponse:
    assert isinstance(request.user, User)
    partner = membership.partner
    endpoint = _endpoint_or_404(membership, endpoint_id)
    form = forms.WebhookEndpointForm(
        request.POST or None,
        initial={
            "url": endpoint.url,
            "description": endpoint.description,
            "event_types": endpoint.event_type_list(),
            "is_active": endpoint.is_active,
        },
    )
    if request.method == "POST" and form.is_valid():
        try:
            webhook_services.webhook_endpoint_update(
                endpoint=endpoint,
                url=form.cleaned_data["url"],
                event_types=form.cleaned_data["event_types"],
                description=form.cleaned_data["description"],
                is_active=form.cleaned_data["is_active"],
                actor=request.user,
            )
        except ValidationError as error:
            form.add_error("url" if error.code == "url_refused" else None, error)
        else:
            messages.success(request, _("The endpoint was saved."))
            return redirect(
                "partners_portal:webhook_detail", partner_id=partner.pk, endpoint_id=endpoint.pk
            )
    deliveries = (
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .select_related("event")
        .prefetch_related("attempt_rows")
        .order_by("-created_at", "-pk")
    )
    page = Paginator(deliveries, 20).get_page(request.GET.get("page"))
    secret = _secret_take(request, kind="webhook", pk=endpoint.pk)
    return _no_store(
        render(
            request,
            "partners/portal/webhook_detail.html",
            _context(
                membership, "webhooks", endpoint=endpoint, form=form, page=page, secret=secret
            ),
        )
    )


@member_required(APP_EDITORS)
@require_POST
def webhook_secret_rotate(
    request: HttpRequest, membership: PartnerMember, endpoint_id: Any
) -> HttpResponse:
    assert isinstance(request.user, User)
    endpoint = _endpoint_or_404(membership, endpoint_id)
    secret = webhook_services.webhook_endpoint_secret_rotate(endpoint=endpoint, actor=request.user)
    _secret_stash(request, kind="webhook", pk=endpoint.pk, secret=secret)
    messages.success(request, _("A new signing secret was made. The old one no longer works."))
    return redirect(
        "partners_portal:webhook_detail",
        partner_id=membership.partner.pk,
        endpoint_id=endpoint.pk,
    )


@member_required(APP_EDITORS)
@require_POST
def webhook_delete(
    request: HttpRequest, membership: PartnerMember, endpoint_id: Any
) -> HttpResponse:
    assert isinstance(request.user, User)
    endpoint = _endpoint_or_404(membership, endpoint_id)
    webhook_services.webhook_endpoint_delete(endpoint=endpoint, actor=request.user)
    messages.success(request, _("The endpoint was removed."))
    return redirect(
        reverse("partners_portal:webhooks", kwargs={"partner_id": membership.partner.pk})
    )
