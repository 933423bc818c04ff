"""Load a GGUF model and its context through llama-cpp-python's low-level API.

llama.cpp reports why a load failed only through its log callback (the C call just returns NULL),
so loading captures the error lines and raises them as the exception's message. All llama.cpp
logging is routed into Python's `logging` under the "llama.cpp" logger instead of raw stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator

import llama_cpp

_llama_log = logging.getLogger("llama.cpp")
# ggml levels: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous line.
# (llama_cpp._logger still maps the older numbering.) Info goes to DEBUG: a load logs ~130 lines.
_LEVELS = {3: logging.WARNING, 4: logging.ERROR}  # others: DEBUG
_GGML_ERROR = 4
_GGML_CONT = 5

_setup_lock = threading.Lock()
_capture_lock = threading.Lock()
_captured: list[str] | None = None
_installed = False
_last_level = 0


class ModelLoadError(RuntimeError):
    """The model or its context could not be created; the message is llama.cpp's reason."""


@llama_cpp.llama_log_callback
def on_llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """Forward one llama.cpp log line to Python logging; keep errors while a load is captured."""
    global _last_level
    level = _last_level if level == _GGML_CONT else level
    _last_level = level
    message = text.decode("utf-8", errors="replace").rstrip()
    if not message:
        return
    if level == _GGML_ERROR and _captured is not None:
        _captured.append(message)
    _llama_log.log(_LEVELS.get(level, logging.DEBUG), "%s", message)


def init_backend() -> None:
    """Initialise the llama.cpp backend and install the log bridge, once per process."""
    global _installed
    with _setup_lock:
        if _installed:
            return
        llama_cpp.llama_backend_init()
        llama_cpp.llama_log_set(on_llama_log, ctypes.c_void_p(0))
        _installed = True


@contextlib.contextmanager
def capture_errors() -> Iterator[list[str]]:
    """Collect llama.cpp error lines logged inside the block (the log callback is global)."""
    global _captured
    with _capture_lock:
        _captured = []
        try:
            yield _captured
        finally:
            _captured = None


def failure_reason(errors: list[str], fallback: str) -> str:
    """Join captured error lines into one message, or use fallback if llama.cpp said nothing."""
    return "; ".join(errors) if errors else fallback


def cpu_has_amx(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU advertises Intel AMX tiles (Sapphire Rapids and later)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            return any(line.startswith("flags") and " amx_tile" in line for line in f)
    except OSError:
        return False


def model_params(n_gpu_layers: int = 0) -> llama_cpp.llama_model_params:
    """The load parameters of a model: mmap, and `n_gpu_layers` layers offloaded to a GPU.

    The count is always set, never left at llama.cpp's default (which offloads every layer
    on a CUDA build), so that a CPU worker on a host with a GPU build stays on the CPU.

    On a CPU with AMX, llama.cpp's AMX weight buffers (an "extra buffer type") crash the process
    in ggml_backend_amx_mul_mat once a prompt is a few dozen tokens long (llama-cpp-python 0.3.36,
    built natively). Without extra buffer types the weights stay in plain CPU buffers and the
    AVX-512 kernels run them; elsewhere the extra types stay on, since they repack Q4_0/Q4_K
    weights for faster AVX2 kernels.
    """
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers
    if cpu_has_amx():
        params.use_extra_bufts = False
    return params


def load_model(path: str, *, n_gpu_layers: int = 0) -> llama_cpp.llama_model_p:
    """Load a GGUF file (see model_params) or raise ModelLoadError with the loader's reason."""
    params = model_params(n_gpu_layers)
    with capture_errors() as errors:
        model = llama_cpp.llama_model_load_from_file(path.encode("utf-8"), params)
    if not model:
        raise ModelLoadError(failure_reason(errors, f"failed to load model from {path}"))
    return model


def new_context(
    model: llama_cpp.llama_model_p, *, n_seq: int, n_ctx_per_seq: int, n_batch: int,
    n_threads: int, n_kept: int = 0,
) -> llama_cpp.llama_context_p:
    """Create one context whose single KV pool (kv_unified) is shared by n_seq sequences,
    and n_kept more ids that never decode: they only hold cells of kept prompts (the engine's
    interactive prefix cache), shared with the ids that computed them.

    n_outputs_max is the id count: each sequence asks for at most one logits row per step, a
    larger value only grows the compute buffer (vocabulary x rows), and llama.cpp reserves a
    row for every id at its start (a smaller value aborts the process).
    """
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_seq * n_ctx_per_seq
    params.n_batch = n_batch
    params.n_ubatch = n_batch
    params.n_seq_max = n_seq + n_kept
    params.n_outputs_max = n_seq + n_kept
    params.n_threads = n_threads
    params.n_threads_batch = n_threads
    params.kv_unified = True
    params.no_perf = True
    with capture_errors() as errors:
        ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        raise ModelLoadError(failure_reason(errors, "failed to create a llama.cpp context"))
    return ctx


def apply_lora(model: llama_cpp.llama_model_p, ctx: llama_cpp.llama_context_p, path: str) -> None:
    """Load a LoRA adapter (freed with the model) and enable it at scale 1 on ctx."""
    with capture_errors() as errors:
        adapter = llama_cpp.llama_adapter_lora_init(model, path.encode("utf-8"))
    if not adapter:
        raise ModelLoadError(failure_reason(errors, f"failed to load LoRA adapter from {path}"))
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(1.0)
    if llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, scales) != 0:
        raise ModelLoadError(f"failed to apply LoRA adapter {path}")


def read_metadata(model: llama_cpp.llama_model_p) -> dict[str, str]:
    """Return the GGUF key/values as llama.cpp renders them (arrays are summarised by it)."""
    out = {}
    for i in range(llama_cpp.llama_model_meta_count(model)):
        key = _meta_string(llama_cpp.llama_model_meta_key_by_index, model, i)
        value = _meta_string(llama_cpp.llama_model_meta_val_str_by_index, model, i)
        if key is not None and value is not None:
            out[key] = value
    return out


def _meta_string(getter, model: llama_cpp.llama_model_p, i: int) -> str | None:
    """Call an snprintf-style metadata getter, growing the buffer when the value is longer."""
    size = 256
    while True:
        buf = ctypes.create_string_buffer(size)
        n = getter(model, i, buf, size)
        if n < 0:
            return None
        if n < size:
            return buf.value.decode("utf-8", errors="replace")
        size = n + 1


def chat_template(model: llama_cpp.llama_model_p) -> str | None:
    """Return the model's default chat template (GGUF "tokenizer.chat_template"), if any."""
    raw = llama_cpp.llama_model_chat_template(model, None)
    return raw.decode("utf-8", errors="replace") if raw else None


def kv_cache_bytes(model: llama_cpp.llama_model_p, metadata: dict[str, str], n_ctx: int) -> int:
    """Estimate the fp16 KV cache size: n_ctx x layers x (K + V widths) x 2 bytes."""
    n_head = max(llama_cpp.llama_model_n_head(model), 1)
    n_head_kv = llama_cpp.llama_model_n_head_kv(model) or n_head
    arch = metadata.get("general.architecture", "")
    default_dim = llama_cpp.llama_model_n_embd(model) // n_head
    k_dim = int(metadata.get(f"{arch}.attention.key_length", default_dim))
    v_dim = int(metadata.get(f"{arch}.attention.value_length", default_dim))
    return n_ctx * llama_cpp.llama_model_n_layer(model) * n_head_kv * (k_dim + v_dim) * 2


class Vocab:
    """Tokenizer calls on a model's vocabulary; safe from any thread (they only read the vocab)."""

    def __init__(self, model: llama_cpp.llama_model_p) -> None:
        self.ptr = llama_cpp.llama_model_get_vocab(model)
        self.n_tokens = llama_cpp.llama_vocab_n_tokens(self.ptr)
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        """Return the token ids of text, retrying with the size llama.cpp asks for."""
        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            buf = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(
                self.ptr, data, len(data), buf, size, add_special, parse_special
            )
            if n >= 0:
                return buf[:n]
            size = -n

    def detokenize(self, tokens: list[int]) -> str:
        """Return the text of tokens, special tokens omitted (as the engine streams them)."""
        arr = (llama_cpp.llama_token * len(tokens))(*tokens)
        size = len(tokens) * 8 + 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_detokenize(self.ptr, arr, len(tokens), buf, size, False, False)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n

    def piece(self, token: int) -> bytes:
        """Return one token's bytes, memoised: the decode loop asks for every generated token."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        size = 32
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.ptr, token, buf, size, 0, False)
            if n >= 0:
                break
            size = -n
        self._pieces[token] = buf.raw[:n]
        return self._pieces[token]

    def text_of(self, token: int) -> str:
        """Return a token's vocabulary text ("" for an absent special token such as no BOS)."""
        if token < 0:
            return ""
        raw = llama_cpp.llama_vocab_get_text(self.ptr, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def is_eog(self, token: int) -> bool:
        """Whether token ends generation (EOS, EOT, <|im_end|> and the like)."""
        return bool(llama_cpp.llama_vocab_is_eog(self.ptr, token))
