"""Images a request carries, and the refusal that keeps a model from answering them blind.

Ollama's requests carry images as base64 strings (`images` on /api/generate, on each
/api/chat message); OpenAI's as `image_url` content parts, which corral takes only as
`data:` URLs (it fetches nothing). A model answers about images only through a vision
projector, which corral's workers do not run yet: so every request with images is refused
with a 400 that says why, rather than its images being dropped and the text answered as if
there were none (what Ollama's clients would otherwise get back without a word).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from service.core.errors import InvalidRequest
from service.models.capabilities import VISION
from service.models.store import Model


def read_images(value: Any, where: str) -> list[str]:
    """A list of base64-encoded images (Ollama's `images`); 400 naming `where` otherwise."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"invalid field '{where}': expected a list of base64 strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not _is_base64(item):
            raise InvalidRequest(f"invalid field '{where}[{i}]': expected a base64-encoded image")
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
    return data


def count_images(job: dict[str, Any]) -> int:
    """How many images a job's request carries (on itself or on its messages)."""
    messages = job.get("messages") or []
    return len(job.get("images") or []) + sum(len(m.get("images") or []) for m in messages)


def check_images(count: int, model: Model, name: str | None = None) -> None:
    """Refuse images: a model without a vision projector cannot see them, and one with a
    projector needs what corral does not run yet. Either way a 400 names the model."""
    if not count:
        return
    shown = json.dumps(name or model.name.display())
    if VISION not in model.capabilities():
        raise InvalidRequest(f"{shown} does not support images: it has no vision projector, "
                             "so it would answer without seeing them")
    raise InvalidRequest(f"{shown} has a vision projector, but corral does not run vision "
                         "projectors yet: images are refused rather than ignored")


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(text)
