from django.urls import path

from wallet import views

app_name = "wallet"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("redeem/", views.redeem, name="redeem"),
    path("webhooks/<slug:provider>/", views.payment_webhook, name="payment_webhook"),
]
