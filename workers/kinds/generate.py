"""Generate and chat jobs: load the model, decode, stream the text, record the end.

An empty generate or chat only loads the model, or with keep_alive 0 unloads it (as Ollama).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from service.core.errors import InvalidRequest
from service.jobs.control import cancel_key, send
from service.jobs.events import Publisher
from service.jobs.records import Job, JobStatus
from service.models.store import Model
from service.models.thinking import Piece, ThinkingParser, prompt_opens
from service.models.tool_calls import ToolCallParser, call_ids
from workers.images import place_images, request_images, tag_images
from workers.job_context import JobContext
from workers.model_pool import LoadedEngine
from workers.prompt import build_options, build_prompt, fit_prompt, reasoning_tags, tool_plan
from workers.vision import ImageError, ImageSpan

# Batch lines stream their text at most once a second: few follow one live, and on the batch
# path every event is CPU taken from the decode of the other lines.
BATCH_STREAM_INTERVAL = 1.0


def run(job: Job, ctx: JobContext, events: Publisher) -> None:
    """Run a generate or chat job: load its model, decode, publish, record."""
    model = ctx.store.resolve(job.model)
    keep_alive = job.request.get("keep_alive")
    key = f"{model.name}@{model.digest}"
    if _only_loads(job):
        _load_only(job, ctx, model, key, keep_alive, events)
        return
    engine, load_ns = ctx.pool.acquire(key, model, _info(model))
    refused: InvalidRequest | None = None
    try:
        stream, output = _decode(job, ctx, model, engine, events)
    except InvalidRequest as exc:
        stream, output, refused = None, None, exc
    finally:
        # Released before "done" is sent, so a client that sees the end also sees the
        # model unloaded when it asked for keep_alive 0.
        ctx.pool.release(key, keep_alive)
        ctx.loaded_changed()
    if refused is not None:
        _refuse(job, ctx, refused, load_ns, events)
        return
    _succeed(job, ctx, stream, output, load_ns, events)


def _refuse(job: Job, ctx: JobContext, exc: InvalidRequest, load_ns: int,
            events: Publisher) -> None:
    """Fail a job whose request the worker found bad (a schema it cannot turn into a grammar,
    a prompt too long with truncate off) with status 400 in its error event, as embed does,
    so the API answers 400 rather than 500."""
    metrics = {"load_duration": load_ns, "total_duration": job.elapsed_ns()}
    ctx.jobs.finish(job.id, JobStatus.FAILED, error=exc.message, metrics=metrics)
    events.emit("error", error=exc.message, status=400)


def _only_loads(job: Job) -> bool:
    if job.kind == "chat":
        return not job.request.get("messages")
    return not job.request.get("prompt") and not job.request.get("raw")


def _info(model: Model) -> dict[str, Any]:
    """What the pool keeps beside a loaded model, for /api/ps and `corral stop`."""
    return {"name": model.name.display(), "digest": model.digest}


def _decode(job: Job, ctx: JobContext, model: Model, engine, events: Publisher):
    """Submit the prompt and publish its text as the engine produces it (see stream_pace);
    return the stream and the Output that split its reasoning and tool calls out."""
    tools = tool_plan(model, job.request, engine) if job.kind == "chat" else None
    options = build_options(model, job.request, ctx.settings.num_ctx, tools)
    prompt, tokens, images = _prompt(job, model, engine, tools, options)
    ctx.arrivals.settled(job.id)  # here now: an idle engine need not wait for it (arrivals)
    try:
        stream = engine.submit(tokens, options, batch=bool(job.batch_id), images=images,
                               priority=job.priority or 0)
    except ValueError as exc:  # a grammar llama.cpp cannot parse (GrammarError), no tokens
        raise InvalidRequest(str(exc)) from None
    with ctx.streams.running(job.id, stream):
        try:
            if ctx.redis.exists(cancel_key(job.id)):  # cancelled before it was registered
                stream.cancel()
            pace = stream_pace(ctx.settings.stream_interval, engine, bool(job.batch_id))
            parser = ToolCallParser(tools.names, call_ids(job.id)) if tools else None
            tags = reasoning_tags(model, job.request, job.kind)
            thinking = None if tags is None else ThinkingParser(
                *tags, started_inside=prompt_opens(prompt, tags[0]))
            output = Output(events, parser, thinking, generated=lambda: len(stream.tokens))
            if options.logprobs:
                for text, entries in stream.chunks_with_logprobs(pace):
                    output.add(text, entries)
            else:
                for text in stream.chunks(pace):
                    output.add(text)
            output.close()
        except BaseException:
            stream.cancel()  # e.g. Redis went away: free the slot, the job is handed back
            raise
    return stream, output


def _prompt(job: Job, model: Model, engine, tools, options) -> tuple[str, list[int],
                                                                     list[ImageSpan]]:
    """The rendered prompt, its tokens cut to the context (fit_prompt), and its images'
    spans when it has images, which the projector places where their tags are (a prompt
    with images is never cut: a cut could split one)."""
    shown = tools and tools.tools
    images = request_images(job.request, job.kind)
    if not images:
        prompt = build_prompt(model, job.request, job.kind, engine, shown)
        tokens = fit_prompt(engine.tokenize(prompt), engine.context_limit(options),
                            bos=engine.bos_id, num_predict=options.num_predict,
                            truncate=job.request.get("truncate", True) is not False)
        return prompt, tokens, []
    if engine.vision is None:
        raise InvalidRequest(f"{model.name.display()!r} was loaded without its projector")
    prompt = build_prompt(model, tag_images(job.request, job.kind), job.kind, engine, shown)
    text, placed = place_images(prompt, images, engine.vision.marker)
    try:
        tokens, spans = engine.vision.tokenize(text, [image.data for image in placed])
    except ImageError as exc:
        raise InvalidRequest(f"invalid field '{placed[exc.index].field}': {exc}") from None
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    limit = engine.context_limit(options)
    if len(tokens) >= limit:
        raise InvalidRequest(f"the prompt and its images are {len(tokens)} tokens but the "
                             f"context holds {limit}: raise num_ctx or send fewer images")
    return prompt, tokens, spans


class Output:
    """Publishes a job's text; with tools offered, the calls split out of it as well: a
    `tool_calls` event for each call as it completes, and text only where it is no call.
    A thinking job's reasoning goes first to `thinking` events (field `text`), and only the
    answer reaches `token` events and the tool-call parser.

    Each `token` and `thinking` event carries `eval_count`, the tokens generated so far
    (`generated()`), so whoever follows a running job, or lists it, sees its count grow
    without waiting for `done`.
    """

    def __init__(self, events: Publisher, parser: ToolCallParser | None,
                 thinking: ThinkingParser | None = None,
                 generated: Callable[[], int] | None = None) -> None:
        self.events = events
        self.parser = parser
        self.thinking = thinking
        self.generated = generated or (lambda: 0)
        self.content: list[str] = []  # the answer's text as published
        self.logprobs: list[dict[str, Any]] | None = None  # the answer's tokens', when asked

    @property
    def reasoning(self) -> str:
        return self.thinking.thinking if self.thinking else ""

    @property
    def calls(self) -> list[dict[str, Any]]:
        return self.parser.calls if self.parser else []

    def add(self, text: str, logprobs: list[dict[str, Any]] | None = None) -> None:
        """Publish a chunk of text (with its tokens' logprobs, when asked). A chunk the
        tool-call parser keeps whole (part of a call) publishes no text, and its logprobs go
        with it: they belong to the call, which carries none. Reasoning carries the
        logprobs of a chunk that holds no answer."""
        if self.thinking:
            self._split(self.thinking.feed(text), logprobs)
        else:
            self._answer(text, logprobs)

    def close(self) -> None:
        if self.thinking:
            self._split(self.thinking.close())
        if self.parser:
            self._publish(self.parser.close())

    def _split(self, piece: Piece, logprobs: list[dict[str, Any]] | None = None) -> None:
        """Publish a chunk's reasoning, then its answer; the logprobs go with the answer,
        or with the reasoning when the chunk holds no answer."""
        self._emit("thinking", piece.thinking, None if piece.content else logprobs)
        self._answer(piece.content, logprobs if piece.content else None)

    def _answer(self, text: str, logprobs: list[dict[str, Any]] | None = None) -> None:
        self._publish(self.parser.feed(text) if self.parser else text, logprobs)

    def reply(self) -> dict[str, Any]:
        """The answer as the faces sent it, for the job record (Job.reply)."""
        reply: dict[str, Any] = {"content": "".join(self.content)}
        if self.reasoning:
            reply["thinking"] = self.reasoning
        if self.calls:
            reply["tool_calls"] = self.calls
        if self.logprobs is not None:
            reply["logprobs"] = self.logprobs
        return reply

    def _emit(self, kind: str, text: str, logprobs: list[dict[str, Any]] | None) -> None:
        if kind == "token":
            self.content.append(text)
            if logprobs is not None:
                self.logprobs = self.logprobs if self.logprobs is not None else []
                self.logprobs.extend(logprobs)
        if text:
            extra = {} if logprobs is None else {"logprobs": logprobs}
            self.events.emit(kind, text=text, eval_count=self.generated(), **extra)

    def _publish(self, text: str, logprobs: list[dict[str, Any]] | None = None) -> None:
        self._emit("token", text, logprobs)
        calls = self.parser.take() if self.parser else []
        if calls:
            self.events.emit("tool_calls", tool_calls=calls)


def _succeed(job: Job, ctx: JobContext, stream, output: Output, load_ns: int,
             events: Publisher) -> None:
    """Record the finished job, then tell listeners (in that order: rows before events). The
    `done` event repeats the tool calls and the whole reasoning, so a face that answers once
    has them all there. The record keeps the raw text, reasoning tags and all."""
    completion = stream.completion
    metrics = {
        "prompt_eval_count": completion.prompt_eval_count,
        "prompt_eval_duration": completion.prompt_eval_duration,
        "eval_count": completion.eval_count,
        "eval_duration": completion.eval_duration,
        "load_duration": load_ns,
        "total_duration": job.elapsed_ns(),
    }
    first = stream.first_token_time
    first_at = None if first is None else _wall_from_perf(first)
    status = JobStatus.CANCELLED if completion.done_reason == "cancel" else JobStatus.SUCCEEDED
    if ctx.finish(job.id, status, output=completion.text, done_reason=completion.done_reason,
                  metrics=metrics, first_token_at=first_at, reply=output.reply()):
        # cached_tokens: prompt tokens reused from an earlier sequence's KV (a chat's last turn).
        extra: dict[str, Any] = {"tool_calls": output.calls} if output.calls else {}
        if output.reasoning:
            extra["thinking"] = output.reasoning
        events.emit("done", done_reason=completion.done_reason,
                    cached_tokens=completion.cached_tokens, **extra, **metrics)


def _load_only(job: Job, ctx: JobContext, model: Model, key: str, keep_alive: Any,
               events: Publisher) -> None:
    """Load the model, or with keep_alive 0 unload it here and, by a control message, on
    every other worker (`corral stop`)."""
    load_ns = 0
    if keep_alive == 0:
        ctx.pool.unload(key)
        send(ctx.redis, "unload", model=model.name.display())
        reason = "unload"
    else:
        _, load_ns = ctx.pool.acquire(key, model, _info(model))
        ctx.pool.release(key, keep_alive)
        reason = "load"
    ctx.loaded_changed()
    metrics = {"load_duration": load_ns, "total_duration": job.elapsed_ns()}
    if ctx.finish(job.id, JobStatus.SUCCEEDED, output="", done_reason=reason, metrics=metrics):
        events.emit("done", done_reason=reason, **metrics)


def stream_pace(base: float, engine: LoadedEngine, batch: bool) -> Callable[[], float]:
    """The time between two text events of a job: CORRAL_STREAM_INTERVAL (`base`) for an
    interactive job, whatever the load; a batch line's, that times the sequences its engine
    runs, and at least BATCH_STREAM_INTERVAL.

    Someone reads an interactive answer as it comes: at `base` (40 ms) it arrives in pieces
    of a token or two, as Ollama's and llama-server's do (they send every token), where the
    earlier pace (base times the running sequences, 200 ms at four) showed it in bursts.
    Nobody reads a batch line live, and each event costs a wake-up of the job's thread, of
    Redis, of the API and of the client, CPU taken from the decode: batch lines keep
    coalescing. Measured before (2 cores, interleaved rounds, c = 4): a fixed 100 ms beat a
    fixed 25 ms by 7 %; `make bench` pairs this pace with 200 ms chunks.
    """
    if not batch:
        return lambda: base
    return lambda: max(BATCH_STREAM_INTERVAL, base * max(1, engine.active()))


def _wall_from_perf(perf: float) -> datetime:
    """Convert a time.perf_counter() reading to wall-clock UTC."""
    return datetime.fromtimestamp(time.time() - (time.perf_counter() - perf), UTC)
