"""Scopes per app: an app may only request the scopes it was registered for."""

from typing import Any

from oauth2_provider.scopes import SettingsScopes


class ApplicationScopes(SettingsScopes):
    def get_available_scopes(
        self, application: Any = None, request: Any = None, *args: Any, **kwargs: Any
    ) -> list[str]:
        every = super().get_available_scopes(application, request, *args, **kwargs)
        if application is None:
            return every
        allowed = set(application.scope_list())
        return [scope for scope in every if scope in allowed]

    def get_default_scopes(
        self, application: Any = None, request: Any = None, *args: Any, **kwargs: Any
    ) -> list[str]:
        defaults = super().get_default_scopes(application, request, *args, **kwargs)
        if application is None:
            return defaults
        allowed = set(application.scope_list())
        return [scope for scope in defaults if scope in allowed]
