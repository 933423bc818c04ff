"""corral's service: settings, model store, job records, events, and the HTTP API."""

from __future__ import annotations

__version__ = "0.1.0"


def create_app(config=None, settings=None):
    """Build the Flask app (see service.app.create_app); importing `service` stays cheap."""
    from service.app import create_app as factory

    return factory(config, settings)
