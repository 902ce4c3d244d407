"""The Django floor for bench/token: Tokenpass's own Django application (production settings,
the machine-to-machine middleware chain, URL routing) under the same gunicorn settings, with
the token endpoint answering a fixed token response of the usual size instead of doing a
grant. It measures what a request costs in this stack before any grant work: no server built
on Django and gunicorn can answer a grant for less.

    gunicorn -c config/gunicorn.py --chdir bench/token django_floor:application   (Tokenpass's env)

The view is replaced when this module is imported, in that process only: it is never served
outside this benchmark, and nothing else imports it.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse

# Django's own handler: config.wsgi.application puts the token lane in front of it, which
# would answer the grants itself.
from config.wsgi import django_application as application  # noqa: F401  (gunicorn serves it)
from partners.oauth import views

# The size of a real answer: a signed RFC 9068 access token, a refresh token, an ID token.
BODY = json.dumps(
    {
        "access_token": "a" * 760,
        "expires_in": 3600,
        "token_type": "Bearer",
        "scope": "openid profile",
        "refresh_token": "r" * 43,
        "id_token": "i" * 760,
    }
)


def _fixed_answer(self: Any, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    if not request.POST.get("grant_type"):  # the form is parsed, as for every grant
        return HttpResponse(status=400)
    response = HttpResponse(BODY, content_type="application/json")
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


views.TokenView.post = _fixed_answer  # type: ignore[method-assign]
