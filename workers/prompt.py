"""Turn a job's request into the exact prompt text and per-sequence options the engine runs.

Templates: a model's own TEMPLATE layer (Ollama's Go-template syntax) wins; otherwise the
chat template embedded in the GGUF (Jinja, as llama.cpp and transformers use it).
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from service.core.errors import InvalidRequest
from service.jobs.requests import check_capabilities
from service.jobs.tools import forced_names
from service.models.capabilities import THINKING
from service.models.store import Model
from service.models.template import parsed, render_chat
from service.models.thinking import DEFAULT_TAGS
from service.models.tool_calls import ToolPlan, call_schema, call_style
from workers.engine import Options
from workers.sampling import (
    GrammarError,
    grammar_for_calls,
    grammar_for_format,
    lazy_call_trigger,
)

# Set from the request's own fields, not its options: the grammar (and its trigger) from
# `format` or the tools (_grammar), and logprobs.
_OPTION_NAMES = {f.name for f in fields(Options)} - {"grammar", "grammar_trigger", "logprobs",
                                                     "top_logprobs"}


def build_options(model: Model, request: dict[str, Any], default_ctx: int,
                  tools: ToolPlan | None = None) -> Options:
    """Merge the model's PARAMETERs under the request's options (request wins, as in Ollama);
    the request's `format` ("json" or a JSON schema) becomes the output grammar, unless a
    tool call is required: then the grammar is that of one call (grammar_for_calls); its
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
        values.update(_grammar(request, tools))
    except GrammarError as exc:
        raise InvalidRequest(str(exc)) from None
    return Options(**values)


def _grammar(request: dict[str, Any], tools: ToolPlan | None) -> dict[str, Any]:
    """The output grammar: one call when a call is required; with tool_choice "auto", the
    same grammar made lazy, binding where the model opens a call itself with its tag token
    (as llama-server does), so a call it starts is a valid one; else the request's `format`."""
    if tools is not None and tools.forced:
        return {"grammar": grammar_for_calls(call_schema(tools.tools, tools.forced),
                                             tools.style)}
    trigger = lazy_call_trigger(tools.style) if tools is not None else None
    if trigger and not request.get("format"):
        return {"grammar": grammar_for_calls(call_schema(tools.tools, tools.names), tools.style),
                "grammar_trigger": trigger}
    return {"grammar": grammar_for_format(request.get("format"))}


_JINJA_TOOLS = re.compile(r"\btools\b")


def tool_plan(model: Model, request: dict[str, Any], engine: Any) -> ToolPlan | None:
    """What the job does about its tools: None when it has none, its tool_choice is "none",
    or the model's template never shows tools (the model was not taught to call them, so
    the request is answered as a plain chat, which is what Open WebUI and agent frameworks
    need from a model that cannot call tools)."""
    tools = request.get("tools") or []
    choice = request.get("tool_choice") or "auto"
    if not tools or choice == "none":
        return None
    go_template = request.get("template") or model.template
    if go_template:
        source, shows_tools = go_template, parsed(go_template).uses_tools
    else:
        source = engine.chat_template or ""
        shows_tools = bool(_JINJA_TOOLS.search(source))
    if not shows_tools:
        return None
    return ToolPlan(tools, forced_names(tools, choice), call_style(source))


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


def build_prompt(model: Model, request: dict[str, Any], kind: str, engine: Any,
                 tools: list[dict[str, Any]] | None = None) -> str:
    """Render the prompt for a generate (raw or templated) or chat request. The conversation
    from messages_for, system message included, goes to whichever template applies as it is,
    with the tools tool_plan chose to show."""
    if kind == "generate" and request.get("raw"):
        return request.get("prompt", "")
    think = effective_think(model, request)
    check_capabilities(request, model)  # a batch line's job reaches no API check
    messages = messages_for(model, request, kind)
    go_template = request.get("template") or model.template
    suffix = (request.get("suffix") or "") if kind == "generate" else ""
    if suffix and not (go_template and parsed(go_template).uses_suffix):
        return infill_prompt(request.get("prompt", ""), suffix, engine)
    if go_template:
        return render_chat(parsed(go_template), messages, tools=tools, think=think,
                           suffix=suffix)
    if engine.chat_template:
        return render_jinja(engine.chat_template, messages, engine.bos_token, engine.eos_token,
                            tools=tools, think=think)
    return "".join(f"{m['content']}\n" for m in messages)


def infill_prompt(prefix: str, suffix: str, engine: Any) -> str:
    """A fill-in-the-middle prompt from the vocabulary's FIM tokens, as llama-server's /infill
    lays it out, for a model whose TEMPLATE does not place .Suffix itself (the tokens' texts
    are read back as special tokens when the prompt is tokenized)."""
    if not getattr(engine, "fim_tokens", None):
        raise InvalidRequest("this model has neither a TEMPLATE with .Suffix nor "
                             "fill-in-the-middle tokens, so 'suffix' cannot be placed")
    pre, suf, mid = engine.fim_tokens
    return f"{pre}{prefix}{suf}{suffix}{mid}"


def effective_think(model: Model, request: dict[str, Any]) -> bool | str | None:
    """The job's `think` as it runs: unset on a model that can think means on, as Ollama
    does now; the template then sees .Think true and .IsThinkSet true."""
    think = request.get("think")
    if think is None and THINKING in model.capabilities():
        return True
    return think


def reasoning_tags(model: Model, request: dict[str, Any], kind: str) -> tuple[str, str] | None:
    """The tags to split the job's reasoning out by, or None when it does not think (think
    off, a model that cannot, or a raw prompt, which no template opened)."""
    if kind == "generate" and request.get("raw"):
        return None
    if not effective_think(model, request) or THINKING not in model.capabilities():
        return None
    go_template = request.get("template") or model.template
    if go_template:
        opening, closing = parsed(go_template).thinking_tags
        if opening and closing:
            return opening, closing
    return DEFAULT_TAGS


@lru_cache(maxsize=16)  # sized like service.models.template.parsed, the Go-template cache
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = _tojson
    return env.from_string(source)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' `tojson`: plain json.dumps, where Jinja's own escapes <, > and & as
    HTML and so would show a tool's schema to the model differently than it was trained."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _raise(message: str):
    raise TemplateError(message)


def render_jinja(source: str, messages: list[dict[str, Any]], bos: str, eos: str,
                 tools: list[dict[str, Any]] | None = None,
                 think: bool | str | None = None) -> str:
    """Render a GGUF chat template with the generation prompt left open. Messages and tools
    are in the shapes transformers' apply_chat_template passes (tools None when there are
    none, which templates test with `tools is not none`; a tool turn's function as `name`).
    A request's `think` is `enable_thinking` (Qwen3's and others' switch), and a level is
    `reasoning_effort` (gpt-oss's); unset, both stay undefined so the template's default
    holds."""
    extra: dict[str, Any] = {}
    if think is not None:
        extra["enable_thinking"] = bool(think)
    if isinstance(think, str):
        extra["reasoning_effort"] = "high" if think == "max" else think
    turns = [{**m, "name": m["tool_name"]} if "tool_name" in m else m for m in messages]
    try:
        return _compile(source).render(
            messages=turns, tools=tools or None, add_generation_prompt=True, bos_token=bos,
            eos_token=eos, **extra
        )
    except TemplateError as exc:
        raise InvalidRequest(f"the model's chat template rejected the messages: {exc}") from None
