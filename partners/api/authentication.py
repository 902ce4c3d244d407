from typing import Any

from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.request import Request


class PartnerOAuth2Authentication(OAuth2Authentication):
    """DOT's bearer-token authentication, handed the underlying Django request: the project's
    OAuthLib backend reads ``request.user`` while it extracts headers, and on a DRF Request
    that attribute would run authentication again, without end."""

    def authenticate(self, request: Request) -> Any:
        return super().authenticate(getattr(request, "_request", request))
