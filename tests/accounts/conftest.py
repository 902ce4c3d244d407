"""Fixtures of the account pages' tests."""

import pytest


@pytest.fixture
def post(client, django_capture_on_commit_callbacks):
    """client.post with the on-commit hooks (code delivery) run, as after a real commit."""

    def _post(url, data, c=None, **extra):
        with django_capture_on_commit_callbacks(execute=True):
            return (c or client).post(url, data, **extra)

    return _post
