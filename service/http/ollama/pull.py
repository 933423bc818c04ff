"""The Ollama face of models arriving, leaving and running: /api/pull and /api/push (each a
job on a worker) and /api/ps (what every worker has loaded)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from service.http import access
from service.http.inputs import json_body
from service.http.relay import follow, progress
from service.http.services import services
from service.jobs import fleet
from service.jobs.kinds import JobKind
from service.jobs.requests import PullRequest, PushRequest

bp = Blueprint("pull", __name__)


@bp.post("/pull")
@access.admin_only
def pull():
    """Queue a pull and relay its progress lines; the pull goes on if the client hangs up."""
    req = PullRequest.from_json(json_body())
    return progress(follow(JobKind.PULL, req, resolve=False).events, req.stream)


@bp.post("/push")
@access.admin_only
def push():
    """Queue a push of a stored model (404 if there is none) and relay its progress lines;
    the push goes on if the client hangs up."""
    req = PushRequest.from_json(json_body())
    return progress(follow(JobKind.PUSH, req).events, req.stream)


@bp.get("/ps")
def ps():
    """Every model loaded on any live worker, with its size and when it will be unloaded.

    Beyond Ollama: each entry's `queued` says how many jobs wait for that model, and
    `queued` at the top level counts waiting jobs for every model, loaded or not.
    """
    ctx = services()
    waiting = ctx.jobs.waiting_by_model()
    models = fleet.loaded(ctx.redis)
    for model in models:
        model["queued"] = waiting.get(model.get("name"), 0)
    return jsonify({"models": models, "queued": waiting})


@bp.get("/workers")
def workers():
    """Every worker heard from lately (corral's own, beside /api/ps): host, Celery node,
    device, queues, models held, slots free, jobs held, heartbeat age; a silent one is listed
    with alive false for fleet.GRACE seconds, then dropped."""
    return jsonify({"workers": fleet.workers(services().redis)})
