"""The Celery application of corral's workers; `celery -A workers.celery_app worker` works too.

`create_celery()` builds it; the module attribute `app` is built on first access (PEP 562),
so importing this module connects nothing and loads nothing.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery
from celery.signals import task_received, worker_ready, worker_shutdown
from kombu import Queue

from service.core.db import upgrade
from service.core.settings import Settings
from service.jobs.fleet import new_worker_id
from service.jobs.queue import celery_config, consumed_queues
from service.jobs.routing import own_queue
from workers import tasks
from workers.arrivals import Arrivals
from workers.gates import places
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def create_celery(settings: Settings | None = None) -> Celery:
    """Build the worker app: shared config, one thread per decode slot, tasks registered."""
    settings = settings or Settings.from_env()
    if not settings.redis_url:
        raise RuntimeError("CORRAL_REDIS_URL is not set: start workers with `corral worker`")
    app = Celery("corral", set_as_current=False)
    app.conf.update(celery_config(settings, settings.redis_url))
    # Task threads wait on their own sequences while the engine's decode thread batches them
    # together: a place each, for batch lines and for interactive requests (workers/gates).
    app.conf.update(worker_pool="threads", worker_concurrency=pool_threads(settings))
    # Interactive queues first (the shared ones and this worker's own, service.jobs.routing),
    # then the batch queues (see service.jobs.queue).
    app.corral_worker_id = new_worker_id()
    app.corral_queues = consumed_queues(settings.queues, own_queue(app.corral_worker_id))
    app.conf.task_queues = [Queue(name, routing_key=name) for name in app.corral_queues]
    app.corral_settings = settings
    app.corral_arrivals = Arrivals()
    app.corral_received = app.corral_arrivals.on_received(app)  # held: signals keep weak refs
    task_received.connect(app.corral_received)
    app.corral_runtime = None
    app.corral_lock = threading.Lock()
    tasks.register(app, lambda: runtime(app))
    return app


def pool_threads(settings: Settings) -> int:
    """Task threads of a worker: a place each for batch lines and for interactive requests,
    so these are received while batch lines fill every slot."""
    return places(settings.num_parallel, batch=True) + places(settings.num_parallel, batch=False)


def runtime(app: Celery) -> Runtime:
    """The worker's Runtime, created on first use (after the database is at head)."""
    with app.corral_lock:
        if app.corral_runtime is None:
            upgrade(app.corral_settings.database)
            app.corral_runtime = Runtime(app.corral_settings, arrivals=app.corral_arrivals,
                                         worker_id=app.corral_worker_id,
                                         node=getattr(app, "corral_node", None))
        return app.corral_runtime


@worker_ready.connect
def _join_fleet(sender=None, **_kwargs) -> None:
    """A worker is listed in the fleet (`corral workers`) from its start, not from its first
    task: its Runtime and heartbeat are made as soon as it consumes."""
    app = getattr(sender, "app", None)
    if getattr(app, "corral_lock", None) is None:
        return  # not a corral worker's app
    app.corral_node = getattr(sender, "hostname", None)  # in its first heartbeat
    try:
        runtime(app).node = app.corral_node
    except Exception:  # the first task tries again and says why
        log.exception("could not start the worker's runtime at once")


@worker_shutdown.connect
def _close_runtimes(sender=None, **_kwargs) -> None:
    app = getattr(sender, "app", None)
    current = getattr(app, "corral_runtime", None)
    if current is not None:
        current.close()


_app: Celery | None = None


def __getattr__(name: str) -> Celery:
    global _app
    if name in ("app", "celery"):
        if _app is None:
            _app = create_celery()
        return _app
    raise AttributeError(name)
