from django.urls import path

from wallet.api import batch, views

app_name = "wallet-api"

urlpatterns = [
    path("balance/", views.BalanceView.as_view(), name="balance"),
    path("holds/", views.HoldListView.as_view(), name="holds"),
    path("holds/<int:hold_id>/", views.HoldDetailView.as_view(), name="hold"),
    path("holds/<int:hold_id>/capture/", views.HoldCaptureView.as_view(), name="hold-capture"),
    path("holds/<int:hold_id>/release/", views.HoldReleaseView.as_view(), name="hold-release"),
    path("charges/", views.ChargeListView.as_view(), name="charges"),
    path("charges/<int:charge_id>/", views.ChargeDetailView.as_view(), name="charge"),
    path("charges/<int:charge_id>/refunds/", views.RefundListView.as_view(), name="refunds"),
    path("usage/batch/", batch.UsageBatchView.as_view(), name="usage-batch"),
]
