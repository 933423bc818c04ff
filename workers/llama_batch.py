"""A llama_batch whose arrays are numpy arrays, so a prompt chunk is written with slice assignments.

`llama_batch_init` gives C arrays that Python can only fill one element (and one ctypes call) at a
time; with numpy-owned arrays a 512-token chunk costs a few vectorised copies instead.
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np

from workers import compute


class _Rows:
    """What every llama_batch row has besides its input: position, sequence id (one per row)
    and whether to output logits, as numpy arrays the struct points into."""

    def __init__(self, capacity: int) -> None:
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.seq = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        self._n_seq_id = np.ones(capacity, dtype=np.int32)
        seq_ptr = ctypes.POINTER(llama_cpp.llama_seq_id)
        base, step = self.seq.ctypes.data, self.seq.itemsize
        # llama_batch wants one seq-id array per row: point row i at self.seq[i].
        self._seq_rows = (seq_ptr * capacity)(
            *(ctypes.cast(base + i * step, seq_ptr) for i in range(capacity))
        )
        self._seq_ptr = seq_ptr

    def batch(self, *, token=None, embd=None) -> llama_cpp.llama_batch:
        """The struct over these rows and one input array (token ids or embeddings)."""
        return llama_cpp.llama_batch(
            n_tokens=0, token=token, embd=embd,
            pos=self.pos.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_pos)),
            n_seq_id=self._n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=ctypes.cast(self._seq_rows, ctypes.POINTER(self._seq_ptr)),
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )


class TokenBatch:
    """Token rows for one llama_decode: token, position, sequence id and whether to output logits.

    Each row belongs to exactly one sequence (n_seq_id is 1 everywhere).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.n = 0
        self.token = np.zeros(capacity, dtype=np.int32)
        self._rows = _Rows(capacity)
        self.pos, self.seq, self.logits = self._rows.pos, self._rows.seq, self._rows.logits
        self._struct = self._rows.batch(
            token=self.token.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token)))

    def clear(self) -> None:
        """Empty the batch for the next step."""
        self.n = 0

    def add(self, seq_id: int, tokens: list[int], pos0: int, output_last: bool) -> int:
        """Append consecutive tokens of one sequence from position pos0; return the last row.

        output_last asks for the logits of the last token only (the next-token distribution).
        """
        n, k = self.n, len(tokens)
        if n + k > self.capacity:
            raise ValueError(f"batch overflow: {n} + {k} > {self.capacity}")
        end = n + k
        self.token[n:end] = tokens
        self.pos[n:end] = np.arange(pos0, pos0 + k, dtype=np.int32)
        self.seq[n:end] = seq_id
        self.logits[n:end] = 0
        if output_last:
            self.logits[end - 1] = 1
        self.n = end
        return end - 1

    def decode(self, ctx: llama_cpp.llama_context_p) -> int:
        """Run llama_decode on the rows added since clear(); return llama.cpp's status code.

        It runs on the process's compute thread (see workers.compute), whichever thread asks.
        """
        self._struct.n_tokens = self.n
        return compute.run(llama_cpp.llama_decode, ctx, self._struct)


class EmbeddingBatch:
    """Rows of input embeddings (an image's, from a vision projector) for one sequence.

    llama_decode takes either token ids or embeddings in one batch, never both, so an image is
    decoded by itself, in pieces of at most `capacity` rows, before the text after it.
    """

    def __init__(self, capacity: int, n_embd: int) -> None:
        self.capacity = capacity
        self.n_embd = n_embd
        self.embd = np.zeros((capacity, n_embd), dtype=np.float32)
        self._rows = _Rows(capacity)
        self.pos, self.seq = self._rows.pos, self._rows.seq
        self._struct = self._rows.batch(
            embd=self.embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))

    def decode(self, ctx: llama_cpp.llama_context_p, seq_id: int, rows: np.ndarray, pos0: int,
               *, non_causal: bool = False) -> int:
        """Decode rows into seq_id's KV from position pos0 (no logits); return llama.cpp's
        status code, stopping at the first piece that fails. Rows that must attend to each
        other both ways (non_causal) go in one piece, with causal attention off for it."""
        if non_causal and len(rows) > self.capacity:
            raise ValueError(f"an image of {len(rows)} rows needs n_batch >= {len(rows)}")
        self.seq[:] = seq_id
        for first in range(0, len(rows), self.capacity):
            piece = rows[first : first + self.capacity]
            k = len(piece)
            self.embd[:k] = piece
            self.pos[:k] = np.arange(pos0 + first, pos0 + first + k, dtype=np.int32)
            self._struct.n_tokens = k
            rc = compute.run(self._decode, ctx, non_causal)
            if rc != 0:
                return rc
        return 0

    def _decode(self, ctx: llama_cpp.llama_context_p, non_causal: bool) -> int:
        if not non_causal:
            return llama_cpp.llama_decode(ctx, self._struct)
        llama_cpp.llama_set_causal_attn(ctx, False)
        try:
            return llama_cpp.llama_decode(ctx, self._struct)
        finally:
            llama_cpp.llama_set_causal_attn(ctx, True)
