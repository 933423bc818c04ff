"""Read a GGUF file's header: its key/values and tensor shapes, never the weights.

`/api/show` and `/api/tags` describe a model from this header alone, as Ollama does in
fs/ggml/gguf.go, so nothing here loads llama.cpp. Only little-endian GGUF versions 2 and 3
are read; version 1 and big-endian files are refused with a ValueError.

Arrays of more than MAX_ARRAY_ITEMS items (the vocabulary, merges, token types) are not kept:
they become an `ArrayInfo(item_type, length)` marker, so a header of a few hundred thousand
strings costs a few milliseconds and no memory. Smaller arrays are kept as lists.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ARRAY_ITEMS = 1024
VERSION_KEY = "gguf.version"  # synthetic keys added by read_metadata, not in the file
TENSOR_COUNT_KEY = "gguf.tensor_count"
PARAMETER_COUNT_KEY = "general.parameter_count"  # Ollama patches this in from the tensors

_SCALARS: dict[int, tuple[str, str]] = {
    0: ("uint8", "<B"),
    1: ("int8", "<b"),
    2: ("uint16", "<H"),
    3: ("int16", "<h"),
    4: ("uint32", "<I"),
    5: ("int32", "<i"),
    6: ("float32", "<f"),
    7: ("bool", "<?"),
    10: ("uint64", "<Q"),
    11: ("int64", "<q"),
    12: ("float64", "<d"),
}
_STRING, _ARRAY = 8, 9

# llama.cpp's llama_ftype (general.file_type) by number; 4 is Ollama's reuse for MXFP4.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "MXFP4", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip
_FTYPE_GUESSED = 1024  # llama.cpp ORs this in when the type was guessed, not recorded

# Rough bits per weight, only to estimate a parameter count when a header has no tensors.
_BITS_PER_WEIGHT = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8.5, "Q6_K": 6.6, "Q5_1": 6,
                    "Q5_0": 5.5, "Q5_K_M": 5.7, "Q5_K_S": 5.5, "Q4_1": 5, "Q4_0": 4.5,
                    "Q4_K_M": 4.9, "Q4_K_S": 4.6, "Q3_K_M": 3.9, "Q2_K": 3.4}  # fmt: skip


@dataclass(frozen=True)
class ArrayInfo:
    """Stands in for an array too long to keep: its item type and how many items it had."""

    item_type: str
    length: int


class _Cursor:
    """Walk a memory-mapped header, turning overruns into a ValueError naming the file."""

    def __init__(self, data: mmap.mmap, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self._need(size)
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        self._need(length)
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.unpack("<Q")
        self._need(length)
        self.pos += length

    def _need(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise ValueError(f"{self.path} is truncated or corrupt")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Return every key/value of the header plus gguf.version, gguf.tensor_count and
    general.parameter_count (the sum of all tensors' element counts, as Ollama computes it)."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            cur = _Cursor(data, path)
            cur.pos = 4
            return _read_header(cur)


def _read_header(cur: _Cursor) -> dict[str, Any]:
    version = cur.unpack("<I")
    if version not in (2, 3):
        detail = "big-endian GGUF" if version > 0xFFFF else f"GGUF version {version}"
        raise ValueError(f"{cur.path}: {detail} is not supported")
    tensor_count, kv_count = cur.unpack("<Q"), cur.unpack("<Q")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cur.string()
        metadata[key] = _read_value(cur, cur.unpack("<I"))
    metadata[VERSION_KEY] = version
    metadata[TENSOR_COUNT_KEY] = tensor_count
    metadata[PARAMETER_COUNT_KEY] = sum(_read_tensor_elements(cur) for _ in range(tensor_count))
    return metadata


def _read_value(cur: _Cursor, kind: int) -> Any:
    if kind == _STRING:
        return cur.string()
    if kind == _ARRAY:
        return _read_array(cur)
    if kind not in _SCALARS:
        raise ValueError(f"{cur.path}: unknown GGUF value type {kind}")
    name, fmt = _SCALARS[kind]
    value = cur.unpack(fmt)
    return _shortest_float32(value) if name == "float32" else value


def _read_array(cur: _Cursor) -> list[Any] | ArrayInfo:
    kind, length = cur.unpack("<I"), cur.unpack("<Q")
    if length <= MAX_ARRAY_ITEMS:
        return [_read_value(cur, kind) for _ in range(length)]
    if kind == _STRING:
        for _ in range(length):
            cur.skip_string()
        return ArrayInfo("string", length)
    if kind not in _SCALARS:  # arrays of arrays are legal GGUF but no model uses them
        raise ValueError(f"{cur.path}: unsupported GGUF array item type {kind}")
    name, fmt = _SCALARS[kind]
    size = struct.calcsize(fmt) * length
    cur._need(size)
    cur.pos += size
    return ArrayInfo(name, length)


def _read_tensor_elements(cur: _Cursor) -> int:
    """Read one tensor info (name, shape, type, offset) and return its element count."""
    cur.skip_string()
    elements = 1
    for _ in range(cur.unpack("<I")):
        elements *= cur.unpack("<Q")
    cur.unpack("<I")  # ggml type
    cur.unpack("<Q")  # data offset
    return elements


def _shortest_float32(value: float) -> float:
    """Return the shortest decimal that is the same float32, as Go prints one (1e-05, not
    9.999999747378752e-06), so model_info matches Ollama's JSON."""
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


def quantization_level(metadata: dict[str, Any]) -> str:
    """Name general.file_type as llama.cpp does ("Q4_K_M"); "unknown" when absent or new."""
    file_type = metadata.get("general.file_type")
    if not isinstance(file_type, int) or isinstance(file_type, bool):
        return "unknown"
    return FILE_TYPES.get(file_type & ~_FTYPE_GUESSED, "unknown")


def human_number(count: int) -> str:
    """Format a parameter count like Ollama's format.HumanNumber: 134.52M, 7.2B, 8B, 500K."""
    for scale, suffix, decimals in ((1_000_000_000, "B", 1), (1_000_000, "M", 2)):
        if count >= scale:
            number = count / scale
            places = 0 if number.is_integer() else decimals
            return f"{number:.{places}f}{suffix}"
    if count >= 1000:
        return f"{count / 1000:.0f}K"
    return str(count)


def parameter_size(metadata: dict[str, Any], file_size: int = 0) -> str:
    """Say how big the model is, preferring what Ollama shows (the counted tensor elements),
    then the file's own general.size_label, then an estimate from the file size."""
    count = metadata.get(PARAMETER_COUNT_KEY)
    if isinstance(count, int) and count > 0:
        return human_number(count)
    label = metadata.get("general.size_label")
    if isinstance(label, str) and label:
        return label
    bits = _BITS_PER_WEIGHT.get(quantization_level(metadata))
    if bits and file_size > 0:
        return human_number(int(file_size * 8 / bits))
    return ""


def details(metadata: dict[str, Any], file_size: int = 0) -> dict[str, Any]:
    """Build the `details` object of /api/show and /api/tags for a GGUF model."""
    family = metadata.get("general.architecture") or "unknown"
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": parameter_size(metadata, file_size),
        "quantization_level": quantization_level(metadata),
    }


def model_info(metadata: dict[str, Any]) -> dict[str, Any]:
    """Build /api/show's `model_info` as Ollama does without `verbose`: every key except
    general.name and tokenizer.chat_template, with non-empty arrays shown as null."""
    info: dict[str, Any] = {}
    for key, value in metadata.items():
        if key in ("general.name", "tokenizer.chat_template") or key.startswith("gguf."):
            continue
        if isinstance(value, ArrayInfo) or (isinstance(value, list) and value):
            value = None
        info[key] = value
    return info
