"""corral's service: the domain (core, models, jobs, batches) and its HTTP face (http)."""

from __future__ import annotations

from service.core.version import __version__

__all__ = ["__version__", "create_app"]


def create_app(config=None, settings=None):
    """Build the Flask app (see service.http.app.create_app); importing `service` stays cheap."""
    from service.http.app import create_app as factory

    return factory(config, settings)
