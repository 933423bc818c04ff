"""The native batch face for `corral batch`: upload a file of prompts, follow it, read results.

POST /batches takes the file itself as the body. Its lines may be plain text (a prompt),
{"prompt": ...} or {"messages": [...]} objects (Ollama's generate/chat fields, plus an
optional custom_id), or OpenAI batch lines ({"custom_id", "method", "url", "body"}); lines
without a model use ?model=. An Idempotency-Key (the CLI sends a hash of file and model)
makes re-submitting the same file attach to the batch already made, so nothing is redone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request

from service.api import ollama_types
from service.api import openai_types as openai
from service.api.fields import query_int
from service.app import services
from service.batches import Batch, BatchLine, BatchStore, Counts, LineSpec
from service.errors import CorralError, InvalidRequest
from service.files import FileStore
from service.jobs import Job, JobKind

bp = Blueprint("batches", __name__, url_prefix="/batches")

# url of an OpenAI batch line -> the job kind and the /v1 parser of its body
OPENAI_URLS: dict[str, tuple[JobKind, Callable[[dict[str, Any]], openai.Parsed]]] = {
    "/v1/chat/completions": (JobKind.CHAT, openai.chat_request),
    "/v1/completions": (JobKind.GENERATE, openai.completion_request),
}
NATIVE_ENDPOINT = "/batches"
_RESULT_KEYS = ("status", "output", "error", "done_reason", "prompt_eval_count", "eval_count",
                "eval_duration", "total_duration", "started_at", "finished_at")


# ---- shared by both faces: files and stores --------------------------------------------
def file_store() -> FileStore:
    ctx = services()
    return FileStore(ctx.jobs.sessions, ctx.settings.home / "files", ctx.settings.max_upload)


def batch_store() -> BatchStore:
    ctx = services()
    return BatchStore(ctx.queue, ctx.settings.batch_window, ctx.settings.result_ttl)


def model_checker() -> Callable[[str], dict[str, Any] | None]:
    """resolve(name) → None if the model exists, else the line's error; cached per name."""
    store, seen = services().store, {}

    def check(name: str) -> dict[str, Any] | None:
        if name not in seen:
            try:
                store.resolve(name)
                seen[name] = None
            except CorralError:
                seen[name] = problem("model_not_found", f"model '{name}' not found", "model")
        return seen[name]

    return check


# ---- lines -----------------------------------------------------------------------------
def problem(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param}


class LineError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem(code, message, param)


def _openai_line(item: dict[str, Any], endpoint: str | None, model: str | None
                 ) -> tuple[JobKind, str, dict[str, Any]]:
    """(kind, model, job request) of {"custom_id", "method", "url", "body"}."""
    if item.get("method", "POST") != "POST":
        raise LineError("invalid_method", "method must be POST", "method")
    url = item.get("url")
    if url not in OPENAI_URLS:
        raise LineError("invalid_url", f"unsupported url {url!r}: expected one of "
                        f"{sorted(OPENAI_URLS)}", "url")
    if endpoint and url != endpoint:
        raise LineError("invalid_url", f"url {url!r} does not match the batch endpoint "
                        f"{endpoint!r}", "url")
    body = item.get("body")
    if not isinstance(body, dict):
        raise LineError("invalid_request", "body must be a JSON object", "body")
    if model and not body.get("model"):
        body = {**body, "model": model}
    kind, parse = OPENAI_URLS[url]
    job = parse(body).job
    return kind, job.model, job.to_job()


def _native_line(item: dict[str, Any], model: str | None) -> tuple[JobKind, str, dict[str, Any]]:
    """(kind, model, job request) of an Ollama-shaped {"prompt"} or {"messages"} object."""
    body = {k: v for k, v in item.items() if k != "custom_id"}
    if not body.get("model"):
        if not model:
            raise LineError("missing_model", "no model: give one per line or a default",
                            "model")
        body["model"] = model
    body["stream"] = False
    if "messages" in body:
        return JobKind.CHAT, body["model"], ollama_types.ChatRequest.from_json(body).to_job()
    if "prompt" not in body:
        raise LineError("invalid_request", "expected a prompt or messages field", "prompt")
    return JobKind.GENERATE, body["model"], ollama_types.GenerateRequest.from_json(body).to_job()


def parse_line(text: str, number: int, *, endpoint: str | None, model: str | None
               ) -> LineSpec:
    """One input line as a LineSpec; endpoint set = OpenAI batch lines only."""
    stripped = text.strip()
    try:
        item: Any = json.loads(stripped)
    except json.JSONDecodeError as exc:
        # A native line that is not JSON is a prompt, unless it meant to be an object.
        if endpoint is not None or stripped.startswith("{"):
            return LineSpec(number, error=problem("invalid_json_line", f"invalid JSON: {exc}"))
        item = {"prompt": stripped}
    if not isinstance(item, dict):
        if endpoint is not None or stripped.startswith(("{", "[")):
            return LineSpec(number, error=problem("invalid_json_line", "expected a JSON object"))
        item = {"prompt": stripped}  # e.g. a line that is just a number
    custom_id = item.get("custom_id")
    spec = LineSpec(number, custom_id=custom_id[:255] if isinstance(custom_id, str) else None)
    try:
        if custom_id is not None and (not isinstance(custom_id, str) or len(custom_id) > 255):
            raise LineError("invalid_custom_id", "custom_id must be a string of at most 255 "
                            "characters", "custom_id")
        openai_shaped = endpoint is not None or "url" in item or "body" in item
        if openai_shaped and not custom_id:
            raise LineError("missing_custom_id", "custom_id is required", "custom_id")
        spec.kind, spec.model, spec.body = (_openai_line(item, endpoint, model) if openai_shaped
                                            else _native_line(item, model))
    except LineError as exc:
        spec.error = exc.problem
    except CorralError as exc:
        spec.error = problem("invalid_request", exc.message, getattr(exc, "param", None))
    return spec


def parse_lines(lines: Iterable[str], *, endpoint: str | None, model: str | None
                ) -> Iterator[LineSpec]:
    """Every non-blank line parsed and checked: unique custom_id, a model in the store."""
    check, seen = model_checker(), set()
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        spec = parse_line(text, number, endpoint=endpoint, model=model)
        if spec.error is None and spec.custom_id is not None:
            if spec.custom_id in seen:
                spec.error = problem("duplicate_custom_id",
                                     f"custom_id {spec.custom_id!r} is used by an earlier line",
                                     "custom_id")
            seen.add(spec.custom_id)
        if spec.error is None and spec.model:
            spec.error = check(spec.model)
        if spec.error is not None:
            spec.kind = spec.model = spec.body = None
        yield spec


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
    ctx, files, batches = services(), file_store(), batch_store()
    key = request.headers.get("Idempotency-Key")
    if key and (existing := batches.by_key(key)) is not None:
        _drain()
        batch = batches.resume(existing.id)
        return jsonify(describe(batch, batches.counts(batch.id))), 200
    files.check_size(request.content_length)
    model = request.args.get("model") or None
    priority = query_int("priority", 0, 0, 9)
    upload = files.save(request.stream, request.headers.get("X-Filename", "batch.jsonl"),
                        "batch")
    if upload.bytes == 0:
        files.delete(upload.id)
        raise InvalidRequest("the file is empty")
    try:
        specs = parse_lines(files.lines(upload.id), endpoint=None, model=model)
        batch = batches.create(specs, endpoint=NATIVE_ENDPOINT, queue=ctx.default_queue,
                               model=model, input_file_id=upload.id, priority=priority,
                               idempotency_key=key)
    except Exception:
        files.delete(upload.id)
        raise
    return jsonify(describe(batch, batches.counts(batch.id))), 201


def _drain() -> None:
    """Read and drop an unneeded body, so the client can finish sending it."""
    while request.stream.read(1 << 20):
        pass


@bp.get("")
def list_batches():
    """Batches newest first (?after=<id>&limit=); ?idempotency_key= finds the one made with it."""
    batches = batch_store()
    key = request.args.get("idempotency_key")
    if key:
        found = batches.by_key(key)
        rows = [found] if found is not None else []
    else:
        rows = batches.list(after=request.args.get("after"),
                            limit=query_int("limit", 20, 1, 100))
    return jsonify({"batches": [describe(b, batches.counts(b.id)) for b in rows]})


@bp.get("/<batch_id>")
def get_batch(batch_id: str):
    batches = batch_store()
    batch = batches.refresh(batch_id)
    return jsonify(describe(batch, batches.counts(batch_id)))


@bp.post("/<batch_id>/cancel")
def cancel(batch_id: str):
    """Stop the batch: cancelling until its running lines stop, then cancelled; 409 if ended."""
    batches = batch_store()
    batch = batches.cancel(batch_id)
    return jsonify(describe(batch, batches.counts(batch_id)))


@bp.get("/<batch_id>/results")
def results(batch_id: str):
    """JSONL, one object per input line in input order, finished or not."""
    batches = batch_store()
    batch = batches.refresh(batch_id)

    def lines() -> Iterator[str]:
        for line, job in batches.rows(batch_id):
            yield json.dumps(native_result(batch, line, job)) + "\n"

    return Response(lines(), mimetype="application/x-ndjson")

