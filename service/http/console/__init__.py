"""The web face: `/` (the probe Ollama clients use, and a browser's way in) and the operations
console at `/ui/`."""

from __future__ import annotations

from flask import Blueprint


def blueprint() -> Blueprint:
    """The console's blueprint, with its routes."""
    from service.http.console import pages

    return pages.bp
