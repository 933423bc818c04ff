"""Build one llama.cpp sampler chain per sequence from Ollama-style options.

Sampling runs in C (`llama_sampler_sample`), so the engine does no per-vocabulary Python work per
token. Each sequence owns its chain: penalties, grammar state and the random state never leak
between sequences.
"""

from __future__ import annotations

import ctypes
import json
import re
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf


@dataclass
class Options:
    """Per-sequence sampling and limits (Ollama option names)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0  # 1: off
    mirostat: int = 0  # 0: off, 1: Mirostat, 2: Mirostat 2.0 (replaces top_k/top_p/min_p)
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    seed: int = -1  # <0: random
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    num_predict: int = -1  # <0: until EOG or the sequence's context is full
    stop: list[str] = field(default_factory=list)
    num_ctx: int = 2048  # this sequence's own context limit (prompt + generated tokens)
    grammar: str | None = None  # GBNF whose rule "root" the output must match (format: json)
    logprobs: bool = False  # report each token's logprob (the model's, before this chain)
    top_logprobs: int = 0  # with logprobs: also the N likeliest tokens at each position (0-20)
    # With this text, the grammar is lazy: it binds when the model writes it as one token (a
    # tool call's opening tag); a vocabulary without such a token gets no grammar at all.
    grammar_trigger: str | None = None


class GrammarError(ValueError):
    """A grammar llama.cpp could not parse (its log says where)."""


def grammar_for_format(fmt: str | dict[str, Any] | None) -> str | None:
    """Return the GBNF for an Ollama `format`: "json" (any JSON object) or a JSON schema."""
    if not fmt:
        return None
    if fmt == "json":
        return JSON_GBNF
    if isinstance(fmt, dict):
        try:
            return json_schema_to_gbnf(json.dumps(fmt))
        except Exception as exc:  # the converter raises bare Exceptions and KeyErrors
            raise GrammarError(f"unsupported JSON schema in 'format': {exc}") from None
    raise GrammarError(f"format must be \"json\" or a JSON schema, not {fmt!r}")


def grammar_for_calls(schema: dict[str, Any], style: str) -> str:
    """Return the GBNF of one tool call matching `schema` (tool_calls.call_schema), written as
    the template taught: inside <tool_call> tags ("hermes") or as a bare JSON object."""
    try:
        call = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors
        raise GrammarError(f"unsupported JSON schema in a tool's parameters: {exc}") from None
    call = re.sub(r"^root ::=", "tool-call ::=", call, flags=re.M)
    # Whitespace as models write it around JSON (a space, or a newline and an indent), as
    # llama.cpp's newer converter has it: bounded, so a model cannot spend its tokens on
    # blanks; the converter's own allows one space only.
    call = re.sub(r"^space ::= .*$", lambda _: r'space ::= | " " | "\n"{1,2} [ \t]{0,20}',
                  call, flags=re.M)
    if style == "hermes":
        return f'root ::= "<tool_call>" space tool-call space "</tool_call>"\n{call}'
    return f"root ::= tool-call\n{call}"


def lazy_call_trigger(style: str) -> str | None:
    """The text at which a lazy call grammar for `style` binds, or None (a bare JSON call has
    no marker that tells it from a JSON answer)."""
    return "<tool_call>" if style == "hermes" else None


def trigger_token(vocab: llama_cpp.llama_vocab_p, text: str) -> int | None:
    """The token that is `text` alone, or None when the vocabulary spells it in pieces.

    A lazy grammar is bound by its trigger token only, never by llama.cpp's trigger
    patterns: those run a std::regex over the whole output after every token, which on
    SmolLM2 took 131 ms for the first 100 tokens and grew about with their cube.
    Qwen's and Hermes' vocabularies, whose templates teach <tool_call>, have it as a token.
    """
    data = text.encode("utf-8")
    buf = (llama_cpp.llama_token * 4)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, 4, False, True)
    return buf[0] if n == 1 else None


def grammar_sampler(vocab: llama_cpp.llama_vocab_p, grammar: str,
                    trigger: int | None = None) -> llama_cpp.llama_sampler_p:
    """The sampler that keeps output to `grammar`; lazy, from the `trigger` token on, if one
    is given (the token's own text is then the grammar's first)."""
    text = grammar.encode("utf-8")
    if trigger is not None:
        tokens = (llama_cpp.llama_token * 1)(trigger)
        sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
            vocab, text, b"root", None, 0, tokens, 1)
    else:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, text, b"root")
    if not sampler:
        raise GrammarError("the output grammar could not be parsed")
    return sampler


def _grammar_stage(vocab: llama_cpp.llama_vocab_p, options: Options
                   ) -> llama_cpp.llama_sampler_p | None:
    if not options.grammar:
        return None
    if options.grammar_trigger is None:
        return grammar_sampler(vocab, options.grammar)
    token = trigger_token(vocab, options.grammar_trigger)
    return None if token is None else grammar_sampler(vocab, options.grammar, token)


def build_sampler(
    vocab: llama_cpp.llama_vocab_p, n_vocab: int, options: Options, prompt: list[int]
) -> llama_cpp.llama_sampler_p:
    """Return a new sampler chain for options; the caller frees it with `free_sampler`.

    A grammar goes first, so every later stage sees only the tokens it allows. The last
    `repeat_last_n` prompt tokens are fed to the penalty sampler alone, as llama-server does, so
    a reply is penalised for repeating the prompt as well as itself (the grammar must not see
    them: it would reject the prompt's text).
    """
    params = llama_cpp.llama_sampler_chain_default_params()
    params.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(params)
    try:
        grammar = _grammar_stage(vocab, options)
    except GrammarError:
        llama_cpp.llama_sampler_free(chain)
        raise
    if grammar is not None:
        llama_cpp.llama_sampler_chain_add(chain, grammar)
    penalties = _penalties(n_vocab, options)
    if penalties is not None:
        llama_cpp.llama_sampler_chain_add(chain, penalties)
        if options.repeat_last_n != 0:
            for token in prompt[-_last_n(options) :]:
                llama_cpp.llama_sampler_accept(penalties, token)
    for sampler in _stages(options, n_vocab):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    return chain


def free_sampler(chain: llama_cpp.llama_sampler_p) -> None:
    """Free a chain and every sampler added to it."""
    llama_cpp.llama_sampler_free(chain)


def _penalties(n_vocab: int, options: Options) -> llama_cpp.llama_sampler_p | None:
    """The repetition-penalty sampler, or None when no penalty is active."""
    if not _has_penalties(options):
        return None
    return llama_cpp.llama_sampler_init_penalties(
        n_vocab,
        _last_n(options),
        options.repeat_penalty if options.repeat_penalty > 0 else 1.0,
        options.frequency_penalty,
        options.presence_penalty,
    )


def _stages(options: Options, n_vocab: int) -> list[llama_cpp.llama_sampler_p]:
    """List the truncation and selection samplers in llama.cpp's usual order (common/sampling:
    top_k, typical_p, top_p, min_p, temperature, then the draw); temperature <= 0 means greedy,
    and Mirostat, as there, replaces the truncation stages with its own."""
    if options.temperature <= 0:
        return [llama_cpp.llama_sampler_init_greedy()]
    seed = _seed(options)
    if options.mirostat in (1, 2):
        temp = llama_cpp.llama_sampler_init_temp(options.temperature)
        tau, eta = options.mirostat_tau, options.mirostat_eta
        if options.mirostat == 1:
            return [temp, llama_cpp.llama_sampler_init_mirostat(n_vocab, seed, tau, eta, 100)]
        return [temp, llama_cpp.llama_sampler_init_mirostat_v2(seed, tau, eta)]
    stages = []
    if options.top_k > 0:
        stages.append(llama_cpp.llama_sampler_init_top_k(options.top_k))
    if 0 < options.typical_p < 1:
        stages.append(llama_cpp.llama_sampler_init_typical(options.typical_p, 1))
    if 0 < options.top_p < 1:
        stages.append(llama_cpp.llama_sampler_init_top_p(options.top_p, 1))
    if options.min_p > 0:
        stages.append(llama_cpp.llama_sampler_init_min_p(options.min_p, 1))
    stages.append(llama_cpp.llama_sampler_init_temp(options.temperature))
    stages.append(llama_cpp.llama_sampler_init_dist(seed))
    return stages


def _seed(options: Options) -> int:
    """The draw's seed as llama.cpp takes it (a uint32); a negative seed means random."""
    seed = llama_cpp.LLAMA_DEFAULT_SEED if options.seed < 0 else options.seed & 0xFFFFFFFF
    return ctypes.c_uint32(seed).value


def _has_penalties(options: Options) -> bool:
    """Whether any repetition penalty is active (a no-op penalty sampler still costs time)."""
    return (
        0 < options.repeat_penalty != 1.0
        or options.frequency_penalty != 0.0
        or options.presence_penalty != 0.0
    )


def _last_n(options: Options) -> int:
    """Penalty window; Ollama's -1 means the whole context, capped here to keep it bounded."""
    if options.repeat_last_n < 0:
        return max(options.num_ctx, 0)
    return options.repeat_last_n
