"""OpenAI's Files and Batch APIs at /v1/files and /v1/batches, so the official client's batch
workflow (upload → create → poll → download output and error files) runs against corral.

Input lines are validated one by one when the batch is created: a bad line (malformed
JSON, duplicate custom_id, wrong method or url, unknown model, bad body field) lands in the
error file with its line number and the rest run. An upload that is not JSONL at all is
a 400, one over CORRAL_MAX_UPLOAD a 413, before anything is stored or queued.

Output and error files get rows (purpose "batch_output") when the batch ends; their bytes
are rendered from the job rows on each read, in input order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request

from service.batches.files import File, FileStore, new_id
from service.batches.records import Batch, BatchLine, BatchStatus
from service.batches.store import WINDOWS, BatchStore
from service.core.db import aware
from service.core.errors import CorralError, NotFound
from service.http import access
from service.http.batch_lines import OPENAI_URLS, parse_lines
from service.http.inputs import json_body, query_int
from service.http.openai import types
from service.http.services import services
from service.jobs.records import Job, JobStatus
from service.models.tool_calls import call_ids, split_calls

bp = Blueprint("batches", __name__)

_FRAMING = 64 * 1024
_TIMES = ("created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at",
          "failed_at", "expired_at", "cancelling_at", "cancelled_at")
_STOPPED = {"cancelled": ("batch_cancelled", "the batch was cancelled before this request "
                          "finished"),
            "expired": ("batch_expired", "this request could not be executed before the "
                        "completion window expired")}


def file_object(row: File) -> dict[str, Any]:
    """The file as OpenAI's File object."""
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": row.created,
            "filename": row.filename, "purpose": row.purpose, "status": "processed",
            "expires_at": None, "status_details": None}


def _param(name: str, message: str) -> types.InvalidParam:
    return types.InvalidParam(name, message)


# ---- files -----------------------------------------------------------------------------
def _looks_like_jsonl(files: FileStore, file_id: str) -> bool:
    """UTF-8 text with at least one JSON object line (bad lines are reported per line)."""
    try:
        for text in files.lines(file_id):
            if text.strip().startswith("{"):
                try:
                    if isinstance(json.loads(text), dict):
                        return True
                except json.JSONDecodeError:
                    continue
    except CorralError:
        return False
    return False


@bp.post("/files")
def upload_file():
    """multipart/form-data with `file` and `purpose` ("batch")."""
    files = services().files()
    # The body is the file plus multipart framing: allow for the framing, refuse (413)
    # bigger declared bodies before reading them, and make werkzeug stop chunked ones.
    request.max_content_length = files.limit + _FRAMING
    if request.content_length is not None:
        files.check_size(max(0, request.content_length - _FRAMING))
    purpose = request.form.get("purpose")
    if purpose != "batch":
        raise _param("purpose", "invalid field 'purpose': only 'batch' is supported")
    upload = request.files.get("file")
    if upload is None:
        raise _param("file", "missing required field 'file'")
    row = files.save(upload.stream, upload.filename or "batch.jsonl", purpose, access.owner())
    if not _looks_like_jsonl(files, row.id):
        files.delete(row.id)
        raise _param("file", "invalid file: expected JSONL, one JSON request object per line")
    return jsonify(file_object(row))


@bp.get("/files")
def list_files():
    files = services().files()
    limit = _limit(10000)
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise _param("order", "invalid parameter 'order': expected asc or desc")
    rows = files.list(purpose=request.args.get("purpose"), after=request.args.get("after"),
                      limit=limit + 1, ascending=order == "asc", owner=access.visible_to())
    return jsonify(_page([file_object(r) for r in rows[:limit]], len(rows) > limit))


def _own_file(files: FileStore, file_id: str) -> File:
    """The file, if the request's key may see it (404 if there is none, 403 if not its own)."""
    row = files.get(file_id)
    access.check_owner(row.owner, f"file '{file_id}'")
    return row


def _own_batch(batches: BatchStore, batch_id: str) -> Batch:
    """The batch brought up to date, if the request's key may see it."""
    access.check_owner(batches.get(batch_id).owner, f"batch '{batch_id}'")
    return batches.refresh(batch_id)


@bp.get("/files/<file_id>")
def get_file(file_id: str):
    return jsonify(file_object(_own_file(services().files(), file_id)))


@bp.delete("/files/<file_id>")
def delete_file(file_id: str):
    files = services().files()
    _own_file(files, file_id)
    files.delete(file_id)
    return jsonify({"id": file_id, "object": "file", "deleted": True})


@bp.get("/files/<file_id>/content")
def file_content(file_id: str):
    """An uploaded file's bytes, or a batch output/error file rendered from its rows."""
    files = services().files()
    _own_file(files, file_id)
    if files.path(file_id).is_file():
        handle = files.open(file_id)
        return Response(_chunks(handle), mimetype="application/octet-stream")
    batches = services().batches()
    batch = batches.by_file(file_id)
    if batch is None:
        raise NotFound(f"file '{file_id}' has no content")
    errors = file_id == batch.error_file_id
    return Response((line.encode() for line in render(batches, batch, errors)),
                    mimetype="application/octet-stream")


def _chunks(handle) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(1 << 16):
            yield chunk


# ---- batches ---------------------------------------------------------------------------
@bp.post("/batches")
def create_batch():
    body = json_body()
    endpoint = types.param(body, "endpoint", str, required=True)
    if endpoint not in OPENAI_URLS:
        raise _param("endpoint", f"invalid field 'endpoint': expected one of "
                     f"{sorted(OPENAI_URLS)}")
    window = types.param(body, "completion_window", str, required=True)
    if window not in WINDOWS:
        raise _param("completion_window", "invalid field 'completion_window': expected '24h'")
    metadata = types.param(body, "metadata", dict)
    files = services().files()
    upload = _own_file(files, types.param(body, "input_file_id", str, required=True))
    if upload.purpose != "batch":
        raise _param("input_file_id", f"file '{upload.id}' was not uploaded with purpose batch")
    batches = services().batches()
    lines = parse_lines(files.lines(upload.id), services().store, endpoint=endpoint,
                        model=None, may_use=access.principal().may_use)
    batch = batches.create(lines, endpoint=endpoint, queue=services().default_queue,
                           input_file_id=upload.id, metadata=metadata,
                           completion_window=window, owner=access.owner())
    return jsonify(batch_object(batches, batch))


@bp.get("/batches/<batch_id>")
def get_batch(batch_id: str):
    batches = services().batches()
    return jsonify(batch_object(batches, _own_batch(batches, batch_id)))


@bp.get("/batches")
def list_batches():
    batches = services().batches()
    limit = _limit(100, default=20)
    rows = batches.list(after=request.args.get("after"), limit=limit + 1,
                        owner=access.visible_to())
    return jsonify(_page([batch_object(batches, b) for b in rows[:limit]], len(rows) > limit))


@bp.post("/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str):
    batches = services().batches()
    _own_batch(batches, batch_id)
    return jsonify(batch_object(batches, batches.cancel(batch_id)))


def _limit(high: int, default: int | None = None) -> int:
    return query_int("limit", default or high, 1, high, lambda message: _param("limit", message))


def _page(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def batch_object(batches: BatchStore, batch: Batch) -> dict[str, Any]:
    """The batch as OpenAI's Batch object; an ended batch gets its output files first."""
    if BatchStatus(batch.status).ended and not (batch.output_file_id or batch.error_file_id):
        batch = _attach_files(batches, batch)
    counts = batches.counts(batch.id)
    errors = None if not batch.errors else {"object": "list", "data": batch.errors}
    return {"id": batch.id, "object": "batch", "endpoint": batch.endpoint, "errors": errors,
            "input_file_id": batch.input_file_id, "completion_window": batch.completion_window,
            "status": batch.status, "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id, **{t: batch.unix(t) for t in _TIMES},
            "request_counts": {"total": counts.total, "completed": counts.succeeded,
                               "failed": counts.failed + counts.invalid},
            "metadata": batch.meta, "model": batch.model}


def _attach_files(batches: BatchStore, batch: Batch) -> Batch:
    """Give an ended batch, once its last job has stopped, its output and error files."""
    if batches.in_flight(batch):
        return batch
    sizes = {False: 0, True: 0}
    for errors in sizes:
        sizes[errors] = sum(len(line.encode()) for line in render(batches, batch, errors))
    ids = {errors: new_id() if sizes[errors] else None for errors in sizes}
    records = [File(id=ids[errors], purpose="batch_output", bytes=sizes[errors],
                    owner=batch.owner,
                    filename=f"{batch.id}_{'error' if errors else 'output'}.jsonl",
                    created_at=aware(batch.completed_at or batch.cancelled_at or
                                      batch.expired_at or batch.failed_at or batch.created_at))
               for errors in sizes if ids[errors]]
    batches.attach_files(batch.id, ids[False], ids[True], records)
    return batches.get(batch.id)


# ---- output and error lines ------------------------------------------------------------
def render(batches: BatchStore, batch: Batch, errors: bool) -> Iterator[str]:
    """The output file (errors=False) or error file lines of a batch, in input order."""
    for line, job in batches.rows(batch.id):
        item = output_line(batch, line, job)
        if (item["error"] is not None) == errors:
            yield json.dumps(item) + "\n"


def output_line(batch: Batch, line: BatchLine, job: Job | None) -> dict[str, Any]:
    """One line of the output or error file, as OpenAI writes them."""
    request_id = f"batch_req_{job.id}" if job else f"batch_req_{batch.id[6:]}_{line.line}"
    base = {"id": request_id, "custom_id": line.custom_id, "response": None}
    if line.error is not None:
        return {**base, "error": {**line.problem, "line": line.line}}
    if job is not None and job.status == JobStatus.SUCCEEDED.value:
        return {**base, "response": {"status_code": 200, "request_id": job.id,
                                     "body": _completion(line, job)}, "error": None}
    if job is not None and job.status == JobStatus.FAILED.value:
        failure = CorralError(job.error or "the job failed")
        response = {"status_code": 500, "request_id": job.id, "body": types.error_body(failure)}
        return {**base, "response": response,
                "error": {"code": "server_error", "message": failure.message,
                          "line": line.line}}
    code, message = _STOPPED.get(batch.status, ("batch_cancelled", "the request was cancelled"))
    return {**base, "error": {"code": code, "message": message, "line": line.line}}


def _completion(line: BatchLine, job: Job) -> dict[str, Any]:
    """The chat.completion or text_completion object the request would have answered."""
    chat = line.kind == "chat"
    finished = aware(job.finished_at or job.created_at)
    reply = types.Reply(f"{'chatcmpl' if chat else 'cmpl'}-{job.id}", line.model or job.model,
                        int(finished.timestamp()), chat=chat)
    text, done = job.answer()
    if job.reply is not None:  # the answer as the worker split it (reasoning, calls)
        return reply.whole(text, done)
    names = [t["function"]["name"] for t in job.request.get("tools") or []]
    if chat and names and job.request.get("tool_choice") != "none":
        # The record keeps what the model wrote; its calls are split out as the worker did.
        text, done["tool_calls"] = split_calls(text, names, call_ids(job.id))
    return reply.whole(text, done)
