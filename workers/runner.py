"""Run one job in a worker: claim it, load its model, decode, publish events, record the end.

Tasks stay thin and call `Runtime.run(job_id)`; everything a job touches — the job rows, the
model store, the loaded models, the event bus — hangs off one Runtime per worker process.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis

from service.batches import BatchStore, Feeder
from service.control import Listener, cancel_key, send
from service.db import make_engine, make_sessionmaker
from service.events import Publisher
from service.jobs import Job, JobStatus, JobStore
from service.queue import JobQueue, make_producer
from service.settings import Settings
from service.store import Model, ModelStore
from workers.embed import run_embed
from workers.heartbeat import Heartbeat
from workers.prompt import build_options, build_prompt
from workers.pull import run_pull
from workers.scheduler import LoadedEngine, ModelPool

log = logging.getLogger(__name__)
BATCH_SWEEP_SECONDS = 30
# Batch lines stream their text at most once a second: few follow one live, and on the batch
# path every event is CPU taken from the decode of the other lines.
BATCH_STREAM_INTERVAL = 1.0


class Runtime:
    """Per-process worker state, created lazily by the Celery app on the first task."""

    def __init__(self, settings: Settings, loader=None) -> None:
        self.settings = settings
        self.hostname = socket.gethostname()
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.db = make_engine(settings.database)
        self.jobs = JobStore(make_sessionmaker(self.db))
        self.store = ModelStore(settings.models_dir)
        # Batch lines are fed by the worker that finishes the previous one (service.batches).
        queue = JobQueue(make_producer(settings, settings.redis_url), self.jobs, self.redis,
                         settings)
        self.batches = BatchStore(queue, settings.batch_window, settings.result_ttl)
        self.feeder = Feeder(self.batches)
        self.pool = ModelPool(
            loader or self._load_engine,
            max_loaded=settings.max_loaded_models,
            default_keep_alive=settings.keep_alive,
        )
        self._stop = threading.Event()
        self._streams: dict[str, Any] = {}
        self._streams_lock = threading.Lock()
        self.control_handlers: dict[str, Callable[[dict], None]] = {
            "unload": self._on_unload,
            "cancel": self._on_cancel,
        }
        self.heartbeat = Heartbeat(self, self.redis)  # what is loaded here, for /api/ps
        self.control = Listener(self.redis, self.control_handlers)
        self._reaper = threading.Thread(target=self._reap, name="corral-reaper", daemon=True)
        self._reaper.start()

    def _load_engine(self, model: Model):
        from workers.engine import Engine

        adapter = str(model.adapters[0]) if model.adapters else None
        return Engine(
            str(model.model_path),
            n_parallel=self.settings.num_parallel,
            n_ctx_per_seq=self.settings.num_ctx,
            n_threads=self.settings.threads,
            lora_path=adapter,
        )

    def _reap(self) -> None:
        ticks = 0
        while not self._stop.wait(1.0):
            try:
                self.pool.reap()
            except Exception:  # a failing close must not kill the reaper
                log.exception("unloading an expired model failed")
            ticks += 1
            if ticks % BATCH_SWEEP_SECONDS == 0:
                try:
                    self.batches.sweep()  # moves on batches whose feeder died mid-step
                except Exception:
                    log.exception("sweeping batches failed")

    def _on_cancel(self, message: dict) -> None:
        """Stop a job's sequence if it runs here; its slot frees within one decode step."""
        with self._streams_lock:
            stream = self._streams.get(message.get("job", ""))
        if stream is not None:
            stream.cancel()

    def _on_unload(self, message: dict) -> None:
        """Unload every loaded model of that name (all digests), e.g. for `corral stop`."""
        for loaded in self.pool.loaded():
            if loaded.info.get("name") == message.get("model"):
                self.pool.unload(loaded.key)
        self.heartbeat.publish()

    def close(self) -> None:
        self._stop.set()
        self.control.close()
        self.heartbeat.close()
        self.pool.close()
        self.feeder.close()
        self.batches.queue.celery.close()
        self.redis.close()
        self.db.dispose()

    def run(self, job_id: str) -> None:
        """Claim and run one job, then feed its batch's next lines if it has a batch."""
        job = self.jobs.claim(job_id, worker_host=self.hostname, device=self.settings.device)
        try:
            if job is not None:
                self._run(job)
            else:  # cancelled, timed out or run by another worker: only its batch moves
                job = self.jobs.get(job_id)
        finally:
            if job is not None and job.batch_id:  # a /jobs "batch" label has no row: fine
                self.feeder.notify(job.batch_id)

    def _run(self, job: Job) -> None:
        """Run one claimed job; never raises for the job's own failures."""
        job_id = job.id
        events = Publisher(self.redis, job_id, self.settings.result_ttl)
        events.emit("status", status=JobStatus.RUNNING.value, worker=self.hostname)
        try:
            HANDLERS.get(job.kind, Runtime.generate)(self, job, events)
        except Exception as exc:
            log.warning("job %s failed: %s", job_id, exc)
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            self.jobs.finish(
                job_id,
                JobStatus.FAILED,
                error=message,
                metrics={"total_duration": _since(job.created_at)},
            )
            events.emit("error", error=message)

    def generate(self, job: Job, events: Publisher) -> None:
        """Run a generate or chat job: load its model, decode, publish, record."""
        model = self.store.resolve(job.model)
        keep_alive = job.request.get("keep_alive")
        key = f"{model.name}@{model.digest}"
        if job.kind == "generate" and not job.request.get("prompt") and not job.request.get("raw"):
            self._load_only(job, model, key, keep_alive, events)
            return
        if job.kind == "chat" and not job.request.get("messages"):
            self._load_only(job, model, key, keep_alive, events)
            return
        engine, load_ns = self.pool.acquire(
            key, model, {"name": model.name.display(), "digest": model.digest}
        )
        try:
            stream = self._decode(job, model, engine, events)
        finally:
            # Released before "done" is sent, so a client that sees the end also sees the
            # model unloaded when it asked for keep_alive 0.
            self.pool.release(key, keep_alive)
            self.heartbeat.publish()
        self._succeed(job, stream, load_ns, events)

    def _decode(self, job: Job, model: Model, engine, events: Publisher):
        """Submit the prompt and publish its text as the engine produces it (see stream_pace)."""
        prompt = build_prompt(model, job.request, job.kind, engine)
        options = build_options(model, job.request, self.settings.num_ctx)
        stream = engine.submit(engine.tokenize(prompt), options)
        with self._streams_lock:
            self._streams[job.id] = stream
        try:
            if self.redis.exists(cancel_key(job.id)):
                stream.cancel()
            pace = stream_pace(self.settings.stream_interval, engine, bool(job.batch_id))
            for text in stream.chunks(pace):
                events.emit("token", text=text)
        finally:
            with self._streams_lock:
                self._streams.pop(job.id, None)
        return stream

    def _succeed(self, job: Job, stream, load_ns: int, events: Publisher) -> None:
        """Record the finished job, then tell listeners (in that order: rows before events)."""
        completion = stream.completion
        metrics = {
            "prompt_eval_count": completion.prompt_eval_count,
            "prompt_eval_duration": completion.prompt_eval_duration,
            "eval_count": completion.eval_count,
            "eval_duration": completion.eval_duration,
            "load_duration": load_ns,
            "total_duration": _since(job.created_at),
        }
        first = stream.first_token_time
        first_at = None if first is None else _wall_from_perf(first)
        status = JobStatus.CANCELLED if completion.done_reason == "cancel" else JobStatus.SUCCEEDED
        self.jobs.finish(
            job.id,
            status,
            output=completion.text,
            done_reason=completion.done_reason,
            metrics=metrics,
            first_token_at=first_at,
        )
        # cached_tokens: prompt tokens reused from an earlier sequence's KV (a chat's last turn).
        events.emit("done", done_reason=completion.done_reason,
                    cached_tokens=completion.cached_tokens, **metrics)

    def _load_only(self, job: Job, model: Model, key: str, keep_alive: Any, events) -> None:
        """An empty generate or chat loads the model, or with keep_alive 0 unloads it (as
        Ollama) here and, by a control message, on every other worker (`corral stop`)."""
        load_ns = 0
        if keep_alive == 0:
            self.pool.unload(key)
            send(self.redis, "unload", model=model.name.display())
            reason = "unload"
        else:
            info = {"name": model.name.display(), "digest": model.digest}
            _, load_ns = self.pool.acquire(key, model, info)
            self.pool.release(key, keep_alive)
            reason = "load"
        self.heartbeat.publish()
        metrics = {"load_duration": load_ns, "total_duration": _since(job.created_at)}
        self.jobs.finish(
            job.id, JobStatus.SUCCEEDED, output="", done_reason=reason, metrics=metrics
        )
        events.emit("done", done_reason=reason, **metrics)


# Job kinds other than generate/chat: kind -> function(runtime, job, events). Each kind's
# module registers here, so the runner stays the one place that claims and ends jobs.
HANDLERS: dict[str, Callable[[Runtime, Job, Publisher], None]] = {}
HANDLERS["embed"] = run_embed
HANDLERS["pull"] = run_pull


def stream_pace(base: float, engine: LoadedEngine, batch: bool) -> Callable[[], float]:
    """The time between two text events of a job: CORRAL_STREAM_INTERVAL (`base`) times the
    sequences its engine is running; batch lines wait at least BATCH_STREAM_INTERVAL.

    Each event costs a wake-up of the job's thread, of Redis, of the API thread and of the
    client, and on a machine whose cores all decode, each of those takes CPU from the decode.
    Scaled by the load, an engine publishes about one event per interval however many
    sequences it runs. Paired runs on 2 cores (interleaved rounds, tokens/s): at concurrency 4,
    a fixed 100 ms beat a fixed 25 ms by 7 % over 8 rounds, and this pace beat a fixed 25 ms
    by 6 % over 12 rounds (ahead in 9); a 50 ms base beat 25 ms by 3.5 % at concurrency 1
    over 11 rounds (ahead in 9) and by 4 % at concurrency 4 over 5 (ahead in 3). A 4-sequence
    decode step in the worker took 3 % longer than in a bare process when only the first
    token was published, and 12 % longer with one event per 100 ms per stream.
    """
    floor = BATCH_STREAM_INTERVAL if batch else 0.0
    return lambda: max(floor, base * max(1, engine.active()))


def _since(created_at: datetime) -> int:
    """Nanoseconds from the job's creation (request accepted) until now."""
    created = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    return int((datetime.now(UTC) - created).total_seconds() * 1e9)


def _wall_from_perf(perf: float) -> datetime:
    """Convert a time.perf_counter() reading to wall-clock UTC."""
    return datetime.fromtimestamp(time.time() - (time.perf_counter() - perf), UTC)
