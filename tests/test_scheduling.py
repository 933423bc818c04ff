"""The engine's order of work, with SmolLM2: requests on their way are prefilled together,
and interactive requests go before batch lines (a batch sequence gives up its slot and
resumes later, losing and repeating no token)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.test_engine import MODEL, chat
from workers.arrivals import Arrivals
from workers.engine import Engine, Options

GREEDY = Options(temperature=0.0, num_predict=8)


@pytest.fixture(scope="module")
def arrivals() -> Arrivals:
    return Arrivals()


@pytest.fixture(scope="module")
def gathering(arrivals: Arrivals):
    with Engine(MODEL, n_parallel=4, n_ctx_per_seq=512, prefix_cache=False,
                arriving=arrivals.pending) as engine:
        yield engine


def two_apart(engine: Engine, arrivals: Arrivals, *, announced: bool) -> list:
    """Submit two prompts a few ms apart to an idle engine (well inside its 30 ms gather when
    announced; 20 ms, more than a step, when not); the second is announced as on its way
    (received by the worker, not yet submitted) before the first is submitted, or not."""
    if announced:
        arrivals.arrived("second")
    first = engine.submit(chat(engine, "Name a fruit."), GREEDY)

    def later() -> None:
        time.sleep(0.005 if announced else 0.02)
        arrivals.settled("second")
        streams.append(engine.submit(chat(engine, "Name a colour."), GREEDY))

    streams = [first]
    thread = threading.Thread(target=later)
    thread.start()
    thread.join()
    return [s.result() for s in streams]


def test_requests_on_their_way_to_an_idle_engine_share_its_first_prefill_step(
        gathering, arrivals):
    a, b = two_apart(gathering, arrivals, announced=True)
    # Both prompts were evaluated in the same decode steps: the same prompt time, to the ns.
    assert a.prompt_eval_duration == b.prompt_eval_duration > 0


def test_a_lone_request_is_not_held(gathering, arrivals):
    a, b = two_apart(gathering, arrivals, announced=False)
    assert a.prompt_eval_duration != b.prompt_eval_duration  # the first went ahead alone
    assert len(arrivals) == 0


def test_pending_counts_received_and_expected_jobs_once():
    from workers.arrivals import EXPECTED_S

    looks: list[int] = []

    def queued() -> list[str]:
        looks.append(1)
        return ["b", "c"]

    arrivals = Arrivals(expected=queued)
    arrivals.arrived("a")
    arrivals.arrived("b")
    assert arrivals.pending() == 3
    arrivals.settled("a")
    arrivals.settled("a")
    arrivals.settled("c")  # claimed and submitted since the database was asked
    assert arrivals.pending() == 1
    assert len(looks) == 1  # asked once for the looks of one gather

    def broken():
        raise OSError("database away")

    arrivals.expected = broken
    time.sleep(EXPECTED_S)
    assert arrivals.pending() == 1  # what was received still counts
    arrivals.arrived("c")  # taken again after a loss: it counts again
    assert arrivals.pending() == 2


# ---- interactive first -------------------------------------------------------------------

LONG = Options(temperature=0.0, num_predict=48)


@pytest.fixture(scope="module")
def two_slots():
    with Engine(MODEL, n_parallel=2, n_ctx_per_seq=512) as engine:
        yield engine


def streamed(stream) -> str:
    return "".join(stream)


def test_an_interactive_request_takes_a_batch_sequences_slot_and_the_batch_loses_nothing(
        two_slots):
    engine = two_slots
    prompts = ["Write a long story about a cat.", "Write a long story about a dog."]
    alone = [engine.submit(chat(engine, p), LONG).result() for p in prompts]  # not batch
    before, held = engine.pauses, engine.held_steps
    lines = [engine.submit(chat(engine, p), LONG, batch=True) for p in prompts]
    texts: list[str] = ["", ""]
    ended: list[float] = [0.0, 0.0]

    def read(i: int) -> None:
        texts[i] = streamed(lines[i])
        ended[i] = time.perf_counter()

    readers = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for reader in readers:
        reader.start()
    while not all(len(s.tokens) >= 4 for s in lines):  # both lines hold a slot, generating
        time.sleep(0.005)
    asked = time.perf_counter()
    chat_stream = engine.submit(chat(engine, "Say hi."), Options(temperature=0.0, num_predict=4))
    answer = chat_stream.result()
    answered = time.perf_counter()
    for reader in readers:
        reader.join()
    results = [s.completion for s in lines]
    assert engine.pauses > before  # a batch sequence gave its slot up
    # The chat's prompt was evaluated in steps of its own, the batch lines sitting them out.
    assert engine.held_steps > held
    assert answer.eval_count > 0
    # The chat was answered while both lines still ran: it did not wait for one to end.
    assert answered < min(ended)
    print(f"\nchat first token {1000 * (chat_stream.first_token_time - asked):.0f} ms after "
          f"it was asked, both slots held by batch lines")
    for line, text, result, solo in zip(lines, texts, results, alone, strict=True):
        assert result.done_reason == "length" and result.eval_count == LONG.num_predict
        assert len(line.tokens) == LONG.num_predict  # no token lost, none repeated
        assert text == result.text  # what was streamed is the whole answer, once
        assert engine.detokenize(line.tokens).startswith(result.text[:16])
        # Greedy, paused and resumed, it says what it said uninterrupted (batched numerics
        # may part late; the opening must agree).
        assert result.text[:40] == solo.text[:40]


def test_a_batch_line_sits_out_the_steps_that_prefill_a_chat_and_loses_nothing(two_slots):
    engine = two_slots
    prompt = "Write a long story about a horse."
    solo = engine.submit(chat(engine, prompt), LONG).result()
    line = engine.submit(chat(engine, prompt), LONG, batch=True)
    while len(line.tokens) < 4:  # generating, with the other slot free: nothing to pause
        time.sleep(0.005)
    pauses, held = engine.pauses, engine.held_steps
    answer = engine.submit(chat(engine, "Say hi."), Options(temperature=0.0, num_predict=4))
    assert answer.result().eval_count > 0
    result = line.result()
    assert engine.pauses == pauses and engine.held_steps > held
    assert result.eval_count == LONG.num_predict == len(line.tokens)
    # Held a step, it goes on where it was (batched numerics may part late: 33 characters in
    # one suite run, so the opening alone must agree).
    assert result.text[:24] == solo.text[:24]


def test_batch_lines_sit_out_a_chats_steps_until_it_shows_text_and_lose_nothing(two_slots):
    """A chat whose first tokens are no text yet (an emoji's bytes, say) decodes them in
    steps of its own: one for its prompt and one for each token until its text shows."""
    engine = two_slots
    prompt = "Write a long story about a horse."
    solo = engine.submit(chat(engine, prompt), LONG).result()
    line = engine.submit(chat(engine, prompt), LONG, batch=True)
    while len(line.tokens) < 4:
        time.sleep(0.005)
    held = engine.held_steps
    greet = chat(engine, "Greet me with an emoji.")
    answer = engine.submit(greet, Options(temperature=0.0, num_predict=8))
    assert answer.result().eval_count > 0
    pieces = [engine._vocab.piece(token) for token in answer.tokens]
    shown = next(n for n in range(1, len(pieces) + 1) if _text(b"".join(pieces[:n])))
    assert shown == 3  # greedy, this answer opens with an emoji of three byte tokens
    result = line.result()
    assert engine.held_steps - held >= shown  # the prompt's step, then shown - 1 tokens'
    assert result.eval_count == LONG.num_predict == len(line.tokens)
    assert result.text[:24] == solo.text[:24]


def _text(data: bytes) -> str:
    """The text of complete UTF-8 characters in data ('' while a character is cut)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return ""


def test_a_chats_prompt_stays_cached_while_batch_lines_take_every_id(two_slots):
    """The last interactive prompt's KV is kept under an id of its own: batch lines taking
    both ids, and with them the caches those ids held, do not cost the chat its prompt's
    cache (without it, only the template's opening was found again), and the answer from the
    kept cells is the answer from scratch."""
    engine = two_slots
    few = Options(temperature=0.0, num_predict=8)
    prompt = chat(engine, "Name three colours of the rainbow, please.")
    first = engine.submit(prompt, few).result()
    lines = [engine.submit(chat(engine, f"Write about the number {n}."), few, batch=True)
             for n in range(4)]
    assert all(line.result().eval_count for line in lines)
    again = engine.submit(prompt, few).result()
    assert again.cached_tokens == len(prompt) - 1  # all but the token that gives the logits
    assert again.text == first.text


def test_a_paused_sequence_that_is_cancelled_ends_and_frees_its_sampler(two_slots):
    engine = two_slots
    lines = [engine.submit(chat(engine, f"Count to {n}00."), LONG, batch=True) for n in (1, 2)]
    while not all(len(s.tokens) >= 2 for s in lines):
        time.sleep(0.005)
    before = engine.pauses
    chat_stream = engine.submit(chat(engine, "Write a poem."), LONG)
    while engine.pauses == before:
        time.sleep(0.002)
    for line in lines:
        line.cancel()
    chat_stream.result()
    results = [line.result() for line in lines]
    assert {r.done_reason for r in results} == {"cancel"}
    assert engine.active() == 0


def test_admission_order_and_victims():
    from types import SimpleNamespace as NS

    from workers.scheduler import admission_order, victims

    a, b, c = NS(batch=True, tokens=[1]), NS(batch=False, tokens=[2]), NS(batch=True, tokens=[3])
    paused = NS(batch=True, tokens=[4])
    assert admission_order([a, b, c], [paused]) == [b, paused, a, c]
    running = [NS(batch=True, n_past=50, images=[]), NS(batch=False, n_past=1, images=[]),
               NS(batch=True, n_past=9, images=[]), NS(batch=True, n_past=2, images=["img"])]
    assert victims(running, 1) == [running[2]]
    assert victims(running, 5) == [running[2], running[0]]  # never one with images
    assert victims(running, 0) == []


# ---- through the queue: a chat while a batch fills every slot ----------------------------

def test_a_chat_is_answered_while_a_batch_holds_every_slot_and_the_batch_completes(
        app, client, settings):
    """With 2 slots and 8 long batch lines queued, a streamed chat is still received (the
    worker stops taking batch lines at 6, two running and four ready: workers/gates) and
    answered while both lines run (the engine pauses one: workers/scheduler); then every line
    completes."""
    import dataclasses
    import json

    from tests.conftest import running_worker
    from tests.test_batches import jsonl, post_batch, wait_for
    from tests.waiting import wait_until

    lines = [{"prompt": f"Write a long story about the number {n}.",
              "options": {"num_predict": 96, "temperature": 0}} for n in range(8)]
    with running_worker(dataclasses.replace(settings, num_parallel=2)) as runtime:
        batch_id = post_batch(client, jsonl(lines)).get_json()["id"]
        wait_until(lambda: runtime.pool.loaded(), 120, ready=lambda loaded: loaded and
                   loaded[0].engine.active() == runtime.gate.limit == 6,
                   message="two batch lines decoding and four waiting for a slot")
        [loaded] = runtime.pool.loaded()
        assert runtime.gate.held == 6 and runtime.gate.paused
        body = {"model": "smollm2:135m", "stream": True,
                "messages": [{"role": "user", "content": "Say hi."}],
                "options": {"num_predict": 4, "temperature": 0}}
        answer = [json.loads(x) for x in
                  client.post("/api/chat", json=body).get_data(as_text=True).splitlines()]
        during = client.get(f"/batches/{batch_id}").get_json()
        assert answer[-1]["done"] and answer[-1]["eval_count"] > 0
        assert during["counts"]["succeeded"] < len(lines) and during["counts"]["running"] >= 1
        assert loaded.engine.pauses >= 1  # the chat took a batch line's slot
        done = wait_for(client, batch_id, timeout=600)
        assert done["status"] == "completed"
        assert done["counts"]["succeeded"] == len(lines), done["counts"]
        assert runtime.gate.held == 0 and not runtime.gate.paused


def test_the_batch_gate_stops_taking_lines_at_its_limit_and_restarts_when_one_ends():
    from workers.gates import Gate

    calls: list[str] = []
    failing = {"resume": True}

    def resume() -> None:
        if failing["resume"]:
            failing["resume"] = False
            raise OSError("redis away")
        calls.append("resume")

    gate = Gate(2, lambda: calls.append("pause"), resume)
    assert gate.try_enter() and calls == []
    assert gate.try_enter() and calls == ["pause"]  # full: stop taking batch messages
    assert not gate.try_enter()  # one that slipped in is given back, not held
    gate.leave()  # room, but the refused job is not back in its queue yet: no restart
    assert gate.paused and calls == ["pause"]
    gate.returned()  # it is back; the restart fails (Redis away): stopped, tried again
    assert gate.paused and calls == ["pause"] and gate.returning == 0
    gate.check()
    assert not gate.paused and calls == ["pause", "resume"] and gate.held == 1
    gate.check(reassert=True)  # once a second: the state is sent again, whatever it is
    assert calls == ["pause", "resume", "resume"]
