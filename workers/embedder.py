"""Embeddings: pooled, L2-normalised vectors from a model's own embedding context.

An embedding context is not the generation engine's: it needs `embeddings=True`, a pooling
type, and every token of an input in one micro-batch (pooling happens per micro-batch, and
non-causal models attend over the whole input), so it is loaded as its own pool entry under
`<name>@<digest>#embed`. It shares the worker's pool, so CORRAL_MAX_LOADED_MODELS and
keep_alive govern it like any loaded model.

Pooling: the model's declared `<arch>.pooling_type` (embedding models declare one), else mean
pooling, which is what a plain causal LM such as SmolLM2 gets.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import llama_cpp
import numpy as np

from workers import llama_loader
from workers.llama_batch import TokenBatch
from workers.llama_loader import ModelLoadError, Vocab

_POOLED = (
    llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    llama_cpp.LLAMA_POOLING_TYPE_CLS,
    llama_cpp.LLAMA_POOLING_TYPE_LAST,
)


class InputTooLong(ValueError):
    """An input has more tokens than the embedding context holds and truncation is off."""


@dataclass
class Embeddings:
    """The vectors of one request, in input order, and what computing them cost."""

    vectors: list[np.ndarray]
    prompt_eval_count: int  # tokens embedded, after truncation, special tokens included
    prompt_eval_duration: int  # ns spent in llama_decode


def pooling_for(metadata: dict[str, str]) -> int:
    """The pooling type to ask llama.cpp for: the model's own if it pools, else mean."""
    arch = metadata.get("general.architecture", "")
    try:
        declared = int(metadata.get(f"{arch}.pooling_type", "-1"))
    except ValueError:
        declared = -1
    return declared if declared in _POOLED else llama_cpp.LLAMA_POOLING_TYPE_MEAN


class Embedder:
    """One model loaded for embeddings; `embed` may be called from any thread (it serialises)."""

    def __init__(self, model_path: str, *, n_ctx: int = 2048, n_threads: int | None = None,
                 n_gpu_layers: int = 0) -> None:
        llama_loader.init_backend()
        self.model_path = model_path
        self._ctx = None
        self._model = llama_loader.load_model(model_path, n_gpu_layers=n_gpu_layers)
        try:
            self.metadata = llama_loader.read_metadata(self._model)
            self.pooling = pooling_for(self.metadata)
            n_ctx = min(n_ctx, llama_cpp.llama_model_n_ctx_train(self._model) or n_ctx)
            self._ctx = self._new_context(n_ctx, n_threads or os.cpu_count() or 1)
        except BaseException:
            self.close()
            raise
        self._vocab = Vocab(self._model)
        # llama.cpp rounds n_ctx up (to 256) but not n_batch: an input must fit all three.
        self.n_ctx = min(llama_cpp.llama_n_ctx(self._ctx), llama_cpp.llama_n_batch(self._ctx),
                         llama_cpp.llama_n_ubatch(self._ctx))
        self.n_embd = llama_cpp.llama_model_n_embd(self._model)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = TokenBatch(self.n_ctx)
        self._lock = threading.Lock()
        self._busy = 0
        # Weights, KV, and the output buffer (every token is an output row: vocab + embd floats).
        n_vocab = self._vocab.n_tokens
        self.size_bytes = (
            os.path.getsize(model_path)
            + llama_loader.kv_cache_bytes(self._model, self.metadata, self.n_ctx)
            + self.n_ctx * (n_vocab + self.n_embd) * 4
        )

    def _new_context(self, n_ctx: int, n_threads: int) -> llama_cpp.llama_context_p:
        """A one-sequence context whose micro-batch holds a whole input (see the module doc)."""
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx
        params.n_ubatch = n_ctx
        params.n_seq_max = 1
        params.n_outputs_max = n_ctx
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.embeddings = True
        params.pooling_type = self.pooling
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not ctx:
            raise ModelLoadError("failed to create an embedding context")
        return ctx

    def tokenize(self, text: str, truncate: bool = True) -> list[int]:
        """Tokens of one input (user text: special-token syntax is not parsed), fitted to n_ctx."""
        tokens = self._vocab.tokenize(text, True, False)
        if len(tokens) > self.n_ctx:
            if not truncate:
                raise InputTooLong(
                    f"input length {len(tokens)} exceeds the context length "
                    f"{self.n_ctx}; shorten it or set truncate to true"
                )
            tokens = tokens[: self.n_ctx]
        return tokens

    def embed(self, texts: list[str], truncate: bool = True) -> Embeddings:
        """Embed each text on its own sequence; every input is tokenised (and checked) first."""
        batches = [self.tokenize(text, truncate) for text in texts]
        if any(not tokens for tokens in batches):
            raise ValueError("an input has no tokens to embed")
        with self._lock:
            self._busy += 1
            try:
                started = time.perf_counter_ns()
                vectors = [self._embed_tokens(tokens) for tokens in batches]
                elapsed = time.perf_counter_ns() - started
            finally:
                self._busy -= 1
        return Embeddings(vectors, sum(map(len, batches)), elapsed)

    def _embed_tokens(self, tokens: list[int]) -> np.ndarray:
        """Decode one input from an empty cache and return its pooled, L2-normalised vector."""
        if self._memory:
            llama_cpp.llama_memory_clear(self._memory, True)
        self._batch.clear()
        self._batch.add(0, tokens, 0, True)
        self._batch.logits[: self._batch.n] = 1  # pooling reads every token's output row
        # llama_decode runs encoder-only models (BERT and the like) through their encoder.
        rc = self._batch.decode(self._ctx)
        if rc != 0:
            raise RuntimeError(f"llama.cpp could not embed the input (status {rc})")
        pointer = llama_cpp.llama_get_embeddings_seq(self._ctx, 0)
        if not pointer:
            raise RuntimeError("llama.cpp returned no pooled embedding")
        vector = np.ctypeslib.as_array(pointer, shape=(self.n_embd,)).astype(np.float64)
        norm = np.linalg.norm(vector)
        return (vector / norm if norm > 0 else vector).astype(np.float32)

    def active(self) -> int:
        """Requests embedding right now (at most one runs; others wait on the lock)."""
        return self._busy

    def close(self) -> None:
        """Free the context and the model; idempotent."""
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None
