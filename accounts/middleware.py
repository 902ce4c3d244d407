"""Keeps the active-sessions list (accounts.UserSession) in step with the session store."""

import time
from collections.abc import Callable

from django.contrib.auth import SESSION_KEY
from django.http import HttpRequest, HttpResponse

from accounts.services_account import (
    LAST_SEEN_RESOLUTION,
    user_session_forget,
    user_session_touch,
)

# The time of the last last_seen_at refresh, kept in the session itself so that deciding
# whether to write costs nothing.
LAST_SEEN_SESSION_KEY = "tokenpass_seen"


class UserSessionMiddleware:
    """Refreshes the session's last_seen_at at most once a minute, and forgets the session's
    row when a request signs the user out (whichever view did it: page, admin, OIDC logout).

    Must come after AuthenticationMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Reading the session (not request.user) keeps anonymous requests free of user queries.
        was_authenticated = SESSION_KEY in request.session
        session_key = request.session.session_key
        if was_authenticated and session_key:
            now = int(time.time())
            seen = request.session.get(LAST_SEEN_SESSION_KEY, 0)
            if now - seen >= LAST_SEEN_RESOLUTION.total_seconds():
                user_session_touch(session_key=session_key)
                request.session[LAST_SEEN_SESSION_KEY] = now

        response = self.get_response(request)

        if was_authenticated and session_key and SESSION_KEY not in request.session:
            user_session_forget(session_key=session_key)
        return response
