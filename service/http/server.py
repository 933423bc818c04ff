"""The gunicorn worker `corral serve` runs the app in: gthread, with its own errors in JSON.

gunicorn answers a request it cannot parse (a garbage request line, an invalid header, a
request line or header fields over their limits) itself, before Flask sees it, with an HTML
page (Worker.handle_error, through gunicorn.util.write_error). Every error of corral's is
`{"error": "..."}` JSON, so this worker sends that instead.

gunicorn still decides the status and logs the refusal: its handle_error knows every parse
error of the installed version (414 for a long request line, 431 for headers, 400 for the
rest), and write_error is a plain function with no hook. So handle_error runs as it is,
writing its page into a stand-in for the client's socket, and only the status line of that
page is kept.
"""

from __future__ import annotations

import json
import socket
from http import HTTPStatus

from gunicorn import util
from gunicorn.http.errors import ParseException
from gunicorn.workers.gthread import ThreadWorker


class _Captured:
    """The client's socket, except that what gunicorn sends is kept here instead."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sent = b""

    def gettimeout(self) -> float:
        return 0.0  # already "non-blocking": util.write_nonblock then calls sendall as is

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def __getattr__(self, name: str):
        return getattr(self._sock, name)  # what the access log reads


def _status_of(page: bytes, exc: Exception) -> HTTPStatus:
    """The status on gunicorn's `HTTP/1.1 <code> <reason>` line (from the exception if
    gunicorn wrote nothing)."""
    try:
        return HTTPStatus(int(page.split(b" ", 2)[1]))
    except (IndexError, ValueError):
        bad = isinstance(exc, ParseException)
        return HTTPStatus.BAD_REQUEST if bad else HTTPStatus.INTERNAL_SERVER_ERROR


def error_response(status: HTTPStatus, message: str) -> bytes:
    """A whole HTTP/1.1 response carrying `{"error": message}`. The connection then closes,
    as after gunicorn's page: what follows a request it could not parse is not a request."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def error_message(status: HTTPStatus, exc: Exception) -> str:
    """What the client is told: gunicorn's reason for a request it refused; for a fault of
    the server, nothing of its internals (the log has the traceback)."""
    if status >= 500:
        return f"{status.phrase.lower()}: the server could not handle the request"
    return f"{status.phrase.lower()}: {exc}"


class JSONErrorWorker(ThreadWorker):
    """gunicorn's gthread worker, answering the requests it refuses in corral's JSON."""

    def handle_error(self, req, client, addr, exc: Exception) -> None:
        """Let gunicorn classify and log the error, then send its status as JSON."""
        captured = _Captured(client)
        super().handle_error(req, captured, addr, exc)
        status = _status_of(captured.sent, exc)
        try:
            util.write_nonblock(client, error_response(status, error_message(status, exc)))
        except OSError:
            self.log.debug("Failed to send error message.")
