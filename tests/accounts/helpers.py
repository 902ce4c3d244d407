"""Helpers shared by the account pages' tests."""

import re

CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="[^"]+"')


def normalized(response, *replace: str) -> str:
    """The page's text without its CSRF token, with each of ``replace`` (a phone number, an
    address) written as RECIPIENT: pages that must not tell one case from another compare
    equal."""
    text = CSRF_RE.sub("", response.content.decode())
    for value in replace:
        text = text.replace(value, "RECIPIENT")
    return text
