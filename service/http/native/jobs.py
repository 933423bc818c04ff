"""The native asynchronous jobs face: submit now, read later by polling or Server-Sent Events."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from service.core.db import aware, now
from service.core.errors import Conflict, InvalidRequest, NotFound
from service.core.fields import field
from service.http import access, relay
from service.http.inputs import idempotency_key, json_body, query_int
from service.http.relay import SSE_HEADERS
from service.http.services import services
from service.jobs import fleet
from service.jobs.events import (
    Event,
    Publisher,
    Subscriber,
    attempt_text,
    attempt_tokens,
    id_key,
)
from service.jobs.kinds import KINDS, JobKind, parse_kind
from service.jobs.records import Job, JobStatus
from service.jobs.requests import check_capabilities

bp = Blueprint("jobs", __name__, url_prefix="/jobs")

_MAX_PAGE = 500
PREVIEW = 200  # characters of output (and of an error) a list row carries
_EVENT_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")  # a Redis stream id: "<ms>-<seq>"
_ID_PART_MAX = 2**64 - 2  # a part may be one below the largest: "(" then adds one


def _links(job: Job) -> dict[str, str]:
    return {"self": url_for(".get_job", job_id=job.id),
            "events": url_for(".job_events", job_id=job.id)}


def _kind(body: dict[str, Any]) -> JobKind:
    try:
        return parse_kind(field(body, "kind", str, "generate"))
    except ValueError as exc:
        raise InvalidRequest(f"invalid field 'kind': {exc}") from None


@bp.post("")
def submit():
    """Queue a job; 202 with its id and links. A repeated Idempotency-Key returns the same job."""
    body = json_body()
    kind = _kind(body)
    parsed = KINDS[kind].request.from_json(body)
    priority = field(body, "priority", int, 0)
    if not 0 <= priority <= 9:
        raise InvalidRequest("invalid field 'priority': expected an integer from 0 to 9")
    ctx = services()
    key = idempotency_key()
    if key and (existing := ctx.jobs.by_idempotency_key(key)) is not None:
        access.check_owner(existing.owner, "the job made with this Idempotency-Key")
        return jsonify(_summary(existing)), 200
    access.check_model(parsed.model)
    check_capabilities(parsed.to_job(), ctx.store.resolve(parsed.model), parsed.model)
    job = ctx.queue.submit(kind, parsed.model, parsed.to_job(), queue=_device(body),
                           priority=priority, batch_id=field(body, "batch", str),
                           idempotency_key=key, owner=access.owner())
    return jsonify(_summary(job)), 202


def _device(body: dict[str, Any]) -> str:
    """The device queue a job asks for: "cpu", "gpu", any queue workers serve, or "any"
    (whichever worker holds its model, else the default queue); CORRAL_QUEUES' first
    when it names none."""
    device = field(body, "device", str, services().default_queue)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", device):  # (no ".batch" queue)
        raise InvalidRequest("invalid field 'device': expected a device queue such as "
                             "'cpu' or 'gpu', or 'any'")
    return device


def _summary(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "links": _links(job)}


def _find(job_id: str) -> Job:
    """The job, if the request's key may see it (404 if there is none, 403 if not its own)."""
    job = services().jobs.get(job_id)
    if job is None:
        raise NotFound(f"job '{job_id}' not found")
    access.check_owner(job.owner, f"job '{job_id}'")
    return job


def _so_far(job: Job) -> tuple[str, int | None]:
    """A job's output and generated tokens so far. A running job's come from its event log
    (of its current attempt: a job whose worker was lost starts over), whose token events
    count as they go; a finished one's from its row."""
    if JobStatus(job.status).finished:
        return job.output or "", job.eval_count
    events = list(Subscriber(services().redis, job.id).replay())
    return attempt_text(events), attempt_tokens(events)


def describe(job: Job) -> dict[str, Any]:
    """A job as GET /jobs/<id> shows it: the row, output and tokens so far, queue position,
    links."""
    data: dict[str, Any] = job.to_dict()
    data["output"], data["eval_count"] = _so_far(job)
    data["position"] = services().jobs.position(job) if job.status == "queued" else None
    data["links"] = _links(job)
    return data


@bp.get("/<job_id>")
def get_job(job_id: str):
    return jsonify(describe(_find(job_id)))


@bp.delete("/<job_id>")
def cancel(job_id: str):
    """Cancel a queued job, or stop a running one keeping its partial output; 409 if ended."""
    job = _find(job_id)
    ctx = services()
    if JobStatus(job.status).finished:
        raise Conflict(f"job '{job_id}' already {job.status}")
    relay.cancel(ctx, job_id)  # a queued job ends now; a running one's worker is asked
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job = _find(job_id)
        if JobStatus(job.status).finished:
            return jsonify(describe(job))
        # A worker that is gone will never end its job, and a job handed back meanwhile is
        # queued again: either is ended here, now.
        if (job.status == "running" and _abandoned(job) and ctx.jobs.cancel_abandoned(job)
                or job.status == "queued" and ctx.jobs.cancel_queued(job_id)):
            Publisher(ctx.redis, job_id, ctx.settings.result_ttl).emit(
                "done", done_reason="cancel")
            return jsonify(describe(_find(job_id)))
        time.sleep(0.05)
    return jsonify(describe(job)), 202


def _abandoned(job: Job) -> bool:
    """Whether the worker holding a running job is gone: its lease lapsed, or it no longer
    beats in the fleet (a worker's heartbeat key outlives it by at most fleet's TTL)."""
    expires = job.lease_expires_at
    if expires is not None and aware(expires) < now():
        return True
    return job.lease_owner is not None and not fleet.alive(services().redis, job.lease_owner)


def _cursor(job: Job) -> str:
    raw = f"{job.to_dict()['created_at']}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _parse_cursor(text: str) -> tuple[datetime, str]:
    try:
        created, job_id = base64.urlsafe_b64decode(text.encode()).decode().split("|")
        return datetime.fromisoformat(created), job_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("invalid parameter 'cursor'") from None


def _time_arg(name: str) -> datetime | None:
    value = request.args.get(name)
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"invalid parameter '{name}': expected an ISO 8601 time") from None


# What GET /jobs lists of each job (its OpenAPI schema says the same, from this tuple).
LISTED = ("id", "kind", "model", "status", "queue", "priority", "batch_id", "done_reason",
          "created_at", "started_at", "first_token_at", "finished_at", "worker_host",
          "worker_node", "device", "prompt_eval_count", "prompt_eval_duration", "eval_count",
          "eval_duration", "load_duration", "total_duration")


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW:
        return text
    return text[:PREVIEW] + "…"


def summarize(job: Job) -> dict[str, Any]:
    """A job as GET /jobs lists it: what it is, where it is, its metrics and the start of its
    output. Never the request or the whole output, which may be megabytes per row; GET
    /jobs/<id> (its `self` link) has those."""
    whole = job.to_dict()
    data: dict[str, Any] = {key: whole[key] for key in LISTED}
    data["error"] = _preview(job.error)
    text, data["eval_count"] = _so_far(job)
    data["preview"] = _preview(text)
    data["position"] = services().jobs.position(job) if job.status == "queued" else None
    data["links"] = _links(job)
    return data


@bp.get("")
def list_jobs():
    """Jobs newest first: ?status=queued,running&model=&batch=&since=&until=&limit=&cursor="""
    statuses = [s for s in request.args.get("status", "").split(",") if s]
    unknown = set(statuses) - {s.value for s in JobStatus}
    if unknown:
        raise InvalidRequest(f"invalid parameter 'status': unknown {sorted(unknown)}")
    limit = query_int("limit", 50, 1, _MAX_PAGE)
    cursor = request.args.get("cursor")
    jobs = services().jobs.search(
        status=statuses, model=request.args.get("model"), batch_id=request.args.get("batch"),
        since=_time_arg("since"), until=_time_arg("until"),
        before=_parse_cursor(cursor) if cursor else None, owner=access.visible_to(),
        limit=limit)
    rows = [summarize(job) for job in jobs]
    next_cursor = _cursor(jobs[-1]) if len(jobs) == limit else None
    return jsonify({"jobs": rows, "next_cursor": next_cursor})


def _event_id(name: str, where: str) -> str | None:
    """The event id a client resumes after (a header or a query parameter), checked: Redis
    refuses anything but "<ms>-<seq>" with 64-bit parts, and that would be a 500."""
    value = request.headers.get(name) if where == "header" else request.args.get(name)
    if not value:
        return None
    match = _EVENT_ID.fullmatch(value.strip())
    if not match or any(int(part) > _ID_PART_MAX for part in match.groups("0")):
        raise InvalidRequest(f"invalid {where} '{name}': expected an event id such as "
                             "1700000000000-0")
    return match.group(0)


def _sse(event: Event) -> str:
    """One SSE block; an event that is not in the job's log (Redis lost) has no id, so a
    client that reconnects resumes after the last real one."""
    block = f"event: {event.type}\ndata: {json.dumps(event.data)}\n\n"
    return f"id: {event.id}\n{block}" if event.id else block


def _from_history(job: Job) -> list[Event]:
    """A finished job whose events expired from Redis, replayed from its row."""
    output = Event(f"{int(job.created_at.timestamp() * 1000)}-1", "token",
                   {"text": job.output or ""})
    done = Event(f"{int(job.created_at.timestamp() * 1000)}-2", "done",
                 {"done_reason": job.done_reason, "error": job.error})
    return [output, done] if job.output else [done]


@bp.get("/<job_id>/events")
def job_events(job_id: str):
    """Stream the job's events as SSE; Last-Event-ID resumes right after that event."""
    job = _find(job_id)
    after = _event_id("Last-Event-ID", "header") or _event_id("after", "parameter")
    subscriber = Subscriber(services().redis, job.id)
    expired = JobStatus(job.status).finished and not subscriber.replay()

    def stream() -> Iterator[str]:
        if expired:
            for event in _from_history(job):
                if after is None or id_key(event.id) > id_key(after):
                    yield _sse(event)
            return
        for event in relay.resuming(subscriber, subscriber.follow(after=after), after, None):
            yield _sse(event)

    return Response(stream(), mimetype="text/event-stream", headers=SSE_HEADERS)
