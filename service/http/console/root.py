"""The root of the web console: Ollama clients probe `GET /` to see the server is up."""

from __future__ import annotations

from flask import Blueprint, Response

from service.http import access

bp = Blueprint("console", __name__)


@bp.route("/", methods=["GET", "HEAD"])
@access.open_door
def root():
    return Response("corral is running", mimetype="text/plain")
