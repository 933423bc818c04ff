"""The event protocol between a worker running a job and whoever is listening for it.

Each job has a Redis stream (`corral:job:<id>:log`) that keeps every event it emitted, and a
pub/sub channel (`corral:job:<id>`) that pushes each event as it happens. A worker writes
both in one atomic script, so every published event carries its stream id. A listener
subscribes first, then replays the stream, then follows the channel, skipping ids it already
has: a client that subscribes late, or reconnects with the last id it saw, loses nothing and
sees nothing twice.

Event types: `status` (the job changed state), `token` (`text`, and `eval_count`: the tokens
generated so far, reasoning included; a `thinking` event carries it too), `tool_calls`
(`tool_calls`: calls a chat's answer made, as each completes), `done` (final metrics, and all
the tool calls) and `error` (`error`). `done` and `error` end a job's events.

A request that asked for `logprobs` gets them on its `token` events (`logprobs`: one entry per
token whose text starts in that event's `text`, {"token", "logprob", "bytes", "top_logprobs"}).
They live only here, not in the job's row: the answer is built from the events, which a late
or reconnecting listener replays, and a row of 20 alternatives per token would be far larger
than the text it explains.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

TERMINAL = ("done", "error")

# One round trip per event: append to the log, refresh its expiry, publish with the id.
_EMIT = """
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[1])
return id
"""


def log_key(job_id: str) -> str:
    return f"corral:job:{job_id}:log"


def channel(job_id: str) -> str:
    return f"corral:job:{job_id}"


@dataclass(frozen=True)
class Event:
    """One event of a job: its stream id (usable as an SSE id), type and data."""

    id: str
    type: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


RETRYING = "retrying"  # a `status` event's status when the job's worker was lost


def retrying(event: Event) -> bool:
    """Whether `event` says the job's worker was lost and the job starts over elsewhere."""
    return event.type == "status" and event.data.get("status") == RETRYING


def attempt_text(events: Iterable[Event]) -> str:
    """The text of the job's current attempt: the tokens after its last `retrying` event."""
    parts: list[str] = []
    for event in events:
        if event.type == "token":
            parts.append(event.data["text"])
        elif retrying(event):
            parts.clear()
    return "".join(parts)


def attempt_tokens(events: Iterable[Event]) -> int | None:
    """The tokens the current attempt has generated so far, as its last `token` or `thinking`
    event counted them; None before its first (or from a worker that does not count)."""
    count: int | None = None
    for event in events:
        if event.type in ("token", "thinking") and "eval_count" in event.data:
            count = event.data["eval_count"]
        elif retrying(event):
            count = None
    return count


def _decode(event_id: str | bytes, payload: str | bytes) -> Event:
    body = json.loads(payload)
    event_type = body.pop("type")
    if isinstance(event_id, bytes):
        event_id = event_id.decode()
    return Event(event_id, event_type, body)


class Publisher:
    """Emits one job's events; used by the worker that runs the job."""

    def __init__(self, client: redis.Redis, job_id: str, ttl_seconds: float) -> None:
        self._emit = client.register_script(_EMIT)
        self._keys = [log_key(job_id), channel(job_id)]
        self._ttl_ms = max(1000, int(ttl_seconds * 1000))

    def emit(self, event_type: str, **data: Any) -> str:
        """Append and publish one event; return its id."""
        payload = json.dumps({"type": event_type, **data}, separators=(",", ":"))
        event_id = self._emit(keys=self._keys, args=[payload, self._ttl_ms])
        return event_id.decode() if isinstance(event_id, bytes) else event_id


class _Reconnects:
    """Notes that a pub/sub connection was made again.

    redis-py reconnects a pub/sub connection whose server went away, and subscribes it again,
    without a word (if the server is back within its retries), and what was published
    meanwhile never reaches it. A follower must hear of it, to read the job's log again from
    its last event (service/http/relay.py resuming) or to say that Redis was lost.
    """

    def __init__(self, pubsub: redis.client.PubSub) -> None:
        self.happened = False
        pubsub.connection.register_connect_callback(self._connected)  # held weakly: keep self

    def _connected(self, _connection: object) -> None:
        self.happened = True


class Subscriber:
    """Reads one job's events in order, from the start or after a given event id."""

    def __init__(self, client: redis.Redis, job_id: str) -> None:
        self.client = client
        self.job_id = job_id

    def replay(self, after: str | None = None) -> list[Event]:
        """Return the events stored so far (after `after`, exclusive)."""
        start = f"({after}" if after else "-"
        entries = self.client.xrange(log_key(self.job_id), min=start, max="+")
        return [_decode(entry_id, fields[b"e"] if b"e" in fields else fields["e"])
                for entry_id, fields in entries]

    def follow(self, after: str | None = None, idle_timeout: float | None = None
               ) -> Iterator[Event]:
        """Yield every event after `after` until a terminal one.

        Raises TimeoutError when nothing arrives for `idle_timeout` seconds, and
        redis.ConnectionError when the connection to Redis is lost, even if redis-py made it
        again by itself (see _Reconnects).
        """
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel(self.job_id))
        reconnects = _Reconnects(pubsub)
        try:
            last = after
            for event in self.replay(after):
                last = event.id
                yield event
                if event.terminal:
                    return
            if after is not None and self._ended_at_or_before(after):
                return  # resuming after the final event: nothing more will come
            yield from self._listen(pubsub, reconnects, last, idle_timeout)
        finally:
            pubsub.close()

    def newest(self) -> Event | None:
        """The last event in the job's log, if it has any."""
        entries = self.client.xrevrange(log_key(self.job_id), max="+", min="-", count=1)
        if not entries:
            return None
        entry_id, fields = entries[0]
        return _decode(entry_id, fields[b"e"] if b"e" in fields else fields["e"])

    def _ended_at_or_before(self, event_id: str) -> bool:
        """True if the job's log already holds its terminal event, at or before `event_id`."""
        event = self.newest()
        return event is not None and event.terminal and id_key(event.id) <= id_key(event_id)

    def _listen(self, pubsub, reconnects: _Reconnects, last: str | None,
                idle_timeout: float | None) -> Iterator[Event]:
        last_key = id_key(last) if last else (-1, -1)
        deadline = None if idle_timeout is None else time.monotonic() + idle_timeout
        while True:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            message = pubsub.get_message(timeout=wait)
            if reconnects.happened:
                raise redis.ConnectionError(
                    f"the connection to Redis was lost while following job {self.job_id}")
            if message is None:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"no event for job {self.job_id} in {idle_timeout}s")
                continue
            raw = message["data"]
            raw = raw.decode() if isinstance(raw, bytes) else raw
            event_id, _, payload = raw.partition(" ")
            if id_key(event_id) <= last_key:
                continue
            last_key = id_key(event_id)
            if deadline is not None:
                deadline = time.monotonic() + idle_timeout
            event = _decode(event_id, payload)
            yield event
            if event.terminal:
                return
