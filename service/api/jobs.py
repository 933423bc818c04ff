"""The native asynchronous jobs face: submit now, read later by polling or Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from service.api import ollama_types as types
from service.api.fields import field, json_body
from service.app import services
from service.errors import InvalidRequest, NotFound
from service.events import Event, Subscriber
from service.jobs import Job, JobKind, JobStatus

bp = Blueprint("jobs", __name__, url_prefix="/jobs")

_PARSERS = {JobKind.GENERATE: types.GenerateRequest, JobKind.CHAT: types.ChatRequest}


def _links(job: Job) -> dict[str, str]:
    return {"self": url_for("jobs.get_job", job_id=job.id),
            "events": url_for("jobs.job_events", job_id=job.id)}


@bp.post("")
def submit():
    """Queue a generate or chat job; 202 with its id and links."""
    body = json_body()
    kind_name = field(body, "kind", str, "generate")
    try:
        kind = JobKind(kind_name)
    except ValueError:
        raise InvalidRequest(f"invalid field 'kind': expected one of "
                             f"{[k.value for k in _PARSERS]}") from None
    if kind not in _PARSERS:
        raise InvalidRequest(f"invalid field 'kind': '{kind_name}' is not supported yet")
    parsed = _PARSERS[kind].from_json(body)
    priority = field(body, "priority", int, 0)
    ctx = services()
    ctx.store.resolve(parsed.model)
    job = ctx.queue.submit(kind, parsed.model, parsed.to_job(), queue=ctx.default_queue,
                           priority=priority, batch_id=field(body, "batch", str))
    return jsonify({"id": job.id, "status": job.status, "links": _links(job)}), 202


def _find(job_id: str) -> Job:
    job = services().jobs.get(job_id)
    if job is None:
        raise NotFound(f"job '{job_id}' not found")
    return job


def _output_so_far(job: Job) -> str:
    """A running job's text comes from its event log; a finished one's from its row."""
    if JobStatus(job.status).finished:
        return job.output or ""
    events = Subscriber(services().redis, job.id).replay()
    return "".join(e.data["text"] for e in events if e.type == "token")


@bp.get("/<job_id>")
def get_job(job_id: str):
    job = _find(job_id)
    data: dict[str, Any] = job.to_dict()
    data["output"] = _output_so_far(job)
    data["links"] = _links(job)
    return jsonify(data)


def _sse(event: Event) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(event.data)}\n\n"


@bp.get("/<job_id>/events")
def job_events(job_id: str):
    """Stream the job's events as SSE; Last-Event-ID resumes right after that event."""
    job = _find(job_id)
    after = request.headers.get("Last-Event-ID") or request.args.get("after")
    subscriber = Subscriber(services().redis, job.id)

    def stream() -> Iterator[str]:
        for event in subscriber.follow(after=after):
            yield _sse(event)

    return Response(stream(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
