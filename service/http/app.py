"""The Flask application factory: services, error handlers, the front door, CORS, the faces."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from service.core.settings import Settings
from service.http import access, console, cors, errors, front_door, native, ollama, openai, openapi
from service.http.services import EXTENSION, Services, build_services


def create_app(config: dict[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    """Build the WSGI app: settings from the environment unless given, one blueprint per face."""
    app = Flask(__name__)
    app.config.from_mapping(config or {})
    settings = settings or Settings.from_env()
    ctx: Services = build_services(settings)
    app.extensions[EXTENSION] = ctx
    errors.install(app)
    front_door.install(app, settings.host, settings.origins)  # refusals before CORS answers
    cors.install(app, settings.origins)
    access.install(app, settings, ctx.keys)  # after CORS: a preflight carries no key
    if settings.debug:
        logging.basicConfig(level=logging.DEBUG)
    for face in (console, ollama, openai, native, openapi):
        app.register_blueprint(face.blueprint())
    return app
