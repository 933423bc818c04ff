"""Where a request's images go in its prompt, as Ollama places them, for a vision projector.

Ollama numbers a request's images across its messages and tags each in its message's text:
an `[img]` in the text becomes `[img-N]`, else `[img-N] ` goes before the text (server/
prompt.go); a generate prompt may name `[img-N]` itself. The template renders those tags as
text, and each tag left in the rendered prompt becomes the projector's media marker, with the
tagged image in that place. An image whose tag the template dropped is not sent.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

_TAG = re.compile(r"\[img-(\d+)\]")


@dataclass(frozen=True)
class Image:
    """One image of a request: its bytes and the field it came in (for a 400 naming it)."""

    data: bytes
    field: str


def request_images(request: dict[str, Any], kind: str) -> list[Image]:
    """The request's images in Ollama's numbering: a generate's `images`, or every chat
    message's in turn."""
    if kind != "chat":
        return [Image(base64.b64decode(b64), f"images[{i}]")
                for i, b64 in enumerate(request.get("images") or [])]
    found = []
    for m, message in enumerate(request.get("messages") or []):
        for i, b64 in enumerate(message.get("images") or []):
            found.append(Image(base64.b64decode(b64), f"messages[{m}].images[{i}]"))
    return found


def tag_images(request: dict[str, Any], kind: str) -> dict[str, Any]:
    """A copy of the request whose texts carry their images' `[img-N]` tags."""
    if kind != "chat":
        return {**request, "prompt": _tagged(request.get("prompt") or "",
                                             len(request.get("images") or []), 0)}
    messages, n = [], 0
    for message in request.get("messages") or []:
        count = len(message.get("images") or [])
        if count:
            message = {**message, "content": _tagged(message.get("content") or "", count, n)}
        messages.append(message)
        n += count
    return {**request, "messages": messages}


def _tagged(text: str, count: int, first: int) -> str:
    prefix = ""
    for n in range(first, first + count):
        tag = f"[img-{n}]"
        if tag in text:
            continue  # placed by the text itself
        if "[img]" in text:
            text = text.replace("[img]", tag, 1)
        else:
            prefix += f"{tag} "
    return prefix + text


def place_images(prompt: str, images: list[Image], marker: str) -> tuple[str, list[Image]]:
    """The rendered prompt with each `[img-N]` of a real image turned into marker, and the
    images in the order their markers appear (an image may appear twice, or not at all)."""
    placed: list[Image] = []

    def mark(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if n >= len(images):
            return match.group(0)  # text that looks like a tag, for no image
        placed.append(images[n])
        return marker

    return _TAG.sub(mark, prompt), placed
