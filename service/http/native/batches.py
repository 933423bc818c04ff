"""The native batch face for `corral batch`: upload a file of prompts, follow it, read results.

POST /batches takes the file itself as the body. Its lines may be plain text (a prompt),
{"prompt": ...} or {"messages": [...]} objects (Ollama's generate/chat fields, plus an
optional custom_id), or OpenAI batch lines ({"custom_id", "method", "url", "body"}); lines
without a model use ?model=. An Idempotency-Key (the CLI sends a hash of file and model)
makes re-submitting the same file attach to the batch already made, so nothing is redone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request

from service.batches.records import Batch, BatchLine, Counts
from service.batches.store import BatchStore
from service.core.errors import InvalidRequest
from service.http import access
from service.http.batch_lines import parse_lines
from service.http.inputs import idempotency_key, query_int
from service.http.services import services
from service.jobs.records import Job

bp = Blueprint("batches", __name__, url_prefix="/batches")

NATIVE_ENDPOINT = "/batches"
_RESULT_KEYS = ("status", "output", "error", "done_reason", "prompt_eval_count", "eval_count",
                "eval_duration", "total_duration", "started_at", "finished_at")


# ---- results ---------------------------------------------------------------------------
def line_status(batch: Batch, job: Job | None, line: BatchLine) -> str:
    """A line's outcome: the job's status, failed (rejected line) or the batch's end."""
    if line.error is not None:
        return "failed"
    if job is not None:
        return job.status
    return {"cancelled": "cancelled", "cancelling": "cancelled", "expired": "expired"}.get(
        batch.status, "pending")


def native_result(batch: Batch, line: BatchLine, job: Job | None) -> dict[str, Any]:
    """One line of `corral batch results`: line number, custom_id, the job's outcome."""
    data = job.to_dict() if job is not None else {}
    result = {"line": line.line, "custom_id": line.custom_id, "id": line.job_id,
              **{k: data.get(k) for k in _RESULT_KEYS}}
    result["status"] = line_status(batch, job, line)
    if line.error is not None:
        result["error"] = f"line {line.line}: {line.problem['message']}"
    return result


def describe(batch: Batch, counts: Counts) -> dict[str, Any]:
    """A batch as GET /batches/<id> shows it."""
    times = ("created_at", "in_progress_at", "completed_at", "failed_at", "cancelled_at",
             "expires_at", "expired_at")
    return {"id": batch.id, "status": batch.status, "endpoint": batch.endpoint,
            "model": batch.model, "input_file_id": batch.input_file_id,
            "errors": batch.errors, **{t: batch.iso(t) for t in times},
            "counts": {"total": counts.total, "pending": counts.pending,
                       "queued": counts.queued, "running": counts.running,
                       "succeeded": counts.succeeded, "failed": counts.failed + counts.invalid,
                       "invalid": counts.invalid, "cancelled": counts.cancelled,
                       "done": counts.done},
            "eval_count": counts.tokens, "eval_duration": counts.eval_ns}


# ---- routes ----------------------------------------------------------------------------
@bp.post("")
def create():
    """Store the body as the batch's input file and start it; 201, or 200 when attached."""
    ctx = services()
    files, batches = ctx.files(), ctx.batches()
    key = idempotency_key()
    if key and (existing := batches.by_key(key)) is not None:
        access.check_owner(existing.owner, "the batch made with this Idempotency-Key")
        _drain()
        batch = batches.resume(existing.id)
        return jsonify(describe(batch, batches.counts(batch.id))), 200
    files.check_size(request.content_length)
    model = request.args.get("model") or None
    if model:
        access.check_model(model)
    priority = query_int("priority", 0, 0, 9)
    upload = files.save(request.stream, request.headers.get("X-Filename", "batch.jsonl"),
                        "batch", access.owner())
    if upload.bytes == 0:
        files.delete(upload.id)
        raise InvalidRequest("the file is empty")
    try:
        specs = parse_lines(files.lines(upload.id), ctx.store, endpoint=None, model=model,
                            may_use=access.principal().may_use)
        batch = batches.create(specs, endpoint=NATIVE_ENDPOINT, queue=ctx.default_queue,
                               model=model, input_file_id=upload.id, priority=priority,
                               idempotency_key=key, owner=access.owner())
    except Exception:
        files.delete(upload.id)
        raise
    return jsonify(describe(batch, batches.counts(batch.id))), 201


def _own(batches: BatchStore, batch_id: str) -> Batch:
    """The batch brought up to date, if the request's key may see it (404 if there is none,
    403 if not its own)."""
    access.check_owner(batches.get(batch_id).owner, f"batch '{batch_id}'")
    return batches.refresh(batch_id)


def _drain() -> None:
    """Read and drop an unneeded body, so the client can finish sending it."""
    while request.stream.read(1 << 20):
        pass


@bp.get("")
def list_batches():
    """Batches newest first (?after=<id>&limit=); ?idempotency_key= finds the one made with it."""
    batches = services().batches()
    key = request.args.get("idempotency_key")
    if key:
        found = batches.by_key(key)
        rows = [found] if found is not None and access.principal().owns(found.owner) else []
    else:
        rows = batches.list(after=request.args.get("after"),
                            limit=query_int("limit", 20, 1, 100), owner=access.visible_to())
    return jsonify({"batches": [describe(b, batches.counts(b.id)) for b in rows]})


@bp.get("/<batch_id>")
def get_batch(batch_id: str):
    batches = services().batches()
    batch = _own(batches, batch_id)
    return jsonify(describe(batch, batches.counts(batch_id)))


@bp.post("/<batch_id>/cancel")
def cancel(batch_id: str):
    """Stop the batch: cancelling until its running lines stop, then cancelled; 409 if ended."""
    batches = services().batches()
    _own(batches, batch_id)
    batch = batches.cancel(batch_id)
    return jsonify(describe(batch, batches.counts(batch_id)))


@bp.get("/<batch_id>/results")
def results(batch_id: str):
    """JSONL, one object per input line in input order, finished or not."""
    batches = services().batches()
    batch = _own(batches, batch_id)

    def lines() -> Iterator[str]:
        for line, job in batches.rows(batch_id):
            yield json.dumps(native_result(batch, line, job)) + "\n"

    return Response(lines(), mimetype="application/x-ndjson")

