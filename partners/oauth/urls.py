"""URLs of the OAuth / OpenID Connect provider.

`urlpatterns` mount under /o/ in the `oauth2_provider` namespace (DOT reverses its own names
there); `root_urlpatterns` mount at the site root: discovery, JWKS, /device and the connected
apps page."""

from django.urls import path, re_path

from partners.oauth import views

app_name = "oauth2_provider"

urlpatterns = [
    path("token/", views.TokenView.as_view(), name="token"),
    path("authorize/", views.AuthorizationView.as_view(), name="authorize"),
    path("revoke_token/", views.RevokeTokenView.as_view(), name="revoke-token"),
    path("introspect/", views.IntrospectTokenView.as_view(), name="introspect"),
    path(
        "device-authorization/",
        views.DeviceAuthorizationView.as_view(),
        name="device-authorization",
    ),
    path("userinfo/", views.UserInfoView.as_view(), name="user-info"),
    path("logout/", views.RPInitiatedLogoutView.as_view(), name="rp-initiated-logout"),
    path(".well-known/jwks.json", views.jwks, name="jwks-info"),
    re_path(
        r"^\.well-known/openid-configuration/?$",
        views.openid_configuration,
        name="oidc-connect-discovery-info",
    ),
]

root_urlpatterns = [
    path(".well-known/openid-configuration", views.openid_configuration, name="oidc-discovery"),
    path(
        ".well-known/oauth-authorization-server",
        views.openid_configuration,
        name="oauth-server-metadata",
    ),
    path(".well-known/jwks.json", views.jwks, name="oidc-jwks"),
    path("device", views.DeviceVerifyView.as_view(), name="oauth-device"),
    path("account/apps/", views.connected_apps, name="connected-apps"),
    path(
        "account/apps/<str:client_id>/revoke/",
        views.connected_app_revoke,
        name="connected-app-revoke",
    ),
]
