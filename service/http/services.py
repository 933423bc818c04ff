"""The services container: what every handler reaches, built once per app from Settings.

Blueprints import `services()` from here, never from the app factory, so the factory can
import the blueprints without either importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app
from sqlalchemy import Engine

from service.access.keys import KeyStore
from service.batches.files import FileStore
from service.batches.store import BatchStore
from service.core.db import make_engine, make_sessionmaker
from service.core.errors import CorralError
from service.core.settings import Settings
from service.history.rollups import Rollups
from service.jobs.metrics import JobMeter
from service.jobs.queue import JobQueue, make_producer
from service.jobs.records import JobStore
from service.models.store import ModelStore

EXTENSION = "corral"  # the key of the app's Services in app.extensions


@dataclass
class Services:
    """Everything a handler needs."""

    settings: Settings
    redis: redis.Redis
    db: Engine
    jobs: JobStore
    store: ModelStore
    queue: JobQueue
    keys: KeyStore

    @property
    def default_queue(self) -> str:
        return self.queue.default_queue

    @property
    def rollups(self) -> Rollups:
        """The report's rolled-up history (service.history.rollups)."""
        return Rollups(self.jobs.sessions)

    def files(self) -> FileStore:
        """Uploaded batch files under CORRAL_HOME, capped at CORRAL_MAX_UPLOAD."""
        return FileStore(self.jobs.sessions, self.settings.home / "files",
                         self.settings.max_upload)

    def batches(self) -> BatchStore:
        """Batches, fed CORRAL_BATCH_WINDOW lines at a time through this app's queue."""
        return BatchStore(self.queue, self.settings.batch_window, self.settings.result_ttl)

    def close(self) -> None:
        self.redis.close()
        self.db.dispose()


def build_services(settings: Settings) -> Services:
    """Connect (lazily) to Redis and the database; nothing is contacted until first use."""
    if not settings.redis_url:
        raise CorralError("CORRAL_REDIS_URL is not set: start corral with `corral serve`")
    # Each open stream holds a pub/sub connection for as long as it lasts, on top of the
    # commands of every other request: redis-py's default pool of 100 would refuse the
    # 101st stream ("Too many connections").
    client = redis.Redis.from_url(settings.redis_url, health_check_interval=30,
                                  max_connections=2 * settings.http_threads + 64)
    db = make_engine(settings.database)
    sessions = make_sessionmaker(db)
    jobs = JobStore(sessions, JobMeter(client))  # a job the API ends is counted too
    queue = JobQueue(make_producer(settings, settings.redis_url), jobs, client, settings)
    return Services(settings, client, db, jobs, ModelStore(settings.models_dir), queue,
                    KeyStore(sessions))


def services() -> Services:
    """The current app's services (inside a request or app context)."""
    return current_app.extensions[EXTENSION]
