"""What `create` may quantize to and from: llama.cpp's file types by name.

The work itself is a worker's (workers/kinds/quantize.py runs llama_model_quantize); this
module only decides, before a job is queued, whether a request makes sense, so a bad
`quantize` is a 400 at once rather than a failed job later. As Ollama does, only full
precision weights (F32, F16, BF16) are quantized: quantizing quantized weights again loses
more than it saves.
"""

from __future__ import annotations

from typing import Any

from service.core.errors import InvalidRequest
from service.models.gguf import FILE_TYPES, quantization_level

SOURCES = ("F32", "F16", "BF16")
# The llama.cpp types Ollama's `create --quantize` knows, and the k-quant mixes beside them.
TARGETS: dict[str, int] = {name: number for number, name in FILE_TYPES.items() if name in (
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
    "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "F16", "BF16")}


def target(value: str) -> str:
    """The file type `quantize` names (any case, as Ollama reads it); 400 if it is none."""
    name = value.strip().upper()
    if name not in TARGETS:
        raise InvalidRequest(f"invalid field 'quantize': unsupported quantization type "
                             f"{value!r} (expected one of {', '.join(TARGETS)})")
    return name


def check_source(metadata: dict[str, Any], goal: str) -> str:
    """The source weights' file type, if they may be quantized to `goal`; 400 otherwise."""
    level = quantization_level(metadata)
    if level not in SOURCES:
        raise InvalidRequest(f"invalid field 'quantize': the weights are {level}; "
                             f"quantization needs {', '.join(SOURCES)} weights")
    if level == goal:
        raise InvalidRequest(f"invalid field 'quantize': the weights are {level} already")
    return level
