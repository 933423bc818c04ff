"""A model's vision projector: images become embedding rows the engine decodes into a sequence.

llama.cpp's multimodal library (mtmd, bound by llama-cpp-python as `llama_cpp.mtmd_cpp`) splits
a prompt at its media markers into text chunks and image chunks, and runs the projector (a CLIP
encoder) over each image. The engine then decodes the text tokens as usual and each image's
rows (one per image token, n_embd wide) at the positions the image takes in the prompt, so an
image is part of the sequence's KV like any text before and after it.

The prompt handed to the engine stays one list of token ids: an image's positions hold a
placeholder id, and an `ImageSpan` says where its rows go. Projectors whose images need M-RoPE
positions (Qwen2-VL and kin: an image takes fewer positions than rows) are refused, since the
engine's positions are its token indices.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp

from workers import compute, llama_loader
from workers.llama_loader import ModelLoadError

PLACEHOLDER = 0  # the token id an image's positions hold in the prompt (its rows replace it)


@dataclass(frozen=True)
class ImageSpan:
    """One image's embedding rows and the prompt position the first goes at."""

    start: int
    embd: np.ndarray  # (rows, n_embd) float32, C-contiguous
    non_causal: bool = False  # the rows attend to each other both ways (Gemma 3's projector)

    @property
    def end(self) -> int:
        return self.start + len(self.embd)


_logs_routed = False


def _route_logs() -> None:
    """Send mtmd's log lines where llama.cpp's go (Python logging), not to raw stderr."""
    global _logs_routed
    if not _logs_routed:
        mtmd_cpp.mtmd_log_set(llama_loader.on_llama_log, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(llama_loader.on_llama_log, ctypes.c_void_p(0))
        _logs_routed = True


class ImageError(ValueError):
    """An image the projector cannot read; `index` is its place in the list it was given."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


class Projector:
    """An mtmd context over one mmproj GGUF, bound to the text model it projects into."""

    def __init__(self, path: str, model: llama_cpp.llama_model_p, n_threads: int, *,
                 use_gpu: bool = False) -> None:
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = use_gpu  # beside a text model that offloads layers, as llama-server
        params.print_timings = False
        params.n_threads = n_threads
        params.warmup = False  # the first image pays for it instead of every load
        _route_logs()
        with llama_loader.capture_errors() as errors:
            self._ctx = compute.run(mtmd_cpp.mtmd_init_from_file, path.encode(), model, params)
        if not self._ctx:
            raise ModelLoadError(llama_loader.failure_reason(
                errors, f"failed to load projector {path}"))
        self._lock = threading.Lock()  # an mtmd context is not thread-safe
        self.n_embd = llama_cpp.llama_model_n_embd(model)
        self.marker = mtmd_cpp.mtmd_default_marker().decode()
        self.mrope = bool(mtmd_cpp.mtmd_decode_use_mrope(self._ctx))

    def tokenize(self, text: str, images: list[bytes]) -> tuple[list[int], list[ImageSpan]]:
        """Split text at its markers (one per image, in order) and encode every image; return
        the prompt's token ids (PLACEHOLDER where an image goes) and the images' spans.

        Raises ImageError for bytes that are no image, ValueError for a marker count that does
        not match the images or a projector the engine cannot position."""
        if self.mrope:
            raise ValueError("this model's projector positions images with M-RoPE, "
                             "which corral does not run")
        with self._lock:
            return compute.run(self._tokenize, text, images)

    def _tokenize(self, text: str, images: list[bytes]) -> tuple[list[int], list[ImageSpan]]:
        bitmaps = [self._bitmap(i, data) for i, data in enumerate(images)]
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            data = text.encode()
            part = mtmd_cpp.mtmd_input_text(data, len(data), True, True)
            array = (mtmd_cpp.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            rc = mtmd_cpp.mtmd_tokenize(self._ctx, chunks, ctypes.byref(part), array,
                                        len(bitmaps))
            if rc != 0:
                raise ValueError(f"the prompt has {text.count(self.marker)} image markers "
                                 f"({self.marker}) for {len(bitmaps)} images")
            return self._read_chunks(chunks)
        finally:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bitmap)

    def _bitmap(self, index: int, data: bytes):
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        bitmap = mtmd_cpp.mtmd_helper_bitmap_init_from_buf(self._ctx, buf, len(data), False)
        if not bitmap:
            raise ImageError(index, "the data is not an image the projector can read "
                                    "(PNG, JPEG, GIF, BMP)")
        return bitmap

    def _read_chunks(self, chunks) -> tuple[list[int], list[ImageSpan]]:
        """Text chunks' tokens in order; each image chunk encoded, its rows copied out."""
        tokens: list[int] = []
        spans: list[ImageSpan] = []
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            n = mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk)
            if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t()
                ids = mtmd_cpp.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                tokens.extend(ids[: count.value])
                continue
            if mtmd_cpp.mtmd_encode_chunk(self._ctx, chunk) != 0:
                raise ValueError("the projector failed to encode an image")
            rows = mtmd_cpp.mtmd_get_output_embd(self._ctx)
            embd = np.ctypeslib.as_array(rows, shape=(n, self.n_embd)).copy()
            causal = not mtmd_cpp.mtmd_decode_use_non_causal(self._ctx, chunk)
            spans.append(ImageSpan(len(tokens), embd, non_causal=not causal))
            tokens.extend([PLACEHOLDER] * n)
        return tokens, spans

    def close(self) -> None:
        """Free the mtmd context (before the text model it was bound to); idempotent."""
        if self._ctx:
            mtmd_cpp.mtmd_free(self._ctx)
            self._ctx = None
