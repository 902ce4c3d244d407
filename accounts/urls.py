from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.login_view, name="login"),
    path("login/code/", views.login_code_view, name="login_code"),
    path("login/code/verify/", views.login_code_verify_view, name="login_code_verify"),
    path("logout/", views.logout_view, name="logout"),
    path("signup/", views.signup_view, name="signup"),
    path("signup/verify/", views.signup_verify_view, name="signup_verify"),
    path("reset/", views.reset_view, name="reset"),
    path("reset/verify/", views.reset_verify_view, name="reset_verify"),
    path("reset/password/", views.reset_password_view, name="reset_password"),
    path("account/", views.profile, name="profile"),
]
