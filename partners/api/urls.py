from django.urls import path

from partners.api import views

app_name = "settlement_api"

urlpatterns = [
    path("statements/", views.StatementListView.as_view(), name="statements"),
    path(
        "statements/<int:statement_id>/",
        views.StatementDetailView.as_view(),
        name="statement_detail",
    ),
    path(
        "statements/<int:statement_id>/csv/",
        views.StatementCsvView.as_view(),
        name="statement_csv",
    ),
    path("usage/", views.UsageView.as_view(), name="usage"),
]
