"""The web face at `/`: today the page Ollama clients probe to see the server is up."""

from __future__ import annotations

from flask import Blueprint


def blueprint() -> Blueprint:
    """The console's blueprint, with its routes."""
    from service.http.console import root

    return root.bp
