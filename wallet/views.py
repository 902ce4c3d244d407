"""Wallet pages and the payment webhook. Thin: they validate input and call services."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import User
from wallet import selectors, services
from wallet.exceptions import CodeNotRedeemable, InvalidRequest, PaymentRejected, TooManyAttempts
from wallet.forms import RedeemForm
from wallet.payments import payment_provider_get


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    """The user's balance, what is held, the buckets in the order they will be spent, and
    the latest charges."""
    assert isinstance(request.user, User)
    context = {
        "summary": selectors.wallet_summary(user=request.user),
        "buckets": selectors.bucket_list(user=request.user)[:50],
        "charges": selectors.charge_list(user=request.user)[:20],
    }
    return render(request, "wallet/overview.html", context)


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
