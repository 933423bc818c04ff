"""Continuous batching over one loaded GGUF model (llama-cpp-python low-level API).

One daemon thread owns the llama.cpp context (a context is not thread-safe) and runs llama-server's
loop: admit waiting requests into free sequence ids, put one token per generating sequence in the
batch, fill the rest of n_batch with prompt chunks, decode once, sample each output with the
sequence's own C sampler chain. Other threads only tokenize, submit and read their `Stream`.

Limits: the KV cache is one pool of n_parallel x n_ctx_per_seq cells that every sequence draws
from (kv_unified), so a sequence is not held to a fixed slice: its context is its num_ctx, up to
the pool and the model's training context. A waiting request is admitted once the pool has room
for its prompt besides what the running sequences hold (first come, first served); a pool that
still runs out mid-step is relieved as `_relieve_kv_pressure` says. A prompt that does not fit
its context (len >= the limit) makes `submit` raise ValueError; the caller decides whether to
truncate, since only it knows which part of a chat may be dropped.

Images: with a vision projector (`mmproj_path`, workers.vision) a prompt's images are spans of
embedding rows; each is decoded in a decode of its own, on the same thread, when the
sequence's prefill reaches it, and the text after it goes on in the shared batch. The KV from
a sequence's first image on is never kept as a prefix cache.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

import llama_cpp
import numpy as np

from workers import llama_loader, logprobs, scheduler
from workers.cores import usable_cores
from workers.llama_batch import EmbeddingBatch, TokenBatch
from workers.llama_loader import ModelLoadError, Vocab
from workers.prefix_cache import PrefixCache
from workers.sampling import GrammarError, Options, build_sampler, free_sampler
from workers.sequence import Request, Sequence
from workers.stream import Completion, EngineError, Stream
from workers.vision import ImageSpan, Projector

__all__ = [
    "Completion",
    "Engine",
    "EngineError",
    "GrammarError",
    "ModelLoadError",
    "Options",
    "Stream",
]

log = logging.getLogger(__name__)


# How long an idle engine holds its first step for requests already in the worker (claimed,
# not yet submitted): they are a few ms apart, and one prefill step costs tens of ms.
GATHER_S = 0.03
GATHER_LOOK_S = 0.002
# Batch sequences sit out the steps of an interactive sequence until it shows its first text,
# for this many tokens at most (see Engine._holds_batch).
HOLD_UNTIL_TEXT = 8


class Engine:
    """Serve many sequences from one model with continuous batching on one decode thread."""

    def __init__(
        self,
        model_path: str,
        *,
        n_parallel: int = 4,
        n_ctx_per_seq: int = 2048,
        n_batch: int = 512,
        n_threads: int | None = None,
        lora_path: str | None = None,
        prefix_cache: bool = True,
        arriving: Callable[[], int] | None = None,
        mmproj_path: str | None = None,
        n_gpu_layers: int = 0,
    ) -> None:
        if not 1 <= n_parallel <= llama_cpp.llama_max_parallel_sequences():
            raise ValueError(f"n_parallel must be 1..{llama_cpp.llama_max_parallel_sequences()}")
        if n_ctx_per_seq < 2:
            raise ValueError("n_ctx_per_seq must be at least 2")
        self.model_path = model_path
        self.n_gpu_layers = n_gpu_layers  # layers llama.cpp was asked to put on a GPU
        self.n_parallel = n_parallel
        # One more id, if llama.cpp allows it, for the kept interactive prompt (_keep_interactive)
        self._n_kept = int(n_parallel < llama_cpp.llama_max_parallel_sequences())
        self.n_threads = n_threads or usable_cores()
        self._threads_next = self.n_threads  # set_threads: applied between two steps
        self.n_ctx_per_seq = n_ctx_per_seq
        self.n_batch = max(n_batch, n_parallel)  # every generating sequence needs a batch row
        self.prefix_cache = prefix_cache
        self._arriving = arriving or (lambda: 0)  # requests on their way (workers/arrivals)
        self._model = None
        self._ctx = None
        self.vision: Projector | None = None  # set with an mmproj: the model sees images
        llama_loader.init_backend()
        self._model = llama_loader.load_model(model_path, n_gpu_layers=n_gpu_layers)
        try:
            self._ctx = llama_loader.new_context(
                self._model,
                n_seq=n_parallel,
                n_ctx_per_seq=n_ctx_per_seq,
                n_batch=self.n_batch,
                n_threads=self.n_threads,
                n_kept=self._n_kept,
            )
            if lora_path:
                llama_loader.apply_lora(self._model, self._ctx, lora_path)
            if mmproj_path:
                self.vision = Projector(mmproj_path, self._model, self.n_threads,
                                        use_gpu=n_gpu_layers > 0)
            self._describe_model()
        except BaseException:
            self._free()
            raise
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)  # the shared pool's cells
        trained = llama_cpp.llama_model_n_ctx_train(self._model)
        self.max_ctx = min(self.n_ctx, trained) if trained > 0 else self.n_ctx
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = TokenBatch(self.n_batch)
        self._image_batch = (EmbeddingBatch(self.n_batch, self.vision.n_embd)
                             if self.vision else None)
        self._slots: list[Sequence | None] = [None] * n_parallel
        recurrent = llama_cpp.llama_model_is_recurrent(self._model)
        recurrent = recurrent or llama_cpp.llama_model_is_hybrid(self._model)
        self._prefix = PrefixCache(n_parallel, enabled=prefix_cache, can_copy=not recurrent)
        # The last interactive prompt's KV (and answer), kept under an id that never decodes
        # (see _keep_interactive).
        self._kept_id = n_parallel
        self._kept: list[int] = []
        self._ticket = itertools.count(1)
        self._n_busy = 0
        self._waiting: deque[Request] = deque()
        self._paused: deque[Sequence] = deque()  # batch sequences that gave up their ids
        self.pauses = 0  # batch sequences paused for interactive work, since start
        self.held_steps = 0  # steps that left batch sequences out for an interactive prefill
        self._cond = threading.Condition()
        self._closing = False
        self._failure: str | None = None
        self._thread = threading.Thread(target=self._run, name="corral-engine", daemon=True)
        self._thread.start()

    def _describe_model(self) -> None:
        """Fill the read-only facts the service shows: metadata, template, special tokens, size."""
        self._vocab = Vocab(self._model)
        self.metadata = llama_loader.read_metadata(self._model)
        self.chat_template = llama_loader.chat_template(self._model)
        self.bos_id = llama_cpp.llama_vocab_bos(self._vocab.ptr)  # -1 when the model has none
        self.bos_token = self._vocab.text_of(self.bos_id)
        self.eos_token = self._vocab.text_of(llama_cpp.llama_vocab_eos(self._vocab.ptr))
        # Fill-in-the-middle prefix, suffix and middle token texts, or None (llama-server's
        # /infill layout: <pre>prefix<suf>suffix<mid>, the model writes the middle)
        fim = [f(self._vocab.ptr) for f in (llama_cpp.llama_vocab_fim_pre,
                                            llama_cpp.llama_vocab_fim_suf,
                                            llama_cpp.llama_vocab_fim_mid)]
        self.fim_tokens = tuple(map(self._vocab.text_of, fim)) if min(fim) >= 0 else None
        n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        kv = llama_loader.kv_cache_bytes(self._model, self.metadata, n_ctx)
        self.size_bytes = os.path.getsize(self.model_path) + kv

    # ---- any thread ----

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Return text's token ids (thread-safe: reads the vocabulary only)."""
        self._check_open()
        return self._vocab.tokenize(text, add_special, parse_special)

    def detokenize(self, tokens: list[int]) -> str:
        """Return the text of tokens, special tokens omitted."""
        self._check_open()
        return self._vocab.detokenize(tokens)

    def submit(
        self, tokens: list[int], options: Options | None = None, *, keep_logits: int = 0,
        batch: bool = False,
        images: list[ImageSpan] | None = None, priority: int = 0,
    ) -> Stream:
        """Queue a sequence and return its stream at once; it joins at the next decode step.

        batch=True marks a batch line: interactive requests go first, and one arriving while
        every id is busy takes a batch sequence's id, which resumes later (workers/scheduler).

        keep_logits=N copies the first N next-token logits rows onto `Stream.logits` (for tests).
        images are the spans of tokens whose rows are image embeddings (Projector.tokenize).
        Raises ValueError for an empty prompt, unknown token ids, a prompt that leaves no room
        in the sequence's context, images out of place, or (GrammarError) an output grammar
        llama.cpp cannot parse.
        """
        limit = self.context_limit(options)
        # The limit the sequence really has, so "the whole context" (repeat_last_n -1) is it,
        # not a num_ctx the slot never had (a penalty window of 2**31 tokens).
        options = dataclasses.replace(options or Options(), num_ctx=limit)
        if not tokens:
            raise ValueError("the prompt has no tokens")
        if min(tokens) < 0 or max(tokens) >= self._vocab.n_tokens:
            raise ValueError(f"token ids must be in 0..{self._vocab.n_tokens - 1}")
        self._check_images(images or [], len(tokens))
        if len(tokens) >= limit:
            raise ValueError(
                f"the prompt is {len(tokens)} tokens but this sequence's context holds {limit} "
                f"(num_ctx, at most {self.max_ctx} here: the KV pool and the model's training "
                "context); shorten the prompt or raise num_ctx"
            )
        # Built here, not on the decode thread: a bad grammar fails this call, and the chain's
        # set-up (parsing a grammar, feeding the prompt to the penalties) never delays a step.
        self._check_open()  # the vocabulary is freed with the model
        sampler = build_sampler(self._vocab.ptr, self._vocab.n_tokens, options, tokens)
        request = Request(list(tokens), options, Stream(keep_logits), limit, sampler, batch,
                          priority, list(images or []))
        with self._cond:
            try:
                self._check_open()
            except EngineError:
                free_sampler(sampler)
                raise
            self._waiting.append(request)
            self._cond.notify()
        return request.stream

    def _check_images(self, images: list[ImageSpan], n_prompt: int) -> None:
        """Images must lie inside the prompt in order, n_embd wide, with text after the last
        (whose logits give the first token; an image's rows give none)."""
        if not images:
            return
        if self.vision is None:
            raise ValueError("this model has no vision projector, so it takes no images")
        end = 0
        for span in images:
            if span.start < end or span.embd.ndim != 2 or span.embd.shape[1] != self.vision.n_embd:
                raise ValueError(f"images must be in prompt order, {self.vision.n_embd} wide")
            end = span.end
        if end >= n_prompt:
            raise ValueError("the prompt must not end with an image: text follows it")

    def context_limit(self, options: Options | None = None) -> int:
        """The tokens one sequence may hold with these options: its num_ctx (n_ctx_per_seq when
        unset), at most the pool and the model's training context (max_ctx)."""
        num_ctx = options.num_ctx if options is not None else 0
        return min(num_ctx if num_ctx > 0 else self.n_ctx_per_seq, self.max_ctx)

    def active(self) -> int:
        """Return the number of sequences admitted, paused or waiting."""
        return self._n_busy + len(self._waiting) + len(self._paused)

    def close(self) -> None:
        """Stop the decode thread, cancel every stream, free the context and model; idempotent."""
        with self._cond:
            already = self._closing
            self._closing = True
            self._cond.notify_all()
        if already:
            return
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._free()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closing:
            raise EngineError("the engine is closed")
        if self._failure:
            raise EngineError(self._failure)

    def _free(self) -> None:
        """Free the context and projector before the model they belong to (LoRA adapters go
        with the model)."""
        if self.vision:
            self.vision.close()
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    # ---- decode thread ----

    def _run(self) -> None:
        """Loop until close(); on an unexpected error fail every stream instead of hanging it."""
        error = None
        try:
            while self._wait_and_admit():
                self._apply_threads()
                self._step()
        except Exception as exc:
            log.exception("engine decode loop failed")
            error = f"engine decode loop failed: {exc!r}"
            with self._cond:
                self._failure = error
        self._drain(error)

    def set_threads(self, n_threads: int) -> None:
        """Decode with `n_threads` from the next step on (the worker's share of its host
        changed, workers/cores); the decode thread applies it between two steps."""
        self._threads_next = max(1, n_threads)

    def _apply_threads(self) -> None:
        if self._threads_next != self.n_threads:
            self.n_threads = self._threads_next
            llama_cpp.llama_set_n_threads(self._ctx, self.n_threads, self.n_threads)

    def _wait_and_admit(self) -> bool:
        """Block while there is nothing to do; admit waiting requests into free sequence ids.

        Starting from idle, wait up to GATHER_S while requests are still on their way (see
        workers/arrivals) and slots are free for them, so they share the first prefill step.
        """
        with self._cond:
            while (not self._closing and not self._waiting and not self._paused
                   and self._n_busy == 0):
                self._cond.wait()
            if self._n_busy == 0:
                self._gather()
            if self._closing:
                return False
            admitted = self._take_waiting()
        for item in admitted:
            if isinstance(item, Sequence):
                self._resume(item)
            else:
                self._admit(item)
        return True

    def _gather(self) -> None:
        """Wait (holding the condition's lock, released while waiting) for the requests on
        their way, up to GATHER_S; each submit wakes this, and a job that ends without one
        is seen at the next look (every GATHER_LOOK_S).

        Only interactive requests fill the first step: a batch line that came first would
        take the only free id and its first token before the chats received with it (a
        worker takes several messages at once) reached the engine."""
        deadline = time.monotonic() + GATHER_S
        while (not self._closing and self._arriving() > 0
               and sum(1 for r in self._waiting if not r.batch) < self.n_parallel):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(min(left, GATHER_LOOK_S))

    def _take_waiting(self) -> list[Request | Sequence]:
        """Take work for the free ids in scheduler order (interactive, paused, batch) while
        the pool has room for it, first pausing batch sequences whose ids interactive
        requests need; cancelled waiting and paused work ends here."""
        for request in [r for r in self._waiting if r.stream.cancelled]:
            self._waiting.remove(request)
            request.drop(Completion("cancel", 0, 0, 0, 0, ""))
        for seq in [s for s in self._paused if s.stream.cancelled]:
            self._paused.remove(seq)
            self._complete(seq, "cancel")
        wanted = sum(1 for r in self._waiting if not r.batch) - (self.n_parallel - self._n_busy)
        for seq in scheduler.victims(self._active(), wanted):
            self._pause(seq)
        free = self.n_parallel - self._n_busy
        room = self.n_ctx - sum(len(s.tokens) for s in self._slots if s is not None)
        taken: list[Request | Sequence] = []
        for item in scheduler.admission_order(self._waiting, self._paused):
            if len(taken) == free:
                break
            need = len(item.tokens) + 1  # its tokens and a next one
            if need > room and (taken or self._n_busy):
                break  # it waits for running sequences to end; nothing overtakes it
            room -= need
            taken.append(item)
        for item in taken:
            (self._paused if isinstance(item, Sequence) else self._waiting).remove(item)
        return taken

    def _pause(self, seq: Sequence) -> None:
        """Take a batch sequence off its id for interactive work; its KV stays as that id's
        prefix cache, so resuming on it (if no one took its cells) re-evaluates nothing."""
        self._release(seq, keep_cache=True)
        seq.pauses += 1
        self.pauses += 1
        self._paused.append(seq)

    def _resume(self, seq: Sequence) -> None:
        """Put a paused sequence back on the free id that kept most of its KV."""
        seq_id, keep = self._place(seq.resume_tokens())
        seq.resume(seq_id, keep)
        seq.order = next(self._ticket)
        self._slots[seq_id] = seq
        self._n_busy += 1

    def _admit(self, request: Request) -> None:
        """Give request the free id whose cached KV shares the longest prefix with it."""
        seq_id, keep = self._place(request.shareable())
        self._slots[seq_id] = Sequence(seq_id, request, keep, next(self._ticket))
        self._n_busy += 1

    def _place(self, tokens: list[int]) -> tuple[int, int]:
        """Pick a free id for tokens and set its KV to their longest cached prefix; return
        (id, tokens already in its KV). See workers.prefix_cache for the choice."""
        free = [i for i, s in enumerate(self._slots) if s is None]
        busy = {s.seq_id: s.cacheable(s.n_past) for s in self._slots if s is not None}
        if self._kept:
            busy[self._kept_id] = self._kept  # a source to copy from, never an id to take
        plan = self._prefix.plan(tokens, free, busy)
        seq_id, keep = plan.seq_id, plan.keep
        held = len(self._prefix.tokens[seq_id])
        self._prefix.taken(seq_id)
        if plan.source != seq_id:  # share the source's cells (kv_unified: no data is copied)
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._memory, plan.source, seq_id, 0, keep)
        elif held > keep and not llama_cpp.llama_memory_seq_rm(self._memory, seq_id, keep, -1):
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)  # always succeeds
            keep = 0
        return seq_id, keep

    def _step(self) -> None:
        """Run one decode over every active sequence and sample the outputs."""
        for seq in self._active():
            if seq.stream.cancelled:
                self._finish(seq, "cancel")
        self._prefill_images()
        prefill_cap = self.n_batch
        while active := self._active():
            n_gen = sum(1 for s in active if not s.prefilling)
            plan = self._fill_batch(active, min(self.n_batch - n_gen, prefill_cap))
            started = time.perf_counter_ns()
            rc = self._batch.decode(self._ctx) if plan else 1
            if rc == 0:
                self._advance(plan, time.perf_counter_ns() - started)
                return
            if rc != 1:
                self._fail([s for s, _, _ in plan], f"llama_decode returned {rc}")
                return
            prefill_cap = self._relieve_kv_pressure(active, prefill_cap, self._batch.n - n_gen)

    def _prefill_images(self) -> None:
        """Decode the images that come next in prefilling prompts into their sequences' KV,
        each in a decode of its own (a batch holds tokens or embeddings, not both), so the
        step's token batch then goes on with the text after them."""
        for seq in self._active():
            while seq.prefilling and (span := seq.image_at(seq.n_past)) is not None:
                if not self._decode_image(seq, span):
                    break

    def _decode_image(self, seq: Sequence, span: ImageSpan) -> bool:
        """Decode one image's rows into seq's KV; False if seq ended instead. A pool with no
        room is relieved as for text (_relieve_kv_pressure) and the image tried once more."""
        for attempt in range(2):
            started = time.perf_counter_ns()
            rc = self._image_batch.decode(self._ctx, seq.seq_id, span.embd, seq.n_past,
                                          non_causal=span.non_causal)
            if rc == 0:
                seq.prompt_ns += time.perf_counter_ns() - started
                seq.n_past = span.end
                return True
            # pieces decoded before the one that failed
            llama_cpp.llama_memory_seq_rm(self._memory, seq.seq_id, seq.n_past, -1)
            if rc != 1 or attempt:
                break
            self._relieve_kv_pressure(self._active(), self.n_batch, 0)
            if self._slots[seq.seq_id] is not seq:
                return False  # it was the one ended to make room
        self._fail([seq], f"llama_decode of an image returned {rc}")
        return False

    def _active(self) -> list[Sequence]:
        """Active sequences in admission order: prompt chunks go first come, first served."""
        return sorted((s for s in self._slots if s is not None), key=lambda s: s.order)

    def _fill_batch(self, active: list[Sequence], budget: int) -> list[tuple[Sequence, int, int]]:
        """Fill the batch: one token per generating sequence, then prompt chunks up to budget.

        While an interactive prompt is being prefilled, and until it shows its first text,
        batch sequences sit those steps out (they keep their KV and their place, and lose
        nothing): a step of a few prompt tokens is short, one with eight or twelve batch
        lines decoding beside it is not, and the chat's first token waits for the whole
        step. Measured on 2 cores with a batch of 16-token lines on every slot, a chat's
        first token took 225 ms against 49 idle.

        Returns (sequence, tokens added, batch index of its logits row or -1) per sequence.
        """
        if self._holds_batch(active):
            self.held_steps += 1
            active = [seq for seq in active if not seq.batch]
        self._batch.clear()
        plan = []
        for seq in active:
            if not seq.prefilling:
                index = self._batch.add(seq.seq_id, seq.tokens[-1:], seq.n_past, True)
                plan.append((seq, 1, index))
        for seq in active:
            if seq.prefilling and budget > 0:
                k = min(budget, seq.text_end() - seq.n_past)
                if k <= 0:
                    continue  # an image is next (_prefill_images)
                last = seq.n_past + k == seq.n_eval and seq.sample_after_eval
                chunk = seq.tokens[seq.n_past : seq.n_past + k]
                index = self._batch.add(seq.seq_id, chunk, seq.n_past, last)
                plan.append((seq, k, index if last else -1))
                budget -= k
        return plan

    @staticmethod
    def _holds_batch(active: list[Sequence]) -> bool:
        """Whether this step is an interactive sequence's alone: one has prompt text to
        evaluate, or has not yet shown any text (HOLD_UNTIL_TEXT tokens at most), and batch
        sequences would otherwise share the step.

        A first token is often no text: SmolLM2 greets with an emoji of three byte tokens,
        and a chat's first text took the prefill and two steps beside eight batch lines
        (~40 ms each on 2 cores) against ~8 ms alone.
        """
        return (any(seq.batch for seq in active)
                and any(not seq.batch and Engine._before_first_text(seq) for seq in active))

    @staticmethod
    def _before_first_text(seq: Sequence) -> bool:
        """Whether seq has prompt text left to evaluate, or has shown no text yet (for
        HOLD_UNTIL_TEXT tokens at most)."""
        if seq.prefilling:
            return seq.text_end() > seq.n_past
        return not seq.pieces and seq.n_generated < HOLD_UNTIL_TEXT

    def _relieve_kv_pressure(self, active: list[Sequence], cap: int, n_prefill: int) -> int:
        """Make room after llama_decode found no KV slot; return the new prompt-chunk cap.

        In order: drop idle ids' prefix caches and the kept interactive prompt, halve this
        step's prompt tokens, then end the sequence holding the most KV with "length" (which
        frees room, so the cap resets).
        """
        free = [i for i, s in enumerate(self._slots) if s is None]
        idle = self._prefix.idle_with_cache(free)
        for seq_id in idle:
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            self._prefix.released(seq_id, [])
        if self._drop_kept() or idle:
            return cap
        if n_prefill > 0:
            return n_prefill // 2
        self._finish(max(active, key=lambda s: s.n_past), "length")
        return self.n_batch

    def _advance(self, plan: list[tuple[Sequence, int, int]], decode_ns: int) -> None:
        """Account a successful decode and sample every sequence that got a logits row."""
        done_ns = time.perf_counter_ns()
        for seq, k, index in plan:
            if seq.prefilling:
                seq.prompt_ns += decode_ns
            seq.n_past += k
            if index < 0:
                continue
            if seq.n_generated == 0 and seq.prompt_end_ns == 0:
                seq.prompt_end_ns = done_ns
            self._sample(seq, index)

    def _sample(self, seq: Sequence, index: int) -> None:
        """Sample seq's next token from batch row index, stream its text, and end it if done."""
        stream = seq.stream
        if len(stream.logits) < stream.keep_logits:
            row = llama_cpp.llama_get_logits_ith(self._ctx, index)
            stream.logits.append(np.ctypeslib.as_array(row, shape=(self._vocab.n_tokens,)).copy())
        if seq.options.num_predict == 0:
            self._finish(seq, "length")
            return
        token = llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, index)
        seq.last_token_ns = time.perf_counter_ns()
        if stream.first_token_time is None:
            stream.first_token_time = time.perf_counter()
        if self._vocab.is_eog(token):
            self._finish(seq, "stop")
            return
        seq.tokens.append(token)
        stream.tokens.append(token)
        seq.n_generated += 1
        piece = self._vocab.piece(token)
        if seq.logprobs is not None:
            self._note_logprobs(seq, index, token, len(piece))
        text, stopped = seq.text.feed(piece)
        if text:
            seq.pieces.append(text)
        self._emit(seq, text)
        if stopped:
            self._finish(seq, "stop")
        elif seq.n_generated == seq.options.num_predict or len(seq.tokens) >= seq.limit:
            self._finish(seq, "length")

    def _note_logprobs(self, seq: Sequence, index: int, token: int, size: int) -> None:
        """Hold the logprobs entry of seq's sampled token, read from its logits row in place
        (the sampler copied the row; it did not change it)."""
        row = llama_cpp.llama_get_logits_ith(self._ctx, index)
        logits = np.ctypeslib.as_array(row, shape=(self._vocab.n_tokens,))
        seq.logprobs.add(logprobs.entry(logits, token, seq.options.top_logprobs,
                                        self._vocab.piece), size)

    def _emit(self, seq: Sequence, text: str) -> None:
        """Put text on seq's stream, with the entries of the tokens it reaches into."""
        seq.stream._put(text, seq.logprobs.take(text) if seq.logprobs is not None else None)

    def _finish(self, seq: Sequence, reason: str) -> None:
        """End seq: free its sampler and id, keep its KV as a prefix cache, complete its stream."""
        self._release(seq, keep_cache=True)
        self._complete(seq, reason)

    def _complete(self, seq: Sequence, reason: str) -> None:
        """Free seq's sampler, flush its held text and end its stream (its id is free)."""
        seq.free_sampler()
        tail = seq.text.flush()
        if tail:
            seq.pieces.append(tail)
        self._emit(seq, tail)
        eval_ns = seq.last_token_ns - seq.prompt_end_ns if seq.n_generated else 0
        seq.stream._end(
            Completion(
                done_reason=reason,
                prompt_eval_count=seq.n_prompt,
                prompt_eval_duration=seq.prompt_ns,
                eval_count=seq.n_generated,
                eval_duration=max(eval_ns, 0),
                text="".join(seq.pieces),
                cached_tokens=seq.cached,
            )
        )

    def _release(self, seq: Sequence, *, keep_cache: bool) -> None:
        """Free seq's id; its KV stays as that id's prefix cache unless keep_cache is false."""
        self._slots[seq.seq_id] = None
        self._n_busy -= 1
        if keep_cache and self.prefix_cache:
            kept = seq.cacheable(seq.n_past)
            if len(kept) < seq.n_past and not llama_cpp.llama_memory_seq_rm(
                    self._memory, seq.seq_id, len(kept), -1):  # the image's cells and after
                llama_cpp.llama_memory_seq_rm(self._memory, seq.seq_id, -1, -1)
                kept = []
            self._prefix.released(seq.seq_id, kept)
            if kept and not seq.batch:
                self._keep_interactive(seq.seq_id, kept)
        else:  # the next user of this id must not attend to stale cells
            llama_cpp.llama_memory_seq_rm(self._memory, seq.seq_id, -1, -1)
            self._prefix.released(seq.seq_id, [])

    def _keep_interactive(self, seq_id: int, tokens: list[int]) -> None:
        """Keep an interactive sequence's KV under the kept id as well as its own.

        Under a batch, every id a chat frees is taken by the next batch line at once, and
        the chat's next turn (or the same prompt again) evaluated its whole prompt anew: at
        3 ms a prompt token on 2 cores, a 35-token chat's first token took 250 ms under a
        batch against 48 ms idle, where its prompt came from the cache. The kept id shares
        the cells (kv_unified: nothing is copied) and is only ever a source for _place; it
        gives its cells up first when the pool runs short (_relieve_kv_pressure).
        """
        if not self._prefix.can_copy or not self._n_kept:
            return
        llama_cpp.llama_memory_seq_rm(self._memory, self._kept_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, seq_id, self._kept_id, 0, len(tokens))
        self._kept = list(tokens)

    def _drop_kept(self) -> bool:
        """Give up the kept prompt's cells; False if none was kept."""
        if not self._kept:
            return False
        llama_cpp.llama_memory_seq_rm(self._memory, self._kept_id, -1, -1)
        self._kept = []
        return True

    def _fail(self, seqs: list[Sequence], error: str) -> None:
        """End seqs with an error and clear their KV, whose state llama.cpp left undefined."""
        log.error("%s; failing %d sequence(s)", error, len(seqs))
        for seq in seqs:
            seq.free_sampler()
            self._release(seq, keep_cache=False)
            seq.stream._end(None, error)

    def _drain(self, error: str | None) -> None:
        """At shutdown (or after a loop failure) end every admitted and waiting sequence."""
        if error:
            self._fail(self._active(), error)
        for seq in self._active():
            self._finish(seq, "cancel")
        while self._paused:
            self._complete(self._paused.popleft(), "cancel")
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for request in waiting:
            request.drop(None if error else Completion("cancel", 0, 0, 0, 0, ""), error)


