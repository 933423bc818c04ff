"""`logprobs` / `top_logprobs` on both faces, streamed and whole, through the official `ollama`
and `openai` clients against a real worker decoding SmolLM2; the arithmetic and the alignment
of entries with held-back text are checked on their own first."""

from __future__ import annotations

import math
import threading

import numpy as np
import ollama
import openai
import pytest

from service.core.errors import InvalidRequest
from service.http.openai.types import legacy_logprobs
from service.jobs.requests import ChatRequest, GenerateRequest
from workers.detok import TextAssembler
from workers.engine import Engine, Options
from workers.logprobs import Aligner, entry, token_logprobs

MODEL = "smollm2:135m"
# Greedy with no repetition penalty: the sampled token is then the model's likeliest.
GREEDY = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 12}
PROMPT = "Name three colours of the rainbow."
HI = [{"role": "user", "content": PROMPT}]


def ollama_client(api) -> ollama.Client:
    return ollama.Client(host=str(api.base_url).removesuffix("/v1/"))


def check_entries(entries, text: str, top: int, *, greedy: bool) -> None:
    """Each entry: a logprob <= 0, `top` alternatives most likely first whose probabilities
    sum to at most 1; the tokens spell `text`, and so do their bytes (which the ollama
    client's Logprob model does not keep)."""
    assert entries and "".join(e["token"] for e in entries) == text
    if "bytes" in entries[0]:
        assert bytes(b for e in entries for b in e["bytes"]).decode() == text
    for e in entries:
        assert e["logprob"] <= 0
        alternatives = e.get("top_logprobs") or []
        assert len(alternatives) == top
        lps = [t["logprob"] for t in alternatives]
        assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
        assert sum(math.exp(lp) for lp in lps) <= 1 + 1e-6
        if greedy and top:
            assert e["logprob"] == max(lps) and e["token"] == alternatives[0]["token"]


def plain(entries) -> list[dict]:
    """Entries as dicts, whichever client's objects they came as."""
    return [e if isinstance(e, dict) else e.model_dump() for e in entries]


def same_tokens(a: list[dict], b: list[dict]) -> None:
    """Streamed and whole answers of one greedy request carry the same tokens and logprobs
    (within float noise: the second run reads its prompt from the prefix cache)."""
    assert [e["token"] for e in a] == [e["token"] for e in b]
    assert [e["logprob"] for e in a] == pytest.approx([e["logprob"] for e in b], abs=1e-3)


# ---- without a model ---------------------------------------------------------------------

def test_logprobs_are_a_log_softmax_of_the_row_with_the_top_first() -> None:
    row = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    reference = row - np.log(np.exp(row.astype(np.float64)).sum())
    chosen, ids, lps = token_logprobs(row, 2, 3)
    assert chosen == pytest.approx(reference[2])
    assert ids.tolist() == [1, 2, 0] and lps == pytest.approx(reference[[1, 2, 0]])
    assert token_logprobs(row, 0, 0)[1].size == 0


def test_an_entry_keeps_a_partial_utf8_tokens_bytes() -> None:
    pieces = {0: "é".encode()[:1], 1: b"a"}
    e = entry(np.array([0.0, 1.0], dtype=np.float32), 0, 1, pieces.__getitem__)
    assert e["bytes"] == [0xC3] and e["token"] == "\ufffd"
    assert e["top_logprobs"][0]["token"] == "a"


def test_entries_leave_with_their_text_and_not_inside_a_stop_string() -> None:
    text, aligner = TextAssembler(["STOP"]), Aligner()
    out = []
    for piece in [b"Hi", b" S", b"T", b"OP", b"!"]:
        aligner.add({"token": piece.decode()}, len(piece))
        emitted, stopped = text.feed(piece)
        out.append((emitted, [e["token"] for e in aligner.take(emitted)]))
        if stopped:
            break
    # " S" leaves with its " " (its "S" is held as a possible stop); "T" and "OP" lie
    # inside the stop string and never leave.
    assert out == [("Hi", ["Hi"]), (" ", [" S"]), ("", []), ("", [])]


def test_legacy_completions_shape_lists_the_chosen_token_among_the_top() -> None:
    entries = [{"token": "Hi", "logprob": -0.5,
                "top_logprobs": [{"token": "Hey", "logprob": -0.4}]},
               {"token": "!", "logprob": -0.1, "top_logprobs": []}]
    assert legacy_logprobs(entries, 3) == {
        "tokens": ["Hi", "!"], "token_logprobs": [-0.5, -0.1],
        "top_logprobs": [{"Hey": -0.4, "Hi": -0.5}, {"!": -0.1}], "text_offset": [3, 5]}


@pytest.mark.parametrize("kind", [GenerateRequest, ChatRequest])
def test_ollama_request_fields_parse_and_range_check(kind) -> None:
    req = kind.from_json({"model": "m", "logprobs": True, "top_logprobs": 20})
    assert (req.logprobs, req.top_logprobs) == (True, 20)
    for bad in (21, -1, "5", 1.5):
        with pytest.raises(InvalidRequest, match="invalid field 'top_logprobs'"):
            kind.from_json({"model": "m", "logprobs": True, "top_logprobs": bad})
    with pytest.raises(InvalidRequest, match="invalid field 'logprobs'"):
        kind.from_json({"model": "m", "logprobs": "yes"})


# ---- the engine ---------------------------------------------------------------------------

def test_engine_reports_logprobs_only_for_the_sequence_that_asked(model_file) -> None:
    """Two sequences in one batch: the asking one's entries are the log-softmax of the very
    rows its tokens were sampled from (kept as copies by keep_logits); the other's stream
    carries text alone."""
    with Engine(str(model_file), n_parallel=2, n_ctx_per_seq=256, prefix_cache=False) as eng:
        prompt = eng.tokenize(PROMPT)
        asked = Options(temperature=0, repeat_penalty=1.0, num_predict=8, logprobs=True,
                        top_logprobs=3)
        streams = [eng.submit(prompt, asked, keep_logits=8),
                   eng.submit(prompt, Options(temperature=0, num_predict=8))]
        (a_text, a_entries), (b_text, b_entries) = (_drain(s) for s in streams)
    assert b_text and b_entries == []
    check_entries(a_entries, a_text, 3, greedy=True)
    for e, token, logits in zip(a_entries, streams[0].tokens, streams[0].logits, strict=True):
        reference = logits - np.log(np.exp(logits.astype(np.float64)).sum())
        assert e["logprob"] == pytest.approx(reference[token], abs=1e-5)


def _drain(stream) -> tuple[str, list[dict]]:
    chunks = list(stream.chunks_with_logprobs(0))
    return "".join(t for t, _ in chunks), [e for _, es in chunks for e in es]


# ---- the Ollama face ---------------------------------------------------------------------

def test_ollama_generate_whole_and_streamed_logprobs_agree(api, client, worker) -> None:
    raw = client.post("/api/generate", json={"model": MODEL, "prompt": PROMPT, "stream": False,
                                             "options": GREEDY, "logprobs": True,
                                             "top_logprobs": 5}).get_json()
    check_entries(raw["logprobs"], raw["response"], 5, greedy=True)  # with bytes
    client = ollama_client(api)
    whole = client.generate(model=MODEL, prompt=PROMPT, options=GREEDY, logprobs=True,
                            top_logprobs=5)
    entries = plain(whole.logprobs)
    check_entries(entries, whole.response, 5, greedy=True)
    assert len(entries) == whole.eval_count
    same_tokens(entries, raw["logprobs"])
    parts = list(client.generate(model=MODEL, prompt=PROMPT, options=GREEDY, logprobs=True,
                                 top_logprobs=5, stream=True))
    for part in parts[:-1]:  # each chunk's entries spell that chunk's text
        assert "".join(e.token for e in part.logprobs) == part.response
    assert parts[-1].done and not parts[-1].logprobs
    same_tokens(plain(e for p in parts for e in p.logprobs or []), entries)


def test_ollama_chat_without_top_logprobs_has_only_the_chosen_tokens(api, worker) -> None:
    client = ollama_client(api)
    whole = client.chat(model=MODEL, messages=HI, options=GREEDY, logprobs=True)
    entries = plain(whole.logprobs)
    check_entries(entries, whole.message.content, 0, greedy=True)
    assert all(e["top_logprobs"] is None for e in entries)  # omitted, as Ollama's omitempty
    streamed = [e for p in client.chat(model=MODEL, messages=HI, options=GREEDY, logprobs=True,
                                       stream=True) for e in p.logprobs or []]
    same_tokens(plain(streamed), entries)
    assert client.chat(model=MODEL, messages=HI, options=GREEDY).logprobs is None


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_ollama_top_logprobs_over_20_is_a_400_naming_it(client, path) -> None:
    body = {"model": MODEL, "prompt": "x", "messages": HI, "logprobs": True, "top_logprobs": 21}
    res = client.post(path, json=body)
    assert res.status_code == 400 and "top_logprobs" in res.get_json()["error"]


# ---- the OpenAI face ---------------------------------------------------------------------

def test_openai_chat_logprobs_whole_and_streamed_agree(api, worker) -> None:
    ask = {"model": MODEL, "messages": HI, "temperature": 0, "max_tokens": 12,
           "logprobs": True, "top_logprobs": 3}
    whole = api.chat.completions.create(**ask)
    choice = whole.choices[0]
    assert choice.logprobs.refusal is None
    entries = plain(choice.logprobs.content)
    check_entries(entries, choice.message.content, 3, greedy=False)
    assert len(entries) == whole.usage.completion_tokens
    chunks = list(api.chat.completions.create(**ask, stream=True))
    streamed = [e for c in chunks for e in (c.choices[0].logprobs.content
                                           if c.choices[0].logprobs else [])]
    for c in chunks:
        if c.choices[0].logprobs:
            assert "".join(e.token for e in c.choices[0].logprobs.content) == \
                c.choices[0].delta.content
    same_tokens(plain(streamed), entries)


def test_openai_completions_legacy_logprobs_whole_and_streamed(api, worker) -> None:
    ask = {"model": MODEL, "prompt": PROMPT, "temperature": 0, "max_tokens": 12, "logprobs": 2}
    whole = api.completions.create(**ask)
    lp = whole.choices[0].logprobs
    assert "".join(lp.tokens) == whole.choices[0].text
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0 and top[token] == logprob and 1 <= len(top) <= 3
    chunks = [c.choices[0].logprobs for c in api.completions.create(**ask, stream=True)]
    chunks = [c for c in chunks if c is not None]
    assert [t for c in chunks for t in c.tokens] == lp.tokens
    assert [o for c in chunks for o in c.text_offset] == lp.text_offset


def test_a_sequence_with_logprobs_and_one_without_decode_together(api, worker) -> None:
    answers: dict[str, object] = {}
    start = threading.Barrier(2)

    def ask(name: str, **extra) -> None:
        start.wait()
        answers[name] = api.chat.completions.create(
            model=MODEL, messages=HI, temperature=0, max_tokens=24, **extra)

    threads = [threading.Thread(target=ask, args=("with",), kwargs={"logprobs": True,
                                                                    "top_logprobs": 2}),
               threading.Thread(target=ask, args=("without",))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    with_lp, without = answers["with"].choices[0], answers["without"].choices[0]
    check_entries(plain(with_lp.logprobs.content), with_lp.message.content, 2, greedy=False)
    assert without.logprobs is None and without.message.content


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/chat/completions", {"messages": HI, "top_logprobs": 2}, "top_logprobs"),
    ("/chat/completions", {"messages": HI, "logprobs": True, "top_logprobs": 21},
     "top_logprobs"),
    ("/chat/completions", {"messages": HI, "logprobs": 1}, "logprobs"),
    ("/completions", {"prompt": "x", "logprobs": 6}, "logprobs"),
])
def test_openai_bad_logprobs_are_400s_naming_the_field(api, path, body, param) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.post(path, body={"model": MODEL, **body}, cast_to=object)
    assert caught.value.status_code == 400 and caught.value.param == param
