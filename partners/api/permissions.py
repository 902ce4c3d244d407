from typing import Any

from django.utils.translation import gettext as _
from rest_framework import status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from config.api import ApiError
from partners.models import Partner
from partners.selectors import application_is_live

SETTLEMENT_SCOPE = "settlement:read"


def token_partner(request: Request) -> Partner:
    """The partner whose app holds the request's access token (PartnerClientToken ran)."""
    partner = request.auth.application.partner  # type: ignore[union-attr]
    assert isinstance(partner, Partner)
    return partner


class PartnerClientToken(BasePermission):
    """A partner's server, authenticated with the client credentials grant of one of the
    partner's live apps, holding the settlement:read scope. Anything else is refused in our
    error shape (401 without a token, 403 with the wrong one)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        token: Any = request.auth
        if token is None:
            return False  # DRF answers 401 not_authenticated with the Bearer challenge.
        application = getattr(token, "application", None)
        if token.user is not None or application is None:
            raise ApiError(
                code="client_credentials_required",
                message=_("This API needs an access token from the client credentials grant."),
                status_code=status.HTTP_403_FORBIDDEN,
            )
        if application.partner_id is None or not application_is_live(application=application):
            raise ApiError(
                code="app_not_live",
                message=_("The app is not approved, or its partner is not active."),
                status_code=status.HTTP_403_FORBIDDEN,
            )
        if not token.allow_scopes([SETTLEMENT_SCOPE]):
            raise ApiError(
                code="insufficient_scope",
                message=_("The access token needs the %(scope)s scope.")
                % {"scope": SETTLEMENT_SCOPE},
                status_code=status.HTTP_403_FORBIDDEN,
                details={"required_scopes": [SETTLEMENT_SCOPE]},
            )
        return True
