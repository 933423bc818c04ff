"""Write a tiny synthetic vision projector (mmproj GGUF) with random weights, for tests.

No small real vision GGUF can be had here, so tests build one: a LLaVA-style CLIP encoder
(projector type "mlp", as llama.cpp's tools/mtmd/clip.cpp reads it) whose output rows have
the text model's n_embd, so its image embeddings decode into that model's KV. Its answers
are noise; it shows that an image reaches the model, and how many positions it takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SIZE = 32
PATCH_SIZE = 8
WIDTH = 64  # the encoder's hidden size
N_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2  # an image's embedding rows (its tokens)


def write_mmproj(path: Path, n_embd_text: int, *, seed: int = 0, blocks: int = 2) -> Path:
    """Write the projector at path and return path. `gguf` is a test dependency only."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    for key, value in _metadata(n_embd_text, blocks).items():
        _add(writer, key, value)
    for name, shape in _tensors(n_embd_text, blocks).items():
        scale = 1.0 if name.endswith(("ln1.weight", "ln2.weight")) else 0.05
        values = rng.standard_normal(shape).astype(np.float32) * scale
        if name.endswith(("ln1.weight", "ln2.weight")):
            values = np.ones(shape, dtype=np.float32)
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _metadata(n_embd_text: int, blocks: int) -> dict[str, object]:
    return {
        "general.name": "corral-test-mmproj",
        "general.file_type": 0,  # all F32
        "clip.projector_type": "mlp",
        "clip.has_vision_encoder": True,
        "clip.has_text_encoder": False,
        "clip.has_llava_projector": True,
        "clip.use_gelu": True,
        "clip.vision.image_size": IMAGE_SIZE,
        "clip.vision.patch_size": PATCH_SIZE,
        "clip.vision.embedding_length": WIDTH,
        "clip.vision.feed_forward_length": WIDTH * 2,
        "clip.vision.block_count": blocks,
        "clip.vision.attention.head_count": 4,
        "clip.vision.attention.layer_norm_epsilon": 1e-5,
        "clip.vision.projection_dim": n_embd_text,
        "clip.vision.image_mean": [0.5, 0.5, 0.5],
        "clip.vision.image_std": [0.5, 0.5, 0.5],
    }


def _tensors(n_embd_text: int, blocks: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and numpy shapes (ggml's ne reversed: a linear weight is (out, in))."""
    tensors: dict[str, tuple[int, ...]] = {
        "v.patch_embd.weight": (WIDTH, 3, PATCH_SIZE, PATCH_SIZE),
        "v.position_embd.weight": (N_PATCHES, WIDTH),
        "mm.0.weight": (n_embd_text, WIDTH),
        "mm.0.bias": (n_embd_text,),
        "mm.2.weight": (n_embd_text, n_embd_text),
        "mm.2.bias": (n_embd_text,),
    }
    for i in range(blocks):
        for part, (rows, cols) in {"attn_q": (WIDTH, WIDTH), "attn_k": (WIDTH, WIDTH),
                                   "attn_v": (WIDTH, WIDTH), "attn_out": (WIDTH, WIDTH),
                                   "ffn_up": (WIDTH * 2, WIDTH),
                                   "ffn_down": (WIDTH, WIDTH * 2)}.items():
            tensors[f"v.blk.{i}.{part}.weight"] = (rows, cols)
            tensors[f"v.blk.{i}.{part}.bias"] = (rows,)
        for norm in ("ln1", "ln2"):
            tensors[f"v.blk.{i}.{norm}.weight"] = (WIDTH,)
            tensors[f"v.blk.{i}.{norm}.bias"] = (WIDTH,)
    return tensors


def _add(writer, key: str, value: object) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, list(value))  # floats: image_mean, image_std
