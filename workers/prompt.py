"""Turn a job's request into the exact prompt text and per-sequence options the engine runs.

Templates: a model's own TEMPLATE layer (Ollama's Go-template syntax) wins; otherwise the
chat template embedded in the GGUF (Jinja, as llama.cpp and transformers use it).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from service.core.errors import InvalidRequest
from service.jobs.requests import check_think
from service.models.store import Model
from service.models.template import parsed, render_chat
from workers.engine import Options
from workers.sampling import GrammarError, grammar_for_format

# Set from the request's own fields, not its options: grammar from `format`, and logprobs.
_OPTION_NAMES = {f.name for f in fields(Options)} - {"grammar", "logprobs", "top_logprobs"}


def build_options(model: Model, request: dict[str, Any], default_ctx: int) -> Options:
    """Merge the model's PARAMETERs under the request's options (request wins, as in Ollama);
    the request's `format` ("json" or a JSON schema) becomes the output grammar, and its
    `logprobs`/`top_logprobs` turn on the engine's logprobs for this sequence."""
    merged = {"num_ctx": default_ctx, **model.parameters, **(request.get("options") or {})}
    values = {k: v for k, v in merged.items() if k in _OPTION_NAMES}
    stop = values.get("stop")
    if isinstance(stop, str):
        values["stop"] = [stop]
    if request.get("logprobs"):
        values["logprobs"] = True
        values["top_logprobs"] = int(request.get("top_logprobs") or 0)
    try:
        values["grammar"] = grammar_for_format(request.get("format"))
    except GrammarError as exc:
        raise InvalidRequest(str(exc)) from None
    return Options(**values)


def fit_prompt(tokens: list[int], limit: int, *, bos: int, num_predict: int,
               truncate: bool) -> list[int]:
    """The prompt's tokens cut to a sequence's context of `limit` tokens, as Ollama's runner
    cuts them: a leading BOS token stays, then as much of the end as fits while leaving room
    for the answer (answer_room). With truncate off, a prompt that does not fit is a 400."""
    if len(tokens) < limit:
        return tokens
    head = 1 if tokens[0] == bos else 0
    tail = limit - answer_room(limit, num_predict) - head
    if not truncate or tail < 1:
        raise InvalidRequest(
            f"the prompt is {len(tokens)} tokens but the context holds {limit}: shorten the "
            "prompt or raise num_ctx" + ("" if truncate else " (or leave 'truncate' on)"))
    return tokens[:head] + tokens[-tail:]


def answer_room(limit: int, num_predict: int) -> int:
    """Tokens a cut prompt leaves free for the answer: num_predict when it is positive, else a
    quarter of the context; never more than half of it, never none. (The engine has no context
    shift: a sequence ends with "length" when its context is full.)"""
    wanted = num_predict if num_predict > 0 else limit // 4
    return max(1, min(wanted, limit // 2))


def messages_for(model: Model, request: dict[str, Any], kind: str) -> list[dict[str, str]]:
    """The conversation to template: SYSTEM, the model's MESSAGEs, then the request's turns."""
    if kind == "chat":
        turns = list(request.get("messages") or [])
        system = None
    else:
        turns = [{"role": "user", "content": request.get("prompt", "")}]
        system = request.get("system")
    if system is None:
        system = model.system
    has_system = any(t["role"] == "system" for t in turns)
    prefix = [{"role": "system", "content": system}] if system and not has_system else []
    return prefix + list(model.messages) + turns


def build_prompt(model: Model, request: dict[str, Any], kind: str, engine: Any) -> str:
    """Render the prompt for a generate (raw or templated) or chat request. The conversation
    from messages_for, system message included, goes to whichever template applies as it is."""
    if kind == "generate" and request.get("raw"):
        return request.get("prompt", "")
    think = request.get("think")
    check_think(think, model)  # a batch line's job reaches no API check
    messages = messages_for(model, request, kind)
    go_template = request.get("template") or model.template
    if go_template:
        return render_chat(parsed(go_template), messages, think)
    if engine.chat_template:
        return render_jinja(engine.chat_template, messages, engine.bos_token, engine.eos_token,
                            think)
    return "".join(f"{m['content']}\n" for m in messages)


@lru_cache(maxsize=16)  # sized like service.models.template.parsed, the Go-template cache
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def _raise(message: str):
    raise TemplateError(message)


def render_jinja(source: str, messages: list[dict[str, str]], bos: str, eos: str,
                 think: bool | str | None = None) -> str:
    """Render a GGUF chat template with the generation prompt left open. A request's `think`
    is `enable_thinking` (Qwen3's and others' switch), and a level is `reasoning_effort`
    (gpt-oss's); unset, both stay undefined so the template's default holds."""
    extra: dict[str, Any] = {}
    if think is not None:
        extra["enable_thinking"] = bool(think)
    if isinstance(think, str):
        extra["reasoning_effort"] = "high" if think == "max" else think
    try:
        return _compile(source).render(
            messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos, **extra
        )
    except TemplateError as exc:
        raise InvalidRequest(f"the model's chat template rejected the messages: {exc}") from None
