from django.contrib.admin.apps import AdminConfig


class TokenpassAdminConfig(AdminConfig):
    """django.contrib.admin with Tokenpass's two-factor admin site as `admin.site`, so that
    every app's ModelAdmin (ours, django-axes', django-celery-beat's) is registered on it."""

    default_site = "accounts.admin_site.TokenpassAdminSite"
