"""One error shape for our own APIs: {"error": {"code", "message", "details"}}."""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ApiError(exceptions.APIException):
    """An error raised by our API code with a stable machine-readable code."""

    def __init__(
        self,
        *,
        code: str,
        message: str,
        status_code: int = status.HTTP_400_BAD_REQUEST,
        details: Any = None,
    ) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.message = message
        self.details = details


def error_response(*, code: str, message: str, status_code: int, details: Any = None) -> Response:
    return Response(
        {"error": {"code": code, "message": message, "details": details}}, status=status_code
    )


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApiError):
        return error_response(
            code=exc.error_code,
            message=exc.message,
            status_code=exc.status_code,
            details=exc.details,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    assert isinstance(exc, exceptions.APIException)
    if isinstance(exc, exceptions.ValidationError):
        code, message, details = "invalid_request", "The request is not valid.", response.data
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        message, details = str(exc.detail), None
        # A token was sent but is not valid (unknown, expired, revoked): the code stays
        # not_authenticated, as documented; the message and details say what the
        # WWW-Authenticate challenge says (RFC 6750 §3.1).
        token_error = getattr(context.get("request"), "oauth2_error", None)
        if (
            isinstance(exc, exceptions.NotAuthenticated)
            and token_error
            and token_error.get("error")
        ):
            message = str(token_error.get("error_description") or message)
            details = {"token_error": token_error["error"]}
    response.data = {"error": {"code": code, "message": message, "details": details}}
    return response
