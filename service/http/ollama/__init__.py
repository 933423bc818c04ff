"""The Ollama face at /api: generate and chat, embeddings, models, pulls, what is loaded."""

from __future__ import annotations

from flask import Blueprint


def blueprint() -> Blueprint:
    """One /api blueprint holding each part of the face as a nested blueprint."""
    from service.http.ollama import embed, generate, models, pull

    face = Blueprint("ollama", __name__, url_prefix="/api")
    for part in (generate, models, embed, pull):
        face.register_blueprint(part.bp)
    return face
