"""Decode-thread state of one sequence, from submission to its last token.

The engine's thread alone reads and writes these; other threads see a sequence only through its
`Stream`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import llama_cpp

from workers.detok import TextAssembler
from workers.logprobs import Aligner
from workers.sampling import Options, free_sampler
from workers.stream import Completion, Stream
from workers.vision import ImageSpan


@dataclass
class Request:
    """A submitted prompt waiting for a free sequence id."""

    tokens: list[int]
    options: Options
    stream: Stream
    limit: int  # this sequence's context: prompt + generated tokens stay below it
    sampler: llama_cpp.llama_sampler_p  # built by submit; the Sequence then owns it
    batch: bool = False  # a batch line: it yields its slot to interactive work (scheduler)
    priority: int = 0  # the job's priority (0-9): higher is admitted first
    images: list[ImageSpan] = field(default_factory=list)  # in prompt order, none overlapping

    def shareable(self) -> list[int]:
        """The prompt as the prefix cache may match it: up to its first image's first
        position, which (as a prompt's last token always is) is never reused, so a cached
        prefix ends before the image (its placeholder ids could equal another prompt's text
        tokens)."""
        return self.tokens[: self.images[0].start + 1] if self.images else self.tokens

    def drop(self, completion: Completion | None, error: str | None = None) -> None:
        """End a request that never became a sequence, freeing its sampler."""
        free_sampler(self.sampler)
        self.stream._end(completion, error)


class Sequence:
    """Decode-thread state of one admitted sequence; the KV holds tokens[:n_past]."""

    def __init__(self, seq_id: int, req: Request, cached: int, order: int) -> None:
        self.seq_id = seq_id
        self.order = order
        self.batch = req.batch
        self.tokens = list(req.tokens)  # prompt, then generated tokens
        self.n_prompt = len(req.tokens)
        self.n_eval = self.n_prompt  # tokens to evaluate before the next sample
        self.sample_after_eval = True  # false once resumed: its next token is sampled already
        self.pauses = 0  # times it gave its slot to interactive work
        self.n_past = cached
        self.cached = cached
        self.options = req.options
        self.stream = req.stream
        self.limit = req.limit
        self.sampler: llama_cpp.llama_sampler_p | None = req.sampler
        self.text = TextAssembler(req.options.stop)
        self.pieces: list[str] = []
        self.logprobs = Aligner() if req.options.logprobs else None  # None: not asked
        self.images = req.images
        # KV past an image's start is no prefix cache: its placeholder ids say nothing of
        # which image it holds, so another prompt could "share" it (workers.vision).
        self.reusable = req.images[0].start if req.images else None
        self.n_generated = 0
        self.prompt_ns = 0
        self.prompt_end_ns = 0
        self.last_token_ns = 0

    @property
    def prefilling(self) -> bool:
        """Whether prompt tokens remain to be evaluated (else the last token awaits decoding)."""
        return self.n_past < self.n_eval

    def resume_tokens(self) -> list[int]:
        """What the KV must hold again before a paused sequence goes on: its prompt, or once
        it has generated, every token but the last sampled one (which the next step feeds)."""
        return self.tokens[:-1] if self.n_generated else self.tokens[: self.n_prompt]

    def resume(self, seq_id: int, cached: int) -> None:
        """Continue on `seq_id`, whose KV holds the first `cached` of resume_tokens(): the
        rest is evaluated without sampling, then generation goes on where it stopped."""
        self.seq_id = seq_id
        self.n_past = cached
        if self.n_generated:
            self.n_eval = len(self.tokens) - 1
            self.sample_after_eval = False

    def image_at(self, pos: int) -> ImageSpan | None:
        """The image whose rows start at prompt position pos, if one does."""
        return next((span for span in self.images if span.start == pos), None)

    def text_end(self) -> int:
        """Where the text to evaluate from n_past runs to: the next image's start, or the end
        of what must be evaluated (the prompt; once resumed, all but the last token)."""
        return next((s.start for s in self.images if s.start >= self.n_past), self.n_eval)

    def cacheable(self, n: int) -> list[int]:
        """The first n tokens, cut before the first image: what may be shared as a prefix."""
        return self.tokens[: n if self.reusable is None else min(n, self.reusable)]

    def free_sampler(self) -> None:
        """Free the sampler chain once, even if a failure path reaches here a second time."""
        if self.sampler is not None:
            free_sampler(self.sampler)
            self.sampler = None
