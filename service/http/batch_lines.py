"""Read a batch file's lines into LineSpecs, each checked the way its request would be.

Both batch faces use this: corral's native /batches (plain prompts, Ollama-shaped objects or
OpenAI batch lines) and OpenAI's /v1/batches (OpenAI batch lines only). A bad line becomes
the line's error, with a code, a message and the field at fault; the other lines run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from service.batches.records import LineSpec
from service.core.errors import CorralError
from service.http.openai import types as openai
from service.jobs.kinds import KINDS, JobKind
from service.models.store import ModelStore

# url of an OpenAI batch line -> the job kind and the /v1 parser of its body
OPENAI_URLS: dict[str, tuple[JobKind, Callable[[dict[str, Any]], openai.Parsed]]] = {
    "/v1/chat/completions": (JobKind.CHAT, openai.chat_request),
    "/v1/completions": (JobKind.GENERATE, openai.completion_request),
}
def model_checker(store: ModelStore, may_use: Callable[[str], bool]
                  ) -> Callable[[str], dict[str, Any] | None]:
    """check(name) → None if the model exists and the key may use it, else the line's
    error; cached per name."""
    seen: dict[str, dict[str, Any] | None] = {}

    def check(name: str) -> dict[str, Any] | None:
        if name not in seen:
            try:
                seen[name] = None if may_use(name) else problem(
                    "model_not_allowed", f"this API key may not use the model '{name}'",
                    "model")
                store.resolve(name)
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
        kind = JobKind.CHAT
    elif "prompt" in body:
        kind = JobKind.GENERATE
    else:
        raise LineError("invalid_request", "expected a prompt or messages field", "prompt")
    return kind, body["model"], KINDS[kind].request.from_json(body).to_job()


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


def parse_lines(lines: Iterable[str], store: ModelStore, *, endpoint: str | None,
                model: str | None, may_use: Callable[[str], bool] = lambda name: True
                ) -> Iterator[LineSpec]:
    """Every non-blank line parsed and checked: unique custom_id, a model in `store` that
    `may_use` allows (the request's key)."""
    check, seen = model_checker(store, may_use), set()
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


