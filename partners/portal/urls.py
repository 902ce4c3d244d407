from django.urls import path

from partners.portal import views

app_name = "partners_portal"

urlpatterns = [
    path("", views.partner_list, name="list"),
    path("<int:partner_id>/", views.partner_overview, name="overview"),
    path("<int:partner_id>/settings/", views.partner_settings, name="settings"),
    path("<int:partner_id>/apps/", views.app_list, name="apps"),
    path("<int:partner_id>/apps/new/", views.app_create, name="app_create"),
    path("<int:partner_id>/apps/<int:app_id>/", views.app_detail, name="app_detail"),
    path("<int:partner_id>/apps/<int:app_id>/edit/", views.app_edit, name="app_edit"),
    path(
        "<int:partner_id>/apps/<int:app_id>/secret/",
        views.app_secret_rotate,
        name="app_secret_rotate",
    ),
    path(
        "<int:partner_id>/apps/<int:app_id>/unlock/",
        views.app_client_unlock,
        name="app_client_unlock",
    ),
    path(
        "<int:partner_id>/apps/<int:app_id>/revoke-client-tokens/",
        views.app_client_tokens_revoke,
        name="app_client_tokens_revoke",
    ),
    path("<int:partner_id>/usage/", views.usage, name="usage"),
    path("<int:partner_id>/statements/", views.statement_list, name="statements"),
    path(
        "<int:partner_id>/statements/<int:statement_id>/",
        views.statement_detail,
        name="statement_detail",
    ),
    path(
        "<int:partner_id>/statements/<int:statement_id>/csv/",
        views.statement_csv,
        name="statement_csv",
    ),
    path("<int:partner_id>/webhooks/", views.webhook_list, name="webhooks"),
    path(
        "<int:partner_id>/webhooks/<int:endpoint_id>/",
        views.webhook_detail,
        name="webhook_detail",
    ),
    path(
        "<int:partner_id>/webhooks/<int:endpoint_id>/secret/",
        views.webhook_secret_rotate,
        name="webhook_secret_rotate",
    ),
    path(
        "<int:partner_id>/webhooks/<int:endpoint_id>/delete/",
        views.webhook_delete,
        name="webhook_delete",
    ),
]
