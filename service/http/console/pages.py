"""The web face's pages, every file shipped in the package (nothing is fetched from the
internet): `GET /`, the probe Ollama clients use to see the server is up (a browser asking for
a page there is sent on), and the operations console at `/ui/`, one HTML shell whose script
routes by the URL's fragment and reads the same JSON APIs the CLI uses, with the caller's key
when keys are on.

The page and its files carry no secrets, so they are open; every figure on them comes from
an API call that checks the key. A strict Content-Security-Policy keeps the page from ever
running anything but its own script, so a job's prompt or output can only be text.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, redirect, request, send_file

from service.http import access

STATIC = Path(__file__).with_name("static")
# No inline script or style, no other origin: model output shown by mistake as HTML could
# still not run (the page only ever sets textContent, this is the second lock).
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

bp = Blueprint("console", __name__, static_folder=str(STATIC), static_url_path="/ui/static")


@bp.route("/", methods=["GET", "HEAD"])
@access.open_door
def root() -> Response:
    if wants_page():
        return redirect("/ui/", code=302)
    return Response("corral is running", mimetype="text/plain")


def wants_page() -> bool:
    """Whether the client is a browser asking for a page (it prefers text/html to text):
    curl and the Ollama clients send */* or nothing and keep getting plain text."""
    return request.accept_mimetypes.best_match(["text/plain", "text/html"]) == "text/html"


@bp.get("/ui/")
@bp.get("/ui/<path:rest>")
@access.open_door
def page(rest: str = "") -> Response:
    """The console's shell; the fragment (#/jobs/<id>) says which view the script draws."""
    response = send_file(STATIC / "index.html", mimetype="text/html", max_age=0)
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.after_request
def locked(response: Response) -> Response:
    """The console's files get the same policy as its page."""
    response.headers.setdefault("Content-Security-Policy", POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
