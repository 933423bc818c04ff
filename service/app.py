"""The Flask application factory and the services each request reaches through it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, current_app, jsonify
from sqlalchemy import Engine
from werkzeug.exceptions import HTTPException

from service import cors
from service.db import make_engine, make_sessionmaker
from service.errors import CorralError
from service.jobs import JobStore
from service.queue import JobQueue, make_producer
from service.settings import Settings
from service.store import ModelStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a handler needs, built once per app from Settings."""

    settings: Settings
    redis: redis.Redis
    db: Engine
    jobs: JobStore
    store: ModelStore
    queue: JobQueue

    @property
    def default_queue(self) -> str:
        return self.settings.queues.split(",")[0].strip() or "cpu"

    def close(self) -> None:
        self.redis.close()
        self.db.dispose()


def build_services(settings: Settings) -> Services:
    """Connect (lazily) to Redis and the database; nothing is contacted until first use."""
    if not settings.redis_url:
        raise CorralError("CORRAL_REDIS_URL is not set: start corral with `corral serve`")
    client = redis.Redis.from_url(settings.redis_url, health_check_interval=30)
    db = make_engine(settings.database)
    jobs = JobStore(make_sessionmaker(db))
    queue = JobQueue(make_producer(settings, settings.redis_url), jobs, client, settings)
    return Services(settings, client, db, jobs, ModelStore(settings.models_dir), queue)


def services() -> Services:
    """The current app's services (inside a request or app context)."""
    return current_app.extensions["corral"]


def create_app(config: dict[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    """Build the WSGI app: settings from the environment unless given, one blueprint per face."""
    app = Flask(__name__)
    app.config.from_mapping(config or {})
    settings = settings or Settings.from_env()
    app.extensions["corral"] = build_services(settings)
    _register_errors(app)
    cors.install(app, settings.origins)
    if settings.debug:
        logging.basicConfig(level=logging.DEBUG)

    from service.api import jobs, ollama, ollama_embed, ollama_models, openai, web

    app.register_blueprint(web.bp)
    app.register_blueprint(ollama.bp)
    app.register_blueprint(ollama_models.bp)
    from service.api import ollama_fleet

    app.register_blueprint(ollama_fleet.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(ollama_embed.bp)
    app.register_blueprint(openai.bp)
    from service.api import batches, openai_batches

    app.register_blueprint(batches.bp)
    app.register_blueprint(openai_batches.bp)
    from service.api import report

    app.register_blueprint(report.bp)
    return app


def _register_errors(app: Flask) -> None:
    """Every error leaves as {"error": "..."} with its status: never HTML, never a trace."""

    @app.errorhandler(CorralError)
    def corral_error(exc: CorralError):
        return jsonify({"error": exc.message}), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify({"error": exc.description or exc.name}), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return jsonify({"error": f"internal error: {type(exc).__name__}: {exc}"}), 500
