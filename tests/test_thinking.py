"""Reasoning split out of a thinking model's answer: the streaming parser, and SmolLM2 made
a thinking model by a Modelfile TEMPLATE that opens `<think>` for it (as DeepSeek-R1's and
Qwen3's generation prompts do), through the official ollama and openai clients.

No small GGUF that thinks by itself ships in a package, so the real model is put inside its
reasoning by the template: what it writes is reasoning until it writes `</think>`, which a
135M model rarely does; the assertions hold whatever it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.http.openai.types import chat_request
from service.jobs.requests import ChatRequest
from service.models.store import ModelStore
from service.models.template import Template, render_chat
from service.models.thinking import Piece, ThinkingParser, prompt_opens
from tests.test_api_jobs import sse
from tests.test_capabilities import THINKING_TEMPLATE

THINKER = "smollm2-thinker:135m"
# THINKING_TEMPLATE (Qwen3's shape), but with thinking on it opens the block for the model,
# so SmolLM2's output starts inside its reasoning.
PREFILL_TEMPLATE = THINKING_TEMPLATE.split("{{ if and $.IsThinkSet")[0] + \
    "{{ if $.Think }}<think>\n{{ else }}<think>\n\n</think>\n\n{{ end }}"
HI = [{"role": "user", "content": "What is two plus two?"}]
OPTIONS = {"num_predict": 24, "temperature": 0, "seed": 1}


def split(chunks: list[str], *, inside: bool = False) -> tuple[str, str]:
    parser = ThinkingParser(started_inside=inside)
    pieces = [parser.feed(c) for c in chunks] + [parser.close()]
    return "".join(p.thinking for p in pieces), "".join(p.content for p in pieces)


TEXT = "  <think>\nI add them.\n</think>\n\nFour."


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(TEXT)])
def test_reasoning_and_answer_split_however_the_text_is_chunked(step):
    chunks = [TEXT[i:i + step] for i in range(0, len(TEXT), step)]
    assert split(chunks) == ("I add them.\n", "Four.")


def test_an_output_that_opens_no_tag_is_all_answer():
    assert split(["Four", ", of course."]) == ("", "Four, of course.")
    assert split(["<thi", "nking is hard"]) == ("", "<thinking is hard")


def test_a_half_written_opening_tag_at_the_end_is_answer_text():
    assert split(["<thi"]) == ("", "<thi")


def test_a_prompt_that_opened_the_block_starts_inside_it():
    assert split(["I add", " them.</thi", "nk>Four."], inside=True) == ("I add them.", "Four.")
    assert prompt_opens("<|im_start|>assistant\n<think>\n", "<think>")
    assert not prompt_opens("<|im_start|>assistant\n<think>\n\n</think>\n\n", "<think>")


def test_reasoning_that_never_closes_is_all_reasoning_and_held_text_comes_out():
    parser = ThinkingParser(started_inside=True)
    assert parser.feed("still thinking </th") == Piece(thinking="still thinking ")
    assert parser.close() == Piece(thinking="</th")
    assert parser.thinking == "still thinking </th"


def test_the_templates_own_tags_are_used():
    parser = ThinkingParser("<|begin_of_thought|>", "<|end_of_thought|>")
    pieces = [parser.feed("<|begin_of_thought|>hm<|end_of_thought|> yes"), parser.close()]
    assert ("".join(p.thinking for p in pieces), "".join(p.content for p in pieces)) == (
        "hm", "yes")


# ---- end to end, with SmolLM2 -------------------------------------------------------------

@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    store = ModelStore(tmp_path_factory.mktemp("models"))
    weights = store.import_file(model_file)
    store.create("smollm2:135m", weights)
    store.create(THINKER, weights, template=PREFILL_TEMPLATE,
                 parameters={"stop": ["<|im_end|>"]})
    return store.root


def test_a_thinking_model_thinks_by_default_and_the_reply_is_split(worker, local):
    assert "thinking" in local.show(THINKER).capabilities
    reply = local.chat(model=THINKER, messages=HI, options=OPTIONS)
    assert reply.message.thinking  # the template opened the block: the model reasons first
    for tag in ("<think>", "</think>"):
        assert tag not in reply.message.thinking and tag not in reply.message.content


def test_streamed_reasoning_comes_in_chunks_before_any_answer(worker, local):
    chunks = list(local.chat(model=THINKER, messages=HI, options=OPTIONS, stream=True))
    thinking = "".join(c.message.thinking or "" for c in chunks)
    assert thinking and "<think>" not in thinking
    first_answer = next((i for i, c in enumerate(chunks) if c.message.content), len(chunks))
    assert all(not c.message.thinking for c in chunks[first_answer:])
    assert chunks[-1].done and not chunks[-1].message.thinking  # not repeated at the end


def test_think_false_leaves_the_answer_whole_and_the_template_closes_the_block(worker, local):
    reply = local.chat(model=THINKER, messages=HI, options=OPTIONS, think=False)
    assert not reply.message.thinking and reply.message.content


def test_generate_gives_thinking_beside_the_response(worker, local):
    reply = local.generate(model=THINKER, prompt="What is two plus two?", options=OPTIONS)
    assert reply.thinking and "</think>" not in reply.response


def test_the_openai_face_gives_reasoning_content_whole_and_streamed(worker, api):
    whole = api.chat.completions.create(model=THINKER, messages=HI, max_tokens=24,
                                        temperature=0, seed=1)
    message = whole.choices[0].message
    assert message.model_extra.get("reasoning_content")
    assert "<think>" not in (message.content or "")
    stream = api.chat.completions.create(model=THINKER, messages=HI, max_tokens=24,
                                         temperature=0, seed=1, stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert reasoning and "<think>" not in reasoning


def test_native_events_carry_reasoning_and_done_repeats_it_whole(worker, client):
    res = client.post("/jobs", json={"kind": "chat", "model": THINKER, "messages": HI,
                                     "options": OPTIONS})
    assert res.status_code in (200, 201, 202), res.get_json()
    job = res.get_json()["id"]
    events = sse(client.get(f"/jobs/{job}/events").get_data(as_text=True))
    thinking = "".join(data["text"] for _, kind, data in events if kind == "thinking")
    done = next(data for _, kind, data in events if kind == "done")
    assert thinking and done["thinking"] == thinking


def test_an_earlier_turns_reasoning_reaches_the_template_on_both_faces():
    turns = HI + [{"role": "assistant", "content": "Four.", "thinking": "2+2=4"},
                  {"role": "user", "content": "And three plus three?"}]
    chat = ChatRequest.from_json({"model": THINKER, "messages": turns})
    prompt = render_chat(Template(PREFILL_TEMPLATE), chat.messages, think=True)
    assert "<|im_start|>assistant\n<think>2+2=4</think>Four.<|im_end|>" in prompt
    openai_turns = [*HI, {"role": "assistant", "content": "Four.", "reasoning_content": "2+2=4"}]
    parsed = chat_request({"model": THINKER, "messages": openai_turns})
    assert parsed.job.messages[1]["thinking"] == "2+2=4"


def test_a_reasoning_field_that_is_not_text_is_a_400_naming_it(client):
    bad = [*HI, {"role": "assistant", "content": "x", "thinking": 3}]
    res = client.post("/api/chat", json={"model": THINKER, "messages": bad})
    assert res.status_code == 400
    assert res.get_json()["error"] == "invalid field 'messages[1].thinking': expected a string"


def test_a_batch_lines_answer_is_split_as_a_live_answer_is(worker, api):
    """A batch's output file is built from the job record (its reply), not parsed again."""
    import io
    import json

    from tests.test_openai_batches import poll

    body = {"model": THINKER, "messages": HI, "max_tokens": 24, "temperature": 0, "seed": 1}
    line = {"custom_id": "t", "method": "POST", "url": "/v1/chat/completions", "body": body}
    file = api.files.create(file=("t.jsonl", io.BytesIO(json.dumps(line).encode())),
                            purpose="batch")
    batch = poll(api, api.batches.create(input_file_id=file.id, completion_window="24h",
                                         endpoint="/v1/chat/completions").id)
    [item] = [json.loads(x) for x in api.files.content(batch.output_file_id).text.splitlines()]
    message = item["response"]["body"]["choices"][0]["message"]
    live = api.chat.completions.create(**body).choices[0].message
    assert message["reasoning_content"] == live.reasoning_content and message["reasoning_content"]
    assert message["content"] == live.content and "<think>" not in message["content"]
