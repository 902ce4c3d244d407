"""Requests sent through the WSGI application gunicorn serves (config.wsgi: the token lane in
front of Django's handler), in this process, as a WSGI server would send them."""

import io
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from django.http import HttpResponse

from partners.oauth import lane
from partners.oauth.lane import TokenLane
from partners.oauth.lane import _close_old_connections as close_old_lane_connections

FORM = "application/x-www-form-urlencoded"


@contextmanager
def connections_kept() -> Iterator[None]:
    """What Django's test client does around each request: a request's start and end must not
    close the test's database connection, which holds the test's transaction (nor may the
    lane, which calls close_old_connections itself while only Django listens)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    lane._close_old_connections = _kept
    try:
        yield
    finally:
        lane._close_old_connections = close_old_lane_connections
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _kept(opened: Any = None) -> list:
    return []


class LaneClient:
    """post() through TokenLane(WSGIHandler()); ``django_bodies`` holds the body Django's
    handler was given for each request the lane handed on."""

    def __init__(self) -> None:
        self.django_bodies: list[bytes] = []
        handler = WSGIHandler()

        def django(environ: dict, start_response: Callable) -> Any:
            stream = environ["wsgi.input"]
            if isinstance(stream, io.BytesIO):
                self.django_bodies.append(stream.getvalue()[stream.tell() :])
            return handler(environ, start_response)

        self.application = TokenLane(django)  # type: ignore[arg-type]

    def environ(
        self,
        path: str,
        body: bytes,
        *,
        method: str = "POST",
        content_type: str = FORM,
        query: str = "",
        scheme: str = "http",
        headers: dict[str, str] | None = None,
        content_length: str | None = None,
    ) -> dict[str, Any]:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": query,
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "testserver",
            "CONTENT_TYPE": content_type,
            "CONTENT_LENGTH": str(len(body)) if content_length is None else content_length,
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": scheme,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        for name, value in (headers or {}).items():
            environ[f"HTTP_{name.upper().replace('-', '_')}"] = value
        return environ

    def send(self, environ: dict[str, Any]) -> HttpResponse:
        """The answer as an HttpResponse (status, headers as sent, content)."""
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list, exc_info: Any = None) -> None:
            answer["status"], answer["headers"] = status, headers

        with connections_kept():
            chunks = self.application(environ, start_response)
            try:
                content = b"".join(chunks)
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
        response = HttpResponse(content, status=int(answer["status"].split(" ", 1)[0]))
        del response["Content-Type"]
        for name, value in answer["headers"]:
            response[name] = value
        return response

    def post(self, path: str, data: dict[str, Any] | str | bytes, **options: Any) -> HttpResponse:
        """A form POST; lists in ``data`` repeat their parameter."""
        if isinstance(data, dict):
            data = urlencode(data, doseq=True)
        body = data.encode() if isinstance(data, str) else data
        return self.send(self.environ(path, body, **options))
