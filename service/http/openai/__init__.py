"""The OpenAI face at /v1: models, completions, responses, embeddings, files and batches.

Errors under /v1 leave in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from flask import Blueprint

from service.http import errors


def blueprint() -> Blueprint:
    """One /v1 blueprint with OpenAI's error shape, holding each part as a nested blueprint."""
    from service.http.openai import batches, completions, responses, types

    face = Blueprint("openai", __name__, url_prefix="/v1")
    errors.install(face, types.error_body)
    for part in (completions, responses, batches):
        face.register_blueprint(part.bp)
    return face
