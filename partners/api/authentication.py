from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.request import Request


class PartnerOAuth2Authentication(OAuth2Authentication):
    """DOT's bearer-token authentication, handed the underlying Django request: the project's
    OAuthLib backend reads ``request.user`` while it extracts headers, and on a DRF Request
    that attribute would run authentication again, without end."""

    def authenticate(self, request: Request) -> Any:
        return super().authenticate(getattr(request, "_request", request))


class PartnerClientCredentialsScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI description presents the settlement API's authentication."""

    target_class = "partners.api.authentication.PartnerOAuth2Authentication"
    name = "partnerClientCredentials"

    def get_security_requirement(self, auto_schema: Any) -> dict[str, list[str]]:
        return {self.name: ["settlement:read"]}

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "oauth2",
            "description": "A token from the client credentials grant of one of your apps.",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": f"{settings.SITE_URL}/o/token/",
                    "scopes": {"settlement:read": "Read your settlement statements and usage."},
                }
            },
        }
