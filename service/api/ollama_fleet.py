"""The Ollama face of models arriving and running: /api/pull (a job on a worker) and /api/ps
(what every worker has loaded)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from service import fleet
from service.api.fields import field, json_body
from service.api.relay import open_events, progress
from service.app import services
from service.errors import InvalidRequest
from service.jobs import JobKind
from service.names import parse_name
from service.registry import is_url

bp = Blueprint("ollama_fleet", __name__, url_prefix="/api")
_MAX_SOURCE = 255  # the job row's model column


@bp.post("/pull")
def pull():
    """Queue a pull and relay its progress lines (Ollama's PullRequest: model, insecure)."""
    body = json_body()
    name = field(body, "model", str) or field(body, "name", str)
    if not name:
        raise InvalidRequest("missing required field 'model'")
    if len(name) > _MAX_SOURCE:
        raise InvalidRequest(f"invalid field 'model': longer than {_MAX_SOURCE} characters")
    if not is_url(name):
        parse_name(name)  # a bad name is a 400 now, not a failed job later
    insecure = field(body, "insecure", bool, False)
    ctx = services()
    job = ctx.queue.submit(JobKind.PULL, name, {"model": name, "insecure": insecure},
                           queue=ctx.default_queue)
    return progress(open_events(ctx, job), field(body, "stream", bool, True))


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
