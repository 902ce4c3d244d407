from django.urls import path

from wallet import views

app_name = "wallet"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("history.csv", views.history_csv, name="history_csv"),
    path("allowances/<str:client_id>/", views.allowance_update, name="allowance_update"),
    path("redeem/", views.redeem, name="redeem"),
    path("webhooks/<slug:provider>/", views.payment_webhook, name="payment_webhook"),
]
