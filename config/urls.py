from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from config import health
from partners.oauth import urls as oauth_urls

urlpatterns = [
    # OAuth 2.0 / OpenID Connect provider (partners/oauth). First: partner servers call the
    # token endpoint more than anything else, and Django tries these patterns in order.
    path("o/", include("partners.oauth.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-docs"),
    *oauth_urls.root_urlpatterns,
    # Partner portal pages and the settlement API for partners' servers.
    path("partners/", include("partners.portal.urls")),
    path("api/settlement/", include("partners.api.urls")),
    path("api/wallet/", include("wallet.api.urls")),
    path("wallet/", include("wallet.urls")),
    path("", include("accounts.urls")),
]

if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
