from django.urls import path

from accounts import views, views_account, views_mfa

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
    path("account/", views_account.profile, name="profile"),
    # Two-factor, security page, sessions and security log (views_mfa, views_account).
    path("login/mfa/", views_mfa.login_mfa, name="login_mfa"),
    path("account/security/", views_account.security, name="security"),
    path(
        "account/security/sessions/end-others/",
        views_account.sessions_end_others,
        name="sessions_end_others",
    ),
    path(
        "account/security/sessions/<int:session_id>/end/",
        views_account.session_end,
        name="session_end",
    ),
    path("account/security/log/", views_account.security_log, name="security_log"),
    path("account/security/two-factor/setup/", views_mfa.mfa_setup, name="mfa_setup"),
    path(
        "account/security/two-factor/recovery-codes/",
        views_mfa.mfa_recovery_codes,
        name="mfa_recovery_codes",
    ),
    path("account/security/two-factor/disable/", views_mfa.mfa_disable_view, name="mfa_disable"),
]
