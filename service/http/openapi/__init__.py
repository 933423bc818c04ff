"""The OpenAPI 3 document of every route, at GET /openapi.json.

Faces' operations are in paths.py, named schemas in components.py (request schemas derived
from service.jobs.requests' types); tests/test_openapi.py holds the paths to the app's URL
map, and the schemathesis test in tests/test_openapi_fuzz.py holds the answers to them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, jsonify

from service.core.version import __version__
from service.http import access
from service.http.openapi import components, paths

# A key is optional on a loopback bind without CORRAL_AUTH and needed otherwise; it is sent as
# `Authorization: Bearer <key>`, which the Ollama and OpenAI clients do. These few routes
# need none ever (service.http.access.open_door), and so never answer 401.
SECURITY = [{}, {"bearerAuth": []}]
OPEN = ("/", "/api/version", "/openapi.json", "/ui/", "/ui/{rest}")


@cache
def document() -> dict[str, Any]:
    """The whole document; built once, from the code, on first use."""
    every_path = {**paths.console(), **paths.ollama(), **paths.openai(), **paths.native()}
    for path, operations in every_path.items():
        for operation in operations.values():
            operation["security"] = [{}] if path in OPEN else SECURITY
            if path in OPEN:
                operation["responses"].pop("401", None)
    schemas = {**components.errors(), **components.ollama(), **components.openai(),
               **components.native()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "corral", "version": __version__,
                 "description": "Ollama- and OpenAI-compatible APIs and corral's native "
                                "jobs and batches API. Errors are {\"error\": \"...\"} with "
                                "the status; under /v1 they are OpenAI's error object."},
        "paths": every_path,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer",
                           "description": "an API key, as `Authorization: Bearer <key>`"}}},
    }


def blueprint() -> Blueprint:
    """GET /openapi.json."""
    bp = Blueprint("openapi", __name__)

    @bp.get("/openapi.json")
    @access.open_door
    def openapi_json():
        return jsonify(document())

    return bp
