"""Keeps the active-sessions list (accounts.UserSession) in step with the session store."""

import hashlib
from collections.abc import Callable

from django.contrib.auth import SESSION_KEY
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

from accounts.services_account import (
    LAST_SEEN_RESOLUTION,
    user_session_forget,
    user_session_touch,
)


def last_seen_cache_key(session_key: str) -> str:
    # The session key is a bearer credential: the cache only ever sees a digest of it.
    return "tokenpass:seen:" + hashlib.sha256(session_key.encode()).hexdigest()[:32]


class UserSessionMiddleware:
    """Refreshes the session's last_seen_at at most once a minute, and forgets the session's
    row when a request signs the user out (whichever view did it: page, admin, OIDC logout).

    The once-a-minute guard is a cache entry rather than a session value, so that it never
    makes the session write itself back or re-send its cookie. Must come after
    AuthenticationMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Reading the session (not request.user) keeps anonymous requests free of user queries.
        was_authenticated = SESSION_KEY in request.session
        session_key = request.session.session_key
        if (
            was_authenticated
            and session_key
            and cache.add(
                last_seen_cache_key(session_key),
                1,
                timeout=int(LAST_SEEN_RESOLUTION.total_seconds()),
            )
        ):
            user_session_touch(session_key=session_key)

        response = self.get_response(request)

        if was_authenticated and session_key and SESSION_KEY not in request.session:
            user_session_forget(session_key=session_key)
        return response
