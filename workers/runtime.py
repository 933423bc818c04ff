"""The worker process's container: connections, the model pool, and the dispatch of jobs.

Tasks stay thin and call `Runtime.run(job_id)`: it claims the job, runs the handler that
service.jobs.kinds names for the job's kind, and records a failure if the handler raises.
Everything a handler may touch reaches it as a JobContext, not as this Runtime.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import Any

import redis

from service.batches.store import BatchStore, Feeder
from service.core.db import make_engine, make_sessionmaker, now
from service.core.errors import CorralError
from service.core.settings import Settings
from service.history.retention import HistoryKeeper
from service.jobs.control import Listener
from service.jobs.events import RETRYING, Publisher, Subscriber, retrying
from service.jobs.fleet import new_worker_id
from service.jobs.kinds import KINDS, JobKind
from service.jobs.leases import LeaseSweeper
from service.jobs.metrics import JobMeter
from service.jobs.queue import JobQueue, consumed_queues, make_producer
from service.jobs.records import Job, JobStatus, JobStore
from service.jobs.routing import own_queue
from service.models.store import Model, ModelStore
from workers.arrivals import Arrivals
from workers.cores import SHARE_EVERY_S, CoreShare, machine_id
from workers.gates import Gate, places
from workers.heartbeat import Heartbeat
from workers.job_context import JobContext, Streams
from workers.model_pool import ModelPool

log = logging.getLogger(__name__)
BATCH_SWEEP_SECONDS = 30
HISTORY_EVERY_S = 30.0  # how often a worker offers to roll up and expire the history
ARRIVING_S = 1.0  # a job queued this recently is still on its way to a worker

Handler = Callable[[Job, JobContext, Publisher], None]


@cache
def handler_for(kind: str) -> Handler:
    """The function the kinds table names for `kind` ("module:function"), imported once."""
    module, _, name = KINDS[JobKind(kind)].handler.partition(":")
    return getattr(importlib.import_module(module), name)


class Runtime:
    """Per-process worker state, created lazily by the Celery app on the first task."""

    def __init__(self, settings: Settings, loader: Callable[[Model], Any] | None = None,
                 arrivals: Arrivals | None = None,
                 worker_id: str | None = None, node: str | None = None) -> None:
        self.settings = settings
        self.hostname = socket.gethostname()
        # Names this process in the fleet and on every lease it holds; its own queue, which
        # the API routes jobs for its models to (service.jobs.routing), is named after it.
        self.worker_id = worker_id or new_worker_id()
        self.own_queue = own_queue(self.worker_id)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.db = make_engine(settings.database)
        self.jobs = JobStore(make_sessionmaker(self.db), JobMeter(self.redis))
        self.arrivals = arrivals or Arrivals()
        self.arrivals.expected = self._expected
        self.store = ModelStore(settings.models_dir)
        # Batch lines are fed by the worker that finishes the previous one (service.batches).
        queue = JobQueue(make_producer(settings, settings.redis_url), self.jobs, self.redis,
                         settings)
        self.batches = BatchStore(queue, settings.batch_window, settings.result_ttl)
        self.feeder = Feeder(self.batches)
        self.sweeper = LeaseSweeper(self.jobs, queue, self.redis, lease=settings.lease,
                                    max_attempts=settings.max_attempts,
                                    result_ttl=settings.result_ttl)
        self.pool = ModelPool(loader or self._load_engine, max_loaded=settings.max_loaded_models,
                              default_keep_alive=settings.keep_alive)
        self.streams = Streams()
        self.cores = CoreShare(self.redis, machine=machine_id(), worker_id=self.worker_id,
                               configured=settings.num_threads)
        self.node = node  # this worker's Celery node name (else the first task says it)
        # Jobs this worker holds, by kind of work (workers/gates): batch lines, and
        # interactive requests (so a fleet's other workers get what this one cannot start).
        self.gates = {batch: Gate(places(settings.num_parallel, batch=batch),
                                  lambda b=batch: self._queues("cancel", b),
                                  lambda b=batch: self._queues("add", b))
                      for batch in (True, False)}
        self.gate = self.gates[True]
        self.heartbeat = Heartbeat(self.redis, self.pool.loaded, self._details,
                                   worker_id=self.worker_id, keep_alive=settings.keep_alive,
                                   context_length=settings.num_ctx, about=self._about)
        self.context = JobContext(settings, self.hostname, self.worker_id, self.redis, self.jobs,
                                  self.store, self.pool, self.streams, self.heartbeat.publish,
                                  self.arrivals, self.cores.update)
        self.control = Listener(self.redis, {"unload": self._on_unload,
                                             "cancel": self._on_cancel})
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="corral-reaper", daemon=True)
        self._reaper.start()
        self._leases = threading.Thread(target=self._keep_leases, name="corral-leases",
                                        daemon=True)
        self._leases.start()
        # The report's rollups and CORRAL_RETENTION: one process of the fleet at a time.
        self.keeper = HistoryKeeper(self.jobs.sessions, self.redis, settings.retention)
        self._history = threading.Thread(target=self._keep_history, name="corral-history",
                                         daemon=True)
        self._history.start()

    def _about(self) -> dict:
        """What this worker says of itself in the fleet: where it runs, what it consumes, and
        how full it is (jobs held, interactive and batch, against its decode slots)."""
        held = sum(gate.held for gate in self.gates.values())
        return {"host": self.hostname, "node": self.node, "pid": os.getpid(),
                "device": self.settings.device, "gpu_layers": self.settings.gpu_layers,
                "queues": self.queues(), "own_queue": self.own_queue,
                "machine": self.cores.machine, "slots": self.settings.num_parallel,
                "threads": self.cores.threads, "running": held,
                "free_slots": max(0, self.settings.num_parallel - held)}

    def _load_engine(self, model: Model):
        from workers.engine import Engine

        adapter = str(model.adapters[0]) if model.adapters else None
        return Engine(
            str(model.model_path),
            n_parallel=self.settings.num_parallel,
            n_ctx_per_seq=self.settings.num_ctx,
            n_threads=self.cores.update(),
            lora_path=adapter,
            arriving=self.arrivals.pending,
            mmproj_path=str(model.projectors[0]) if model.projectors else None,
            n_gpu_layers=self.settings.gpu_layers,
        )

    def _queues(self, action: str, batch: bool) -> None:
        """Stop (cancel) or restart (add) this worker's consuming of its batch queues, or of
        its interactive ones."""
        if self.node is None:
            return
        control = self.batches.queue.celery.control
        for queue in self.queues():
            if queue.endswith(".batch") == batch:
                if action == "cancel":
                    control.cancel_consumer(queue, destination=[self.node], reply=False)
                else:
                    control.add_consumer(queue, destination=[self.node], reply=False)

    def queues(self) -> list[str]:
        """The queues this worker consumes: the shared ones, its own, their batch twins."""
        return consumed_queues(self.settings.queues, self.own_queue)

    def _expected(self) -> list[str]:
        """Decode jobs queued for this worker's queues in the last ARRIVING_S (see
        workers/arrivals): their messages are on their way here."""
        since = now() - timedelta(seconds=ARRIVING_S)
        return self.jobs.queued_ids(consumed_queues(self.settings.queues),
                                    (JobKind.GENERATE.value, JobKind.CHAT.value), since)

    def _details(self, name: str) -> dict[str, Any]:
        """A loaded model's details for /api/ps; {} when its name no longer resolves."""
        try:
            return self.store.resolve(name).details()
        except (CorralError, OSError, ValueError):
            return {}

    def _reap(self) -> None:
        ticks = 0
        while not self._stop.wait(1.0):
            try:
                self.pool.reap()
            except Exception:  # a failing close must not kill the reaper
                log.exception("unloading an expired model failed")
            for gate in self.gates.values():
                gate.check(reassert=True)
            ticks += 1
            if ticks % SHARE_EVERY_S == 0:
                self._share_cores()
            if ticks % BATCH_SWEEP_SECONDS == 0:
                try:
                    self.batches.sweep()  # moves on batches whose feeder died mid-step
                except Exception:
                    log.exception("sweeping batches failed")

    def _share_cores(self) -> None:
        """Give every loaded engine this worker's share of the host's cores as it is now."""
        threads = self.cores.update()
        for loaded in self.pool.loaded():
            set_threads = getattr(loaded.engine, "set_threads", None)
            if set_threads is not None:
                set_threads(threads)

    def _keep_leases(self) -> None:
        """Renew this worker's leases every third of CORRAL_LEASE, and sweep for lapsed ones
        (other workers' jobs, or this worker's own from before a restart) as often."""
        period = self.settings.lease / 3
        while not self._stop.wait(period):
            started = time.monotonic()
            for step in (self._renew, self.sweeper.sweep):
                try:
                    step()
                except Exception:  # the database or Redis is away: try again next period
                    log.exception("keeping job leases failed")
            if time.monotonic() - started > period:
                log.warning("keeping job leases took longer than a third of CORRAL_LEASE")

    def _keep_history(self) -> None:
        """Roll the history up and expire old rows, every HISTORY_EVERY_S (in a thread of
        its own: a first roll over a long history must not delay leases or unloading)."""
        while not self._stop.wait(HISTORY_EVERY_S):
            try:
                self.keeper.tick()
            except Exception:  # the database or Redis is away: the next round catches up
                log.exception("keeping the job history failed")

    def _renew(self) -> None:
        self.jobs.renew(self.worker_id, self.settings.lease)

    def _on_cancel(self, message: dict) -> None:
        self.streams.cancel(message.get("job", ""))

    def _on_unload(self, message: dict) -> None:
        """Unload every loaded model of that name (all digests), e.g. for `corral stop`."""
        for loaded in self.pool.loaded():
            if loaded.info.get("name") == message.get("model"):
                self.pool.unload(loaded.key)
        self.heartbeat.publish()

    def close(self) -> None:
        self._stop.set()
        self._leases.join(5)
        self._history.join(5)
        self.control.close()
        self.heartbeat.close()
        self.pool.close()
        self.feeder.close()
        self.batches.queue.celery.close()
        self.redis.close()
        self.db.dispose()

    def run(self, job_id: str, *, node: str | None = None, batch: bool = False) -> None:
        """Claim and run one job, then feed its batch's next lines if it has a batch. The job
        first takes one of this worker's places for its kind of work, batch line (from a
        batch queue) or interactive, or goes back to its queue (node: this worker's Celery
        name, to whom it addresses stopping and restarting its queues)."""
        self.node = node or self.node
        gate = self.gates[batch]
        if not gate.try_enter():
            try:
                self._give_back(job_id)
            finally:
                gate.returned()  # only now may the gate take its queue again
            return
        self.heartbeat.nudge()  # a slot less free: tell the fleet's routing
        try:
            self._run_claimed(job_id)
        finally:
            gate.leave()
            self.heartbeat.nudge()

    def _give_back(self, job_id: str) -> None:
        """Send a job this worker has no place for back to its queue, unclaimed (that queue
        is stopped here meanwhile, so another worker or a later turn takes it)."""
        job = self.jobs.get(job_id)
        if job is not None and job.status == JobStatus.QUEUED.value:
            self.batches.queue.enqueue(job, shared=True)  # not routed back to this full one

    def _run_claimed(self, job_id: str) -> None:
        self.arrivals.arrived(job_id)  # (again, when no signal counted it: a direct call)
        job = self.jobs.claim(job_id, worker_host=self.hostname, worker_node=self.node,
                              device=self.settings.device, owner=self.worker_id,
                              lease=self.settings.lease)
        try:
            if job is not None:
                self._run(job)
            else:  # cancelled, timed out or run by another worker: only its batch moves
                job = self.jobs.get(job_id)
        finally:
            self.arrivals.settled(job_id)
            if job is not None and job.batch_id:  # a /jobs "batch" label has no row: fine
                self.feeder.notify(job.batch_id)

    def _announce_retry(self, job: Job, events: Publisher) -> None:
        """Say that a job taken again starts over, unless its log says so already.

        The sweep announces the jobs of lapsed leases, but a worker that lost Redis hands its
        job back while Redis cannot carry the word: without it, followers (and the job's
        output so far) would join the lost attempt's text to the new one's.
        """
        newest = Subscriber(self.redis, job.id).newest()
        if newest is None or not retrying(newest):
            events.emit("status", status=RETRYING, attempt=job.attempts - 1)

    def _run(self, job: Job) -> None:
        """Run one claimed job; never raises for the job's own failures."""
        events = Publisher(self.redis, job.id, self.settings.result_ttl)
        try:
            if job.attempts > 1:
                self._announce_retry(job, events)
            events.emit("status", status=JobStatus.RUNNING.value, worker=self.hostname,
                        attempt=job.attempts)
            handler_for(job.kind)(job, self.context, events)
        except redis.RedisError as exc:
            # Redis, not the job, failed: hand the job back; the sweep sends it again once
            # Redis answers, and the job's followers see it run anew.
            log.warning("job %s handed back: Redis failed: %s", job.id, exc)
            self.jobs.release(job.id, self.worker_id)
        except Exception as exc:
            log.warning("job %s failed: %s", job.id, exc)
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            if self.context.finish(job.id, JobStatus.FAILED, error=message,
                                   metrics={"total_duration": job.elapsed_ns()}):
                events.emit("error", error=message)
