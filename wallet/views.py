"""Wallet pages and the payment webhook. Thin: they validate input and call services."""

import csv
from collections.abc import Iterator
from datetime import UTC
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import User
from partners.models import Consent
from wallet import selectors, services
from wallet.charts import spending_chart_svg
from wallet.exceptions import CodeNotRedeemable, InvalidRequest, PaymentRejected, TooManyAttempts
from wallet.forms import WALLET_SCOPE, AllowanceForm, HistoryFilterForm, RedeemForm
from wallet.payments import payment_provider_get

HISTORY_PAGE_SIZE = 25


def _history_form(request: HttpRequest, user: User) -> HistoryFilterForm:
    return HistoryFilterForm(
        request.GET,
        apps=selectors.history_apps(user=user),
        models=selectors.history_models(user=user),
    )


def _history_row(transaction: Any, app_names: dict[int, str]) -> dict[str, Any]:
    metadata = transaction.metadata or {}
    app_id = metadata.get("app")
    return {
        "created_at": transaction.created_at,
        "kind": transaction.kind,
        "kind_display": transaction.get_kind_display(),
        "app": app_names.get(app_id, "") if isinstance(app_id, int) else "",
        "model": (
            metadata.get("model")
            if isinstance(metadata.get("model"), str)
            else getattr(transaction, "refund_model", None) or ""
        ),
        "balance_change": transaction.balance_change,
        "held_change": transaction.held_change,
    }


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    """The user's balance, its buckets in spending order with their expiry, a chart of what
    apps charged over time, and the filtered, paginated history of every movement."""
    assert isinstance(request.user, User)
    user = request.user
    form = _history_form(request, user)
    page = None
    rows: list[dict[str, Any]] = []
    chart_range, chart_group = 30, "app"
    if form.is_valid():
        chart_range = form.cleaned_data.get("range") or 30
        chart_group = form.cleaned_data.get("group") or "app"
        history = selectors.history_list(user=user, **form.history_filters())
        page = Paginator(history, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
        app_names = {pk: app.name or app.client_id for pk, app in form.apps.items()}
        rows = [_history_row(transaction, app_names) for transaction in page.object_list]
    series = selectors.spending_series(user=user, days=chart_range, group_by=chart_group)
    group_label = _("app") if chart_group == "app" else _("model")
    chart = spending_chart_svg(
        series=series,
        title=_("Tokens spent per %(period)s by %(group)s, last %(days)s days")
        % {
            "period": _("day") if series.period_days == 1 else _("week"),
            "group": group_label,
            "days": chart_range,
        },
        description=_("%(total)s tokens in total.") % {"total": series.total},
    )
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "summary": selectors.wallet_summary(user=user),
        "buckets": selectors.bucket_list(user=user)[:50],
        "form": form,
        "page": page,
        "rows": rows,
        "query": query.urlencode(),
        "chart": chart,
        "series": series,
        "chart_range": chart_range,
        "chart_group": chart_group,
    }
    return render(request, "wallet/overview.html", context)


def _csv_text(value: str) -> str:
    """A text cell that spreadsheets will not run as a formula (app names come from
    partners): a leading =, +, -, @, tab or carriage return is neutralised with a quote."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


@login_required
def history_csv(request: HttpRequest) -> HttpResponseBase:
    """The filtered history as CSV (streamed): UTC ISO timestamps and integer amounts."""
    assert isinstance(request.user, User)
    user = request.user
    form = _history_form(request, user)
    if not form.is_valid():
        return JsonResponse(
            {
                "error": {
                    "code": "invalid_request",
                    "message": _("Some filters are not valid."),
                    "details": form.errors.get_json_data(),
                }
            },
            status=400,
        )
    history = selectors.history_list(user=user, **form.history_filters())
    app_names = {pk: app.name or app.client_id for pk, app in form.apps.items()}
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(
            ["created_at", "kind", "app", "model", "balance_change", "held_change", "reference"]
        )
        for transaction in history.iterator(chunk_size=500):
            row = _history_row(transaction, app_names)
            yield writer.writerow(
                [
                    transaction.created_at.astimezone(UTC).isoformat(),
                    row["kind"],
                    _csv_text(row["app"]),
                    _csv_text(row["model"]),
                    int(row["balance_change"]),
                    int(row["held_change"]),
                    transaction.reference,
                ]
            )

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="wallet-history.csv"'
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def redeem(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    form = RedeemForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            bucket = services.wallet_code_redeem(user=request.user, code=form.cleaned_data["code"])
        except CodeNotRedeemable:
            form.add_error("code", _("This code is not valid or was already used."))
        except TooManyAttempts:
            form.add_error("code", _("Too many attempts. Try again in an hour."))
        else:
            messages.success(
                request,
                _("%(amount)s tokens were added to your wallet.") % {"amount": bucket.amount},
            )
            return redirect("wallet:redeem")
    summary = selectors.wallet_summary(user=request.user)
    return render(request, "wallet/redeem.html", {"form": form, "summary": summary})


@login_required
@require_POST
def allowance_update(request: HttpRequest, client_id: str) -> HttpResponse:
    """Change (or set to zero) the monthly limit of an app the user allowed to charge the
    wallet, from the Connected apps page."""
    assert isinstance(request.user, User)
    consent = (
        Consent.objects.filter(user=request.user, application__client_id=client_id)
        .select_related("application")
        .first()
    )
    if consent is None or WALLET_SCOPE not in consent.scope_set():
        messages.error(request, _("That app cannot charge your wallet."))
        return redirect("connected-apps")
    form = AllowanceForm(request.POST)
    if not form.is_valid():
        for error in form.errors.get("monthly_allowance", []):
            messages.error(request, str(error))
        return redirect("connected-apps")
    limit = form.cleaned_data["monthly_allowance"]
    app = consent.application
    services.allowance_set(user=request.user, app=app, monthly_limit=limit)
    name = app.name or app.client_id
    if limit == 0:
        messages.success(request, _("%(app)s can no longer spend your tokens.") % {"app": name})
    else:
        messages.success(
            request,
            _("%(app)s may now spend up to %(limit)s tokens a month.")
            % {"app": name, "limit": limit},
        )
    return redirect("connected-apps")


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(
        {"error": {"code": code, "message": message, "details": None}}, status=status
    )


@csrf_exempt
@require_POST
def payment_webhook(request: HttpRequest, provider: str) -> JsonResponse:
    """Credit a paid top-up. Answers 200 once the notification is handled (also for a
    repeat, so that the provider stops retrying), 400 for a bad signature or body."""
    payment_provider = payment_provider_get(provider)
    if payment_provider is None:
        return _error(404, "unknown_provider", _("No such payment provider."))
    try:
        notification = payment_provider.parse_webhook(headers=request.headers, body=request.body)
    except PaymentRejected as error:
        return _error(400, error.code, error.message)
    if not notification.succeeded:
        return JsonResponse({"credited": False, "status": "ignored"})
    user = User.objects.filter(public_id=notification.user_public_id, is_active=True).first()
    if user is None:
        return _error(422, "unknown_user", _("No such user."))
    try:
        topup, created = services.wallet_topup_credit(
            provider=provider,
            provider_transaction_id=notification.transaction_id,
            user=user,
            amount=notification.amount,
            payload=notification.payload,
        )
    except InvalidRequest as error:
        return _error(400, error.code, error.message)
    return JsonResponse({"credited": created, "topup": topup.pk})
