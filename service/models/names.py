"""Ollama model names: `[host/][namespace/]model[:tag]`, checked before they touch the disk.

The rules follow Ollama's types/model/name.go: a name is at most 128 characters, each part
uses only ASCII letters, digits, `_`, `-` and `.` (no `.` in the namespace), `..` never
appears, and missing parts default to `registry.ollama.ai`, `library` and `latest`.
Comparison ignores case, as Ollama's `EqualFold` does; the case typed is kept for display.

Corral is a little stricter than Ollama where the name becomes a path: every part must begin
with a letter, digit or `_` (so `.` or `-` alone can never be a directory), and the build
(`+Q4_0`) and digest (`@sha256-...`) suffixes, and tags that look like blob digests, are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from service.core.errors import InvalidRequest

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 128  # Ollama's MaxNamePartLen, which it applies to the whole string too

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_HOST_PORT = re.compile(r":[0-9]{1,5}$")
_DIGEST_TAG = re.compile(r"sha256[-:]?[0-9a-f]+", re.IGNORECASE)


@dataclass(frozen=True, eq=False)
class ModelName:
    """A complete model name; equal to another when the parts match ignoring case."""

    host: str
    namespace: str
    model: str
    tag: str

    def display(self) -> str:
        """Return the name as `ollama list` shows it: defaults left out, the tag always kept."""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    def manifest_path(self, root: Path) -> Path:
        """Return where this model's manifest lives under the store root, Ollama's layout."""
        return root / "manifests" / self.host / self.namespace / self.model / self.tag

    def _folded(self) -> tuple[str, str, str, str]:
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelName):
            return NotImplemented
        return self._folded() == other._folded()

    def __hash__(self) -> int:
        return hash(self._folded())

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"


def parse_name(text: str) -> ModelName:
    """Parse and validate a user-supplied model name, filling in Ollama's defaults."""
    if not isinstance(text, str):
        raise InvalidRequest("invalid model name: expected a string")
    raw = text.strip()
    for scheme in ("http://", "https://"):
        if raw.startswith(scheme):
            raw = raw[len(scheme) :]
            break
    if not raw:
        raise InvalidRequest("invalid model name: the name is empty")
    if len(raw) > MAX_NAME_LENGTH:
        raise _invalid(text, f"longer than {MAX_NAME_LENGTH} characters")
    if "@" in raw or "+" in raw:
        raise _invalid(text, "digest and build suffixes are not supported")
    segments = raw.split("/")
    if len(segments) > 3:
        raise _invalid(text, "expected at most host/namespace/model:tag")
    model, tag = _split_tag(text, segments[-1])
    namespace = segments[-2] if len(segments) >= 2 else DEFAULT_NAMESPACE
    host = segments[-3] if len(segments) == 3 else DEFAULT_HOST
    name = ModelName(host=host, namespace=namespace, model=model, tag=tag)
    _validate(text, name)
    return name


def name_from_manifest_path(root: Path, path: Path) -> ModelName:
    """Recover the name a manifest file was stored under; the inverse of `manifest_path`."""
    try:
        parts = Path(path).relative_to(Path(root) / "manifests").parts
    except ValueError:
        raise InvalidRequest(f"invalid model name: {path} is not under {root}/manifests") from None
    if len(parts) != 4:
        raise InvalidRequest(f"invalid model name: {path} is not host/namespace/model/tag")
    name = ModelName(*parts)
    _validate(str(name), name)
    return name


def _split_tag(text: str, last: str) -> tuple[str, str]:
    """Split `model[:tag]`; a second colon is an error, as in Ollama."""
    if last.count(":") > 1:
        raise _invalid(text, "more than one ':'")
    model, sep, tag = last.partition(":")
    if sep and not tag:
        raise _invalid(text, "the tag after ':' is empty")
    return model, tag or DEFAULT_TAG


def _validate(text: str, name: ModelName) -> None:
    """Check each part against Ollama's character rules and corral's path-safety rules."""
    for label, part in (
        ("host", name.host),
        ("namespace", name.namespace),
        ("model", name.model),
        ("tag", name.tag),
    ):
        if not part:
            raise _invalid(text, f"the {label} is empty")
        if len(part) > MAX_NAME_LENGTH:
            raise _invalid(text, f"the {label} is longer than {MAX_NAME_LENGTH} characters")
        if ".." in part:
            raise _invalid(text, f"the {label} contains '..'")
        # A registry host may carry a port (localhost:5000), as in Ollama.
        bare = _HOST_PORT.sub("", part) if label == "host" else part
        if not _PART.fullmatch(bare):
            raise _invalid(text, f"the {label} {part!r} may use only A-Z a-z 0-9 _ - .")
    if "." in name.namespace:
        raise _invalid(text, "the namespace may not contain '.'")
    if _DIGEST_TAG.fullmatch(name.tag):
        raise _invalid(text, "the tag looks like a blob digest")


def _invalid(text: str, reason: str) -> InvalidRequest:
    return InvalidRequest(f"invalid model name {text!r}: {reason}")
