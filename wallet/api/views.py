"""The charging API for partner apps: /api/wallet/.

Authentication is an OAuth access token with the ``wallet:charge`` scope, either
- the user's access token: it names both the user (whose wallet is charged) and the app; or
- the partner server's client-credentials token with a ``Tokenpass-User`` header naming the
  person (their OIDC ``sub``), who must have given this app a standing allowance: consent to
  ``wallet:charge`` with a monthly limit above zero, not revoked on the Connected apps page.
 Every call that
moves value needs an ``Idempotency-Key`` header: a replay returns the first result, a reuse
with a different body answers 409. Errors use {"error": {"code", "message", "details"}}.
"""

from typing import Any

from django.utils.translation import gettext as _
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from oauth2_provider.contrib.rest_framework import TokenHasScope
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from accounts.models import User
from config.api import ApiError
from partners.models import Application
from wallet import selectors, services
from wallet.api import serializers as s
from wallet.exceptions import (
    AllowanceExceeded,
    HoldNotOpen,
    IdempotencyConflict,
    InsufficientBalance,
    NotFound,
    RefundTooLarge,
    UnknownModel,
    WalletError,
)

STATUS_BY_ERROR: dict[type[WalletError], int] = {
    InsufficientBalance: status.HTTP_402_PAYMENT_REQUIRED,
    AllowanceExceeded: status.HTTP_403_FORBIDDEN,
    IdempotencyConflict: status.HTTP_409_CONFLICT,
    HoldNotOpen: status.HTTP_409_CONFLICT,
    RefundTooLarge: status.HTTP_409_CONFLICT,
    NotFound: status.HTTP_404_NOT_FOUND,
    UnknownModel: status.HTTP_422_UNPROCESSABLE_ENTITY,
}

IDEMPOTENCY_HEADER = OpenApiParameter(
    name="Idempotency-Key",
    location=OpenApiParameter.HEADER,
    required=True,
    description="1 to 255 printable ASCII characters, unique per request for this app.",
)
ERRORS = {
    400: OpenApiResponse(description="Invalid request or idempotency key"),
    401: OpenApiResponse(description="Missing or invalid access token"),
    402: OpenApiResponse(description="insufficient_balance"),
    403: OpenApiResponse(description="Token lacks wallet:charge, or allowance_exceeded"),
    404: OpenApiResponse(description="not_found"),
    409: OpenApiResponse(description="idempotency_conflict, hold_not_open, refund_too_large"),
    422: OpenApiResponse(description="unknown_model"),
}


def wallet_error_to_api(error: WalletError) -> ApiError:
    return ApiError(
        code=error.code,
        message=error.message,
        status_code=STATUS_BY_ERROR.get(type(error), status.HTTP_400_BAD_REQUEST),
        details=error.details,
    )


def error_body(error: WalletError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "details": error.details}


# One validating instance per serializer class (see WalletApiView.validated). Validation keeps
# no state on the instance.
VALIDATORS: dict[type[Serializer], Serializer] = {}


ACTING_USER_HEADER = "Tokenpass-User"
ACTING_USER_PARAMETER = OpenApiParameter(
    name=ACTING_USER_HEADER,
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "With a client-credentials access token: the `sub` of the person whose wallet is "
        "charged. They must have given this app a standing allowance (consent to "
        "wallet:charge with a monthly limit above zero). With a user's access token it may be "
        "left out; if sent, it must name that user."
    ),
)


class WalletCaller(BasePermission):
    """Decides whose wallet the request is about (``view.wallet_user``): the person the access
    token was issued to, or, for a partner server's client-credentials token, the person named
    in the Tokenpass-User header who gave this app a standing allowance."""

    def has_permission(self, request: Request, view: Any) -> bool:
        token: Any = request.auth
        if token is None:
            return False  # DRF answers 401
        named = request.headers.get(ACTING_USER_HEADER)
        if isinstance(request.user, User):
            if named is not None and named != request.user.public_id:
                raise ApiError(
                    code="user_mismatch",
                    message=_("The %(header)s header names another person than the token.")
                    % {"header": ACTING_USER_HEADER},
                    status_code=status.HTTP_403_FORBIDDEN,
                )
            view.wallet_user = request.user
            return request.user.is_active
        if named is None:
            raise ApiError(
                code="user_token_required",
                message=_(
                    "This API needs an access token issued to a user, or a client credentials "
                    "token with the %(header)s header naming a person who gave this app a "
                    "standing allowance."
                )
                % {"header": ACTING_USER_HEADER},
                status_code=status.HTTP_403_FORBIDDEN,
            )
        if not token.allow_scopes(view.required_scopes):
            return False  # DRF answers 403, as TokenHasScope would
        user = selectors.standing_allowance_user(public_id=named, app=token.application)
        if user is None:
            raise ApiError(
                code="no_standing_allowance",
                message=_("This person has not given this app a standing allowance."),
                status_code=status.HTTP_403_FORBIDDEN,
            )
        view.wallet_user = user
        return True


class WalletSchema(AutoSchema):
    """Every wallet endpoint takes the optional Tokenpass-User header."""

    def get_override_parameters(self) -> list[Any]:
        return [*super().get_override_parameters(), ACTING_USER_PARAMETER]


class WalletApiView(APIView):
    permission_classes = [WalletCaller, TokenHasScope]
    required_scopes = ["wallet:charge"]
    schema = WalletSchema()
    wallet_user: User

    @property
    def user(self) -> User:
        return self.wallet_user

    @property
    def app(self) -> Application:
        token: Any = self.request.auth
        return token.application

    def idempotency_key(self) -> str:
        key = self.request.headers.get("Idempotency-Key")
        if key is None:
            raise ApiError(
                code="idempotency_key_required",
                message=_("The Idempotency-Key header is required."),
            )
        if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
            raise ApiError(
                code="invalid_idempotency_key",
                message=_(
                    "The Idempotency-Key header must be 1 to 255 printable ASCII characters."
                ),
            )
        return key

    def validated(self, serializer_class: type[Serializer], data: Any) -> dict[str, Any]:
        """``serializer_class(data=data)`` validated, with one instance per class and process:
        a serializer builds its fields when first used, which costs more than validating."""
        validator = VALIDATORS.get(serializer_class)
        if validator is None:
            validator = VALIDATORS.setdefault(serializer_class, serializer_class())
        try:
            return dict(validator.run_validation(data))
        except ValidationError:
            # The errors exactly as is_valid() words them, from a fresh instance.
            serializer_class(data=data).is_valid(raise_exception=True)
            raise

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, WalletError):
            exc = wallet_error_to_api(exc)
        return super().handle_exception(exc)


class BalanceView(WalletApiView):
    @extend_schema(responses={200: s.BalanceSerializer, **ERRORS}, tags=["wallet"])
    def get(self, request: Request) -> Response:
        """The user's spendable balance, held tokens and this app's allowance this month."""
        summary = selectors.wallet_summary(user=self.user)
        allowance = selectors.allowance_get(user=self.user, app=self.app)
        return Response(
            {
                "balance": summary.balance,
                "held": summary.held,
                "allowance": {
                    "monthly_limit": allowance.monthly_limit,
                    "used": allowance.used,
                    "remaining": allowance.remaining,
                },
            }
        )


class HoldListView(WalletApiView):
    @extend_schema(
        request=s.HoldCreateSerializer,
        responses={201: s.HoldSerializer, **ERRORS},
        parameters=[IDEMPOTENCY_HEADER],
        tags=["wallet"],
    )
    def post(self, request: Request) -> Response:
        """Reserve tokens for a request before running it (402 if the balance is too low)."""
        key = self.idempotency_key()
        data = self.validated(s.HoldCreateSerializer, request.data)
        hold = services.wallet_hold_create(
            user=self.user,
            app=self.app,
            amount=data["amount"],
            metadata=data["metadata"],
            idempotency_key=key,
        )
        return Response(s.HoldSerializer(hold).data, status=status.HTTP_201_CREATED)


class HoldDetailView(WalletApiView):
    @extend_schema(responses={200: s.HoldSerializer, **ERRORS}, tags=["wallet"])
    def get(self, request: Request, hold_id: int) -> Response:
        hold = selectors.hold_get(hold_id=hold_id, app=self.app)
        if hold is None or hold.user_id != self.user.pk:
            raise wallet_error_to_api(NotFound(_("No such hold.")))
        return Response(s.HoldSerializer(hold).data)


class HoldCaptureView(WalletApiView):
    @extend_schema(
        request=s.UsageSerializer,
        responses={201: s.ChargeSerializer, **ERRORS},
        parameters=[IDEMPOTENCY_HEADER],
        tags=["wallet"],
    )
    def post(self, request: Request, hold_id: int) -> Response:
        """Charge the real usage against the hold (at most its amount); the rest is released."""
        key = self.idempotency_key()
        data = self.validated(s.UsageSerializer, request.data)
        self._own_hold(hold_id)
        charge = services.wallet_hold_capture(
            hold_id=hold_id, app=self.app, idempotency_key=key, **data
        )
        return Response(s.charge_represent(charge), status=status.HTTP_201_CREATED)

    def _own_hold(self, hold_id: int) -> None:
        hold = selectors.hold_get(hold_id=hold_id, app=self.app)
        if hold is None or hold.user_id != self.user.pk:
            raise wallet_error_to_api(NotFound(_("No such hold.")))


class HoldReleaseView(HoldCaptureView):
    @extend_schema(
        request=None,
        responses={200: s.HoldSerializer, **ERRORS},
        parameters=[IDEMPOTENCY_HEADER],
        tags=["wallet"],
    )
    def post(self, request: Request, hold_id: int) -> Response:
        """Give the whole hold back to the wallet."""
        key = self.idempotency_key()
        self._own_hold(hold_id)
        hold = services.wallet_hold_release(hold_id=hold_id, app=self.app, idempotency_key=key)
        return Response(s.HoldSerializer(hold).data)


class ChargeListView(WalletApiView):
    @extend_schema(
        request=s.UsageSerializer,
        responses={201: s.ChargeSerializer, **ERRORS},
        parameters=[IDEMPOTENCY_HEADER],
        tags=["wallet"],
    )
    def post(self, request: Request) -> Response:
        """Charge a known usage in one step."""
        key = self.idempotency_key()
        data = self.validated(s.UsageSerializer, request.data)
        charge = services.wallet_charge(user=self.user, app=self.app, idempotency_key=key, **data)
        return Response(s.charge_represent(charge), status=status.HTTP_201_CREATED)


class ChargeDetailView(WalletApiView):
    @extend_schema(responses={200: s.ChargeSerializer, **ERRORS}, tags=["wallet"])
    def get(self, request: Request, charge_id: int) -> Response:
        charge = selectors.charge_get(charge_id=charge_id, app=self.app)
        if charge is None or charge.user_id != self.user.pk:
            raise wallet_error_to_api(NotFound(_("No such charge.")))
        return Response(s.charge_represent(charge))


class RefundListView(WalletApiView):
    @extend_schema(
        request=s.RefundCreateSerializer,
        responses={201: s.RefundSerializer, **ERRORS},
        parameters=[IDEMPOTENCY_HEADER],
        tags=["wallet"],
    )
    def post(self, request: Request, charge_id: int) -> Response:
        """Refund all or part of a charge (never more than what is left of it)."""
        key = self.idempotency_key()
        data = self.validated(s.RefundCreateSerializer, request.data)
        charge = selectors.charge_get(charge_id=charge_id, app=self.app)
        if charge is None or charge.user_id != self.user.pk:
            raise wallet_error_to_api(NotFound(_("No such charge.")))
        refund = services.wallet_refund(
            charge_id=charge_id,
            app=self.app,
            amount=data["amount"],
            reason=data["reason"],
            idempotency_key=key,
        )
        return Response(s.RefundSerializer(refund).data, status=status.HTTP_201_CREATED)
