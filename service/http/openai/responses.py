"""OpenAI's Responses API at /v1/responses: create (whole or streamed), retrieve, delete,
and list a response's input items.

A request is the chat job /v1/chat/completions queues (responses_types translates it), so
batching, leases, access checks and the job history apply as they do there; the response id
is "resp_<job id>", which is how previous_response_id and GET find it in the job history
(the job's `reply` keeps its answer as sent). A client that hangs up mid-stream cancels the
job. DELETE forgets the conversation's text; the job's counts and durations stay for the
report.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, request

from service.core.db import aware
from service.core.errors import Conflict, CorralError, NotFound
from service.http import access
from service.http.inputs import json_body
from service.http.openai.responses_reply import ResponseReply
from service.http.openai.responses_types import (
    ResponsesRequest,
    earlier_turn,
    input_messages,
    job_id,
    responses_request,
    stored,
)
from service.http.openai.types import InvalidParam
from service.http.relay import (
    LOST_MID_STREAM,
    SSE_HEADERS,
    Following,
    collect,
    failure,
    follow,
    refused_before_output,
    streamed,
)
from service.http.services import services
from service.jobs.events import retrying
from service.jobs.kinds import JobKind
from service.jobs.records import Job, JobStatus
from service.jobs.tools import name_tool_turns

bp = Blueprint("responses", __name__)


class ResponseNotFound(NotFound):
    """No response this key may read has that id (OpenAI: a 404)."""

    def __init__(self, response_id: str, param: str | None = None) -> None:
        which = "previous response" if param else "response"
        super().__init__(f"{which} with id '{response_id}' not found")
        self.param = param


@bp.post("/responses")
def create_response():
    parsed = responses_request(json_body())
    if parsed.previous is not None:
        _continue(parsed)
    following = follow(JobKind.CHAT, parsed.job)
    reply = ResponseReply(following.job.id, parsed.job.model, parsed.echo)
    if parsed.stream:
        return _sse(refused_before_output(following), reply)
    text, done = collect(following.events)
    return jsonify(reply.whole(text, done))


def _stored(response_id: str, param: str | None = None) -> Job:
    """The job behind a response this key may read; 404 for any other id."""
    key = job_id(response_id)
    job = services().jobs.get(key) if key else None
    if not stored(job):
        raise ResponseNotFound(response_id, param)
    access.check_owner(job.owner, f"response '{response_id}'")
    return job


def _continue(parsed: ResponsesRequest) -> None:
    """Put the earlier turn named by previous_response_id before this request's messages."""
    earlier = earlier_turn(_stored(parsed.previous, "previous_response_id"))
    messages = parsed.job.messages
    own_system = 1 if parsed.job.instructions is not None else 0
    # A function_call_output answers a call the earlier turn made: it takes that call's name.
    parsed.job.messages = name_tool_turns([*messages[:own_system], *earlier,
                                           *messages[own_system:]])
    parsed.job.earlier = len(earlier)


@bp.get("/responses/<response_id>")
def get_response(response_id: str):
    return jsonify(recorded(_stored(response_id)))


def recorded(job: Job) -> dict:
    """A response as its job record has it: finished, failed, or still queued or running."""
    echo = job.request.get("echo") or {}
    reply = ResponseReply(job.id, job.request.get("model", job.model), echo,
                          created_at=int(aware(job.created_at).timestamp()))
    status = JobStatus(job.status)
    if not status.finished:
        return reply.response("queued" if status is JobStatus.QUEUED else "in_progress")
    if status is JobStatus.FAILED:
        return reply.response("failed", error={"code": "server_error",
                                               "message": job.error or "job failed"})
    text, done = job.answer()
    finished = int(aware(job.finished_at).timestamp()) if job.finished_at else None
    return reply.whole(text, done, completed_at=finished)


@bp.delete("/responses/<response_id>")
def delete_response(response_id: str):
    job = _stored(response_id)
    if not JobStatus(job.status).finished:
        raise Conflict(f"response '{response_id}' is still {job.status}; it can be deleted "
                       "once it has finished")
    services().jobs.forget(job.id)
    return jsonify({"id": response_id, "object": "response", "deleted": True})


@bp.get("/responses/<response_id>/input_items")
def input_items(response_id: str):
    """The items this response's request gave (newest first unless order=asc), paged by
    `after` (an item id) and `limit` (1-100, default 20)."""
    job = _stored(response_id)
    items = [_input_item(job.id, i, m) for i, m in enumerate(input_messages(job))]
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidParam("order", "invalid field 'order': expected asc or desc")
    if order == "desc":
        items.reverse()
    after = request.args.get("after")
    if after:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidParam("after", f"invalid field 'after': no input item '{after}'")
        items = items[ids.index(after) + 1:]
    limit = request.args.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        raise InvalidParam("limit", "invalid field 'limit': must be between 1 and 100")
    page = items[:int(limit)]
    return jsonify({"object": "list", "data": page, "has_more": len(items) > len(page),
                    "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None})


def _input_item(job_id: str, index: int, message: dict) -> dict:
    """One input message as the item a client sent: a tool turn as function_call_output,
    an assistant's calls as its text (the calls are items of the answer they came from)."""
    item_id = f"msg_{job_id}_in{index}"
    if message["role"] == "tool":
        return {"type": "function_call_output", "id": item_id,
                "call_id": message.get("tool_call_id", ""), "output": message["content"],
                "status": "completed"}
    kind = "output_text" if message["role"] == "assistant" else "input_text"
    role = "developer" if message["role"] == "system" else message["role"]
    return {"type": "message", "id": item_id, "role": role, "status": "completed",
            "content": [{"type": kind, "text": message["content"]}]}


def _events(following: Following, reply: ResponseReply) -> Iterator[str]:
    """The stream's events, from the job's: opening, items and their deltas, closing."""
    yield from reply.opening()
    sent = False
    for event in following.events:
        if retrying(event) and sent:  # output went out already (see relay.ndjson)
            following.cancel()
            yield reply.failed(CorralError(LOST_MID_STREAM))
            return
        if event.type == "token":
            yield from reply.delta(event.data["text"], event.data.get("logprobs"))
        elif event.type == "thinking":
            yield from reply.thinking(event.data["text"])
        elif event.type == "tool_calls":
            yield from reply.calls(event.data["tool_calls"])
        elif event.type == "done":
            yield from reply.closing(event.data)
            return
        elif event.type == "error":
            yield reply.failed(failure(event))
            return
        sent = sent or event.type in ("token", "thinking", "tool_calls")


def _sse(following: Following, reply: ResponseReply) -> Response:
    """Stream as OpenAI's Responses API does: named events, no `[DONE]` at the end."""
    return streamed(_events(following, reply), "text/event-stream", following.cancel,
                    SSE_HEADERS)
