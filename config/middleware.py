"""A shorter middleware stack for the machine-to-machine endpoints.

Partner servers call the token, introspection and revocation endpoints and the JSON APIs
with client credentials or bearer tokens, never with a browser session. The browser
middleware (sessions, CSRF, authentication from the session, session mirroring, OTP,
messages, axes, static files) has nothing to do there, yet on a token grant it cost about a
third of a millisecond of CPU. The router sits first in ``MIDDLEWARE`` and hands requests
whose path starts with one of ``API_PATH_PREFIXES`` to a chain built from ``API_MIDDLEWARE``;
everything else goes down the full stack. The OAuth token, introspection and revocation
endpoints (``OAUTH_ENDPOINT_PREFIXES``) also skip the language middleware
(``OAUTH_ENDPOINT_MIDDLEWARE``): their answers are in English only, as RFC 6749 §5.2 wants an
ASCII error_description, and choosing a language was a sixth of what Django costs each grant.

It is a middleware rather than a second WSGI application so that every entry point (gunicorn,
ASGI, runserver, the test client and live server) dispatches the same way, and the tests
exercise exactly what production runs. The one exception is the token lane
(partners/oauth/lane.py), which answers ordinary token grants in front of Django under WSGI;
its tests play every grant case through it and through this chain side by side.
"""

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.utils import translation
from django.utils.module_loading import import_string

GetResponse = Callable[[HttpRequest], HttpResponse]


class _ApiHandler(BaseHandler):
    """URL resolution and view calling exactly as Django's handler does them, behind
    ``API_MIDDLEWARE`` instead of ``MIDDLEWARE`` (synchronous, as our views are)."""

    def __init__(self, middleware: list[str]) -> None:
        super().__init__()
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        handler: Any = convert_exception_to_response(self._get_response)  # type: ignore[attr-defined]
        for path in reversed(middleware):
            try:
                instance = import_string(path)(handler)
            except MiddlewareNotUsed:
                continue
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(0, instance.process_view)
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(instance.process_template_response)
            if hasattr(instance, "process_exception"):
                self._exception_middleware.append(instance.process_exception)
            handler = convert_exception_to_response(instance)
        self._middleware_chain = handler


class ApiRouterMiddleware:
    """Sends machine-to-machine requests down the short ``API_MIDDLEWARE`` chain, and the
    OAuth endpoints among them (``OAUTH_ENDPOINT_PREFIXES``) down ``OAUTH_ENDPOINT_MIDDLEWARE``."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.prefixes = tuple(settings.API_PATH_PREFIXES)
        self.oauth_prefixes = tuple(settings.OAUTH_ENDPOINT_PREFIXES)
        self.api_chain = _ApiHandler(list(settings.API_MIDDLEWARE))._middleware_chain
        self.oauth_chain = _ApiHandler(list(settings.OAUTH_ENDPOINT_MIDDLEWARE))._middleware_chain

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        response: HttpResponse
        if path.startswith(self.oauth_prefixes):
            response = self.oauth_chain(request)
            return response
        if path.startswith(self.prefixes):
            response = self.api_chain(request)
            return response
        return self.get_response(request)


class SourceLanguageMiddleware:
    """Requests answer in the project's source language (LANGUAGE_CODE), whatever language
    an earlier request on the same thread chose: for the OAuth endpoints, which have no
    language middleware."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        translation.activate(settings.LANGUAGE_CODE)
        return self.get_response(request)
