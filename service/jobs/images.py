"""Images a request carries, and the refusal that keeps a model from answering them blind.

Ollama's requests carry images as base64 strings (`images` on /api/generate, on each
/api/chat message); OpenAI's as `image_url` content parts, which corral takes only as
`data:` URLs (it fetches nothing). A model answers about images only through a vision
projector (an mmproj GGUF: an Ollama projector layer, or a Modelfile's second FROM), which the
worker runs through llama.cpp's multimodal library (workers/vision.py). A request with images
for a model without one is refused with a 400 that says why, rather than its images being
dropped and the text answered as if there were none (what Ollama's clients would otherwise
get back without a word). Data that is base64 but no image format the projector reads is a
400 naming the field, here, before anything is queued.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from service.core.errors import InvalidRequest
from service.models.store import Model

# The first bytes of the formats llama.cpp's image loader (stb_image, inside mtmd) reads.
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def read_images(value: Any, where: str) -> list[str]:
    """A list of base64-encoded images (Ollama's `images`); 400 naming `where` otherwise."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"invalid field '{where}': expected a list of base64 strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _is_base64(item):
            raise InvalidRequest(f"invalid field '{where}[{i}]': expected a base64-encoded image")
        if not _is_image(item):
            raise InvalidRequest(f"invalid field '{where}[{i}]': {_NOT_AN_IMAGE}")
    return list(value)


def from_image_url(part: dict[str, Any], where: str) -> str:
    """The base64 data of an OpenAI `image_url` part; remote URLs are refused, not fetched."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequest(f"invalid field '{where}.image_url.url': expected a string")
    head, sep, data = url.partition(",")
    if not (url.startswith("data:") and sep and head.endswith(";base64")):
        raise InvalidRequest(f"invalid field '{where}.image_url.url': corral fetches no URLs; "
                             "send the image inline as a data: URL (data:image/png;base64,...)")
    if not _is_base64(data):
        raise InvalidRequest(f"invalid field '{where}.image_url.url': the data is not base64")
    if not _is_image(data):
        raise InvalidRequest(f"invalid field '{where}.image_url.url': {_NOT_AN_IMAGE}")
    return data


def count_images(job: dict[str, Any]) -> int:
    """How many images a job's request carries (on itself or on its messages)."""
    messages = job.get("messages") or []
    return len(job.get("images") or []) + sum(len(m.get("images") or []) for m in messages)


def check_images(count: int, model: Model, name: str | None = None) -> None:
    """Refuse images for a model without a vision projector, which would answer without
    seeing them, with a 400 naming the model. (A GGUF that declares a vision tower of its
    own but comes with no projector file is refused too: corral runs images only through
    an mmproj.)"""
    if count and not model.projectors:
        shown = json.dumps(name or model.name.display())
        raise InvalidRequest(f"{shown} does not support images: it has no vision projector, "
                             "so it would answer without seeing them")


_NOT_AN_IMAGE = "the data is not an image (expected PNG, JPEG, GIF or BMP)"


def _is_image(text: str) -> bool:
    """Whether base64 text starts like an image the projector reads (its first 12 bytes)."""
    head = base64.b64decode(text[:16])
    return head.startswith(_SIGNATURES)


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(text)
