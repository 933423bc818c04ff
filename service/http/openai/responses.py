"""OpenAI's Responses API at POST /v1/responses: text in, text out, whole or streamed.

A request is the chat job /v1/chat/completions queues (responses_types translates it), so
batching, leases, access checks and the job history apply as they do there; the response id
is "resp_<job id>", which is how previous_response_id finds the earlier turn in the job
history. A client that hangs up mid-stream cancels the job.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, jsonify

from service.core.errors import CorralError, NotFound
from service.http import access
from service.http.inputs import json_body
from service.http.openai.responses_reply import ResponseReply
from service.http.openai.responses_types import (
    ResponsesRequest,
    earlier_turn,
    job_id,
    responses_request,
)
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

bp = Blueprint("responses", __name__)


class ResponseNotFound(NotFound):
    """previous_response_id names no response this key may build on (OpenAI: a 404)."""

    def __init__(self, response_id: str) -> None:
        super().__init__(f"previous response with id '{response_id}' not found")
        self.param = "previous_response_id"


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


def _continue(parsed: ResponsesRequest) -> None:
    """Put the earlier turn named by previous_response_id before this request's messages."""
    previous = services().jobs.get(job_id(parsed.previous)) if job_id(parsed.previous) else None
    if previous is None or previous.kind != JobKind.CHAT.value:
        raise ResponseNotFound(parsed.previous)
    access.check_owner(previous.owner, f"response '{parsed.previous}'")
    messages = parsed.job.messages
    own_system = 1 if parsed.job.instructions is not None else 0
    parsed.job.messages = [*messages[:own_system], *earlier_turn(previous),
                           *messages[own_system:]]


def _events(following: Following, reply: ResponseReply) -> Iterator[str]:
    """The stream's events, from the job's: opening, one delta per chunk, closing."""
    yield from reply.opening()
    parts: list[str] = []
    for event in following.events:
        if retrying(event) and parts:  # text went out already (see relay.ndjson)
            following.cancel()
            yield reply.failed("".join(parts), CorralError(LOST_MID_STREAM))
            return
        if event.type == "token":
            parts.append(event.data["text"])
            yield reply.delta(event.data["text"])
        elif event.type == "done":
            yield from reply.closing("".join(parts), event.data)
            return
        elif event.type == "error":
            yield reply.failed("".join(parts), failure(event))
            return


def _sse(following: Following, reply: ResponseReply) -> Response:
    """Stream as OpenAI's Responses API does: named events, no `[DONE]` at the end."""
    return streamed(_events(following, reply), "text/event-stream", following.cancel,
                    SSE_HEADERS)
