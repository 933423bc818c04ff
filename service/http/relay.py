"""Relay a job's events from Redis to an HTTP response, streamed or collected.

Every face that answers from a job (Ollama, OpenAI, embeddings, pulls) goes one way:
`follow()` resolves the model, submits the job and opens its events; `streamed()` answers
with them and cancels the job when the client hangs up mid-stream.

The handler waits for the worker to take the job before it answers, so "no worker in time"
is a real 503 (and the job is marked failed), not an error buried in a 200 stream.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis
from flask import Response

from service.core.errors import CorralError, InvalidRequest, JobFailed, ServiceUnavailable
from service.http import access
from service.http.errors import RETRY_AFTER, UNREACHABLE
from service.http.services import Services, services
from service.jobs.control import request_cancel
from service.jobs.events import Event, Publisher, Subscriber, retrying
from service.jobs.kinds import JobKind, JobRequest
from service.jobs.records import Job, JobStatus
from service.jobs.requests import check_capabilities

log = logging.getLogger(__name__)

Chunk = Callable[..., dict[str, Any]]  # (text, thinking="") -> one streamed line
Final = Callable[[str, dict[str, Any]], dict[str, Any]]
Calls = Callable[[list[dict[str, Any]]], dict[str, Any]]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class Following:
    """A submitted job whose events this request follows."""

    job: Job
    events: Iterator[Event]
    cancel: Callable[[], None]  # ask the worker to stop the job (a hung-up client)


def follow(kind: JobKind, request: JobRequest, *, resolve: bool = True) -> Following:
    """Resolve the request's model (404 if absent, unless resolve is off: a pull names what
    is not there yet), queue the job, and wait for a worker to take it."""
    ctx = services()
    job_request = request.to_job()
    if resolve:
        access.check_model(request.model)
        check_capabilities(job_request, ctx.store.resolve(request.model), request.model)
    job = ctx.queue.submit(kind, request.model, job_request, queue=ctx.default_queue,
                           owner=access.owner())
    return Following(job, open_events(ctx, job), partial(cancel, ctx, job.id))


def cancel(ctx: Services, job_id: str) -> None:
    """Cancel a job at once if it waits in the queue, else ask its worker to stop it."""
    if ctx.jobs.cancel_queued(job_id):
        Publisher(ctx.redis, job_id, ctx.settings.result_ttl).emit("done", done_reason="cancel")
    else:
        request_cancel(ctx.redis, job_id)


LOST_MID_STREAM = ("this request's job had to start over after part of the answer was sent "
                   "(its worker died, or lost the job queue, Redis); the request is cancelled "
                   "rather than restarted (retry it)")


def streamed(lines: Iterator[str], mimetype: str, on_abort: Callable[[], None] | None = None,
             headers: dict[str, str] | None = None) -> Response:
    """Stream `lines`; a client that hangs up before the last one calls `on_abort`.

    Generations pass their job's cancel, as Ollama stops a generation whose client went, so
    an abandoned request does not keep a decode slot busy.
    """

    def guarded() -> Iterator[str]:
        finished = False
        try:
            yield from lines
            finished = True
        finally:
            if not finished and on_abort is not None:
                on_abort()

    return Response(guarded(), mimetype=mimetype, headers=headers)


def open_events(services: Services, job: Job) -> Iterator[Event]:
    """Return the job's events once a worker has taken it; 503 after CORRAL_LOAD_TIMEOUT."""
    timeout = services.settings.load_timeout
    subscriber = Subscriber(services.redis, job.id)
    events = subscriber.follow(idle_timeout=timeout)
    try:
        first = next(events)
    except TimeoutError:
        message = f"no worker took the job within {timeout:g}s (CORRAL_LOAD_TIMEOUT)"
        if services.jobs.finish(job.id, JobStatus.FAILED, error=message):
            Publisher(services.redis, job.id, services.settings.result_ttl).emit(
                "error", error=message)
        raise ServiceUnavailable(message) from None
    rest = resuming(subscriber, events, first.id, timeout)
    return itertools.chain([first], _guard(services, job, rest))


def _guard(services: Services, job: Job, events: Iterator[Event]) -> Iterator[Event]:
    """Turn a worker that goes silent mid-job into an error event (and a failed job)."""
    try:
        yield from events
    except TimeoutError:
        message = f"worker stopped responding for {services.settings.load_timeout:g}s"
        services.jobs.finish(job.id, JobStatus.FAILED, error=message)
        yield Event("0-0", "error", {"error": message})


REDIS_GRACE = 5.0  # seconds a follower waits for a lost Redis (`corral serve` restarts it in ~1)


def redis_lost(job_id: str) -> str:
    """What a follower is told when Redis went away under its stream and stayed away."""
    return (f"the connection to the job queue (Redis) was lost mid-stream and did not come "
            f"back within {REDIS_GRACE:g}s; job {job_id} is still recorded and carries on, or "
            f"starts over, once Redis is back (see GET /jobs/{job_id})")


def resuming(subscriber: Subscriber, events: Iterator[Event], after: str | None,
             idle_timeout: float | None) -> Iterator[Event]:
    """Yield `events`; when Redis is lost, wait up to REDIS_GRACE for it and follow the job
    again after the last event seen, else end with an `error` event saying so.

    Going on is honest: a worker rides out a short loss (redis-py retries its writes), so
    the job goes on where it was, and the job's log holds what was sent meanwhile. If its
    worker gave up and handed the job back, the job starts over with a `retrying` event,
    which the faces already handle. The final error event has no id (it is not in the log)
    and `"status": 503`; the job is not failed.
    """
    last = after
    while True:
        try:
            for event in events:
                last = event.id
                yield event
            return
        except UNREACHABLE as exc:
            log.warning("job %s: Redis lost under a follower: %s: %s", subscriber.job_id,
                        type(exc).__name__, exc)
            if not _answers_within(subscriber.client, REDIS_GRACE):
                yield Event("", "error", {"error": redis_lost(subscriber.job_id), "status": 503})
                return
            events = subscriber.follow(after=last, idle_timeout=idle_timeout)


def _answers_within(client: redis.Redis, grace: float) -> bool:
    """Whether Redis answers a PING within about `grace` seconds (it may be loading)."""
    deadline = time.monotonic() + grace
    while True:
        try:
            return bool(client.ping())
        except UNREACHABLE:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def failure(event: Event) -> CorralError:
    """The error an `error` event stands for. `"status": 400` is the worker saying the request
    itself was bad (an input too long with truncation off, a schema it cannot turn into a
    grammar), so it leaves as a 400, not a 500; `"status": 503` is Redis lost under the
    request (resuming), which the client may retry."""
    message = event.data.get("error", "job failed")
    if event.data.get("status") == 400:
        return InvalidRequest(message)
    if event.data.get("status") == 503:
        return ServiceUnavailable(message, headers={"Retry-After": RETRY_AFTER})
    return JobFailed(message)


def collect(events: Iterator[Event]) -> tuple[str, dict[str, Any]]:
    """Join the tokens of a job; return (text, done data) or raise the job's error. A job
    whose worker was lost starts over, so the text of the lost attempt is dropped. A job that
    asked for logprobs has every token's entry in the done data's `logprobs`."""
    parts: list[str] = []
    logprobs: list[dict[str, Any]] | None = None
    for event in events:
        if event.type == "token":
            parts.append(event.data["text"])
            if "logprobs" in event.data:
                logprobs = [] if logprobs is None else logprobs
                logprobs.extend(event.data["logprobs"])
        elif retrying(event):
            parts.clear()
            logprobs = None
        elif event.type == "done":
            done = event.data if logprobs is None else {**event.data, "logprobs": logprobs}
            return "".join(parts), done
        elif event.type == "error":
            raise failure(event)
    raise JobFailed("job ended without a result")


def outcome(events: Iterator[Event]) -> dict[str, Any]:
    """Wait for a job that streams no tokens (embeddings); return its done data or raise."""
    for event in events:
        if event.type == "done":
            return event.data
        if event.type == "error":
            raise failure(event)
    raise JobFailed("job ended without a result")


def refused_before_output(following: Following) -> Following:
    """Wait for a streamed job's first output; raise its 400 if the worker refused the request.

    As Ollama does, an error that comes before any content sets the status, so a request the
    worker found bad is a 400 streamed or not, and Redis lost before any output a 503. Nothing
    is sent before the first token anyway (the server writes the headers with the first
    chunk), so the wait delays nothing.
    """
    held: list[Event] = []
    for event in following.events:
        held.append(event)
        if event.type == "error" and event.data.get("status") in (400, 503):
            raise failure(event)
        if event.type != "status":
            break
    events = itertools.chain(held, following.events)
    return Following(following.job, events, following.cancel)


def ndjson(following: Following, chunk: Chunk, final: Final,
           calls: Calls | None = None) -> Response:
    """Stream a job as Ollama does: one JSON object per line, an `error` line on failure (a
    400 instead, if the worker refused the request before any output). Tool calls, when
    the face shows them (`calls`), go out in lines of their own as each completes.

    A job whose worker is lost before any text went out starts over unseen; after some text
    went out, the client cannot take it back, so the stream ends with an error line and the
    job is cancelled (see LOST_MID_STREAM).
    """
    following = refused_before_output(following)

    def lines() -> Iterator[str]:
        sent = False
        for event in following.events:
            if retrying(event) and sent:
                following.cancel()
                yield json.dumps({"error": LOST_MID_STREAM}) + "\n"
                return
            if event.type == "token":
                sent = True
                yield json.dumps(with_logprobs(chunk(event.data["text"]), event.data)) + "\n"
            elif event.type == "thinking":
                sent = True
                yield json.dumps(with_logprobs(chunk("", thinking=event.data["text"]),
                                               event.data)) + "\n"
            elif event.type == "tool_calls" and calls is not None:
                sent = True
                yield json.dumps(calls(event.data["tool_calls"])) + "\n"
            elif event.type == "done":
                # The calls and the reasoning went out in their own lines; the last line
                # does not repeat them.
                data = {k: v for k, v in event.data.items() if k not in ("tool_calls", "thinking")}
                yield json.dumps(final("", data)) + "\n"
            elif event.type == "error":
                yield json.dumps({"error": event.data.get("error", "job failed")}) + "\n"

    return streamed(lines(), "application/x-ndjson", following.cancel)


def with_logprobs(obj: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """An Ollama answer with the `logprobs` of its tokens, when the job reported them (an
    event's or the collected done data's); `top_logprobs` is left out when none were asked,
    as Ollama's omitempty does."""
    if "logprobs" not in data:
        return obj
    entries = [e if e.get("top_logprobs") else {k: v for k, v in e.items() if k != "top_logprobs"}
               for e in data["logprobs"]]
    return {**obj, "logprobs": entries}


def progress(events: Iterator[Event], stream: bool) -> Response:
    """Relay a job that reports `progress` events (a pull) as Ollama's status lines: each
    update as it comes, then {"status": "success"}; unstreamed, only the final line."""
    if not stream:
        for event in events:
            if event.type == "done":
                return Response(json.dumps({"status": "success"}) + "\n",
                                mimetype="application/json")
            if event.type == "error":
                raise JobFailed(event.data.get("error", "job failed"))
        raise JobFailed("job ended without a result")

    def lines() -> Iterator[str]:
        for event in events:
            if event.type == "progress":
                yield json.dumps(event.data) + "\n"
            elif event.type == "done":
                yield json.dumps({"status": "success"}) + "\n"
            elif event.type == "error":
                yield json.dumps({"error": event.data.get("error", "job failed")}) + "\n"

    return streamed(lines(), "application/x-ndjson")
