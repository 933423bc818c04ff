"""The model store, laid out exactly as Ollama's: manifests + content-addressed blobs.

    <root>/manifests/<host>/<namespace>/<model>/<tag>   OCI-style JSON manifest
    <root>/blobs/sha256-<hex>                            GGUF weights, template, params, ...

Pointing CORRAL_MODELS at an existing ~/.ollama/models works as it is, and what corral writes
there Ollama reads back. Blobs are written to a temporary name, verified, then renamed, so a
failed write never leaves a blob under a digest it does not match. Deleting a model removes
only its own blobs that no other manifest uses (as Ollama's deleteUnusedLayers), so a blob
uploaded for a create that has not happened yet survives.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from service.core.errors import InvalidRequest, ModelNotFound
from service.models import gguf
from service.models.capabilities import capabilities
from service.models.names import ModelName, name_from_manifest_path, parse_name

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MEDIA = {
    "model": "application/vnd.ollama.image.model",
    "template": "application/vnd.ollama.image.template",
    "system": "application/vnd.ollama.image.system",
    "params": "application/vnd.ollama.image.params",
    "license": "application/vnd.ollama.image.license",
    "messages": "application/vnd.ollama.image.messages",
    "adapter": "application/vnd.ollama.image.adapter",
    "projector": "application/vnd.ollama.image.projector",  # a vision model's mmproj GGUF
}
_CHUNK = 1 << 20


def digest_of_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Validate a "sha256:<64 hex>" digest (also accepting Ollama's "sha256-" file form)."""
    normalized = digest.replace("sha256-", "sha256:", 1)
    algo, _, hexpart = normalized.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise InvalidRequest(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return normalized


def _compact(value: Any) -> bytes:
    """JSON as Go's encoding/json writes it (no spaces), so digests read like Ollama's."""
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class Model:
    """A named model as the store resolves it: where its weights are and what layers say."""

    name: ModelName
    digest: str  # sha256 of the manifest, as Ollama's /api/tags shows it
    modified_at: datetime
    layers: list[Layer]
    config: dict[str, Any]
    model_path: Path
    size: int  # every layer plus the config blob, as Ollama's Manifest.Size()
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    license: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    adapters: list[Path] = field(default_factory=list)
    projectors: list[Path] = field(default_factory=list)

    def capabilities(self, meta: dict[str, Any] | None = None) -> list[str]:
        """What the model can do (completion, embedding, tools, thinking, vision, insert),
        from its GGUF header (`meta`, read from the weights when not given) and its template,
        as Ollama's /api/show and /api/tags report it and as requests are checked against."""
        if meta is None:
            return list(_capabilities_of(self.model_path, self.template, bool(self.projectors)))
        return capabilities(meta, self.template, bool(self.projectors))

    def details(self) -> dict[str, Any]:
        """Ollama's `details` object for /api/tags and /api/show."""
        return {
            "parent_model": "",
            "format": self.config.get("model_format", "gguf"),
            "family": self.config.get("model_family", ""),
            "families": self.config.get("model_families") or None,
            "parameter_size": self.config.get("model_type", ""),
            "quantization_level": self.config.get("file_type", ""),
        }

    def layer(self, kind: str) -> Layer | None:
        """The first layer of a kind ("model", "adapter", ...), or None."""
        return next((x for x in self.layers if x.media_type == MEDIA[kind]), None)


@lru_cache(maxsize=256)
def _capabilities_of(weights: Path, template: str | None, projector: bool) -> tuple[str, ...]:
    """Capabilities read from a weights blob once: blobs are named by their content, so a
    path's header never changes, and /api/tags asks for every model's on each call."""
    return tuple(capabilities(gguf.read_metadata(weights), template, projector))


class ModelStore:
    """Read and write models under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # blobs ---------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / check_digest(digest).replace(":", "-")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def partial_path(self, key: str) -> Path:
        """Where a resumable download of `key` (a digest, or a URL's hash) collects bytes.
        Never a valid blob name, so nothing reads it as a blob before it is verified."""
        name = key.replace(":", "-", 1) if key.startswith("sha256") else key
        return self.root / "blobs" / f"{name}.partial"

    def commit_blob(self, partial: Path, digest: str) -> Layer:
        """Give verified bytes their digest name (the caller has checked the digest)."""
        target = self.blob_path(digest)
        try:
            os.replace(partial, target)
        except FileNotFoundError:
            if not target.is_file():
                raise
            # another pull of the same blob committed it first
        return Layer("", check_digest(digest), target.stat().st_size)

    def write_blob(self, source: IO[bytes], expected: str | None = None) -> Layer:
        """Copy a stream into the store, verifying `expected` before the blob gets its name."""
        blobs = self.root / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        hasher, size = hashlib.sha256(), 0
        with tempfile.NamedTemporaryFile(dir=blobs, prefix=".partial-", delete=False) as tmp:
            try:
                while chunk := source.read(_CHUNK):
                    hasher.update(chunk)
                    tmp.write(chunk)
                    size += len(chunk)
            except BaseException:
                os.unlink(tmp.name)
                raise
        digest = "sha256:" + hasher.hexdigest()
        if expected is not None and check_digest(expected) != digest:
            os.unlink(tmp.name)
            raise InvalidRequest(f"digest mismatch, expected {expected!r}, got {digest!r}")
        os.replace(tmp.name, self.blob_path(digest))
        return Layer("", digest, size)

    def write_bytes(self, data: bytes, media_type: str) -> Layer:
        digest = digest_of_bytes(data)
        path = self.blob_path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(".partial-" + path.name)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return Layer(media_type, digest, len(data))

    def import_file(self, path: Path, media_type: str = MEDIA["model"]) -> Layer:
        """Add a local file as a blob: hard-linked when possible, else copied."""
        path = Path(path)
        hasher = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                hasher.update(chunk)
        digest = "sha256:" + hasher.hexdigest()
        target = self.blob_path(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(".partial-" + target.name)
            try:
                os.link(path, tmp)
            except OSError:
                shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        return Layer(media_type, digest, path.stat().st_size)

    # manifests -----------------------------------------------------------------------------
    def create(
        self,
        name: str | ModelName,
        model_layer: Layer,
        *,
        template: str | None = None,
        system: str | None = None,
        parameters: dict[str, Any] | None = None,
        license: Iterable[str] = (),
        messages: list[dict[str, str]] | None = None,
        adapters: Iterable[Layer] = (),
        projectors: Iterable[Layer] = (),
    ) -> Model:
        """Write a manifest naming the model blob, adapters, projectors and text layers;
        return the model."""
        model_name = self.existing_name(name)
        model_layer = Layer(MEDIA["model"], model_layer.digest, model_layer.size)
        layers = [model_layer]
        layers += [Layer(MEDIA["adapter"], a.digest, a.size) for a in adapters]
        layers += [Layer(MEDIA["projector"], p.digest, p.size) for p in projectors]
        for kind, text in (("template", template), ("system", system)):
            if text is not None:
                layers.append(self.write_bytes(text.encode(), MEDIA[kind]))
        for text in license:
            layers.append(self.write_bytes(text.encode(), MEDIA["license"]))
        if parameters:
            layers.append(self.write_bytes(_compact(parameters), MEDIA["params"]))
        if messages:
            layers.append(self.write_bytes(_compact(messages), MEDIA["messages"]))
        config = self._config(self.blob_path(model_layer.digest), layers)
        self.write_manifest(model_name, config, layers)
        return self.resolve(model_name)

    def _config(self, gguf_path: Path, layers: list[Layer]) -> Layer:
        try:
            meta = gguf.read_metadata(gguf_path)
        except (ValueError, OSError) as exc:
            raise InvalidRequest(f"model file is not a usable GGUF: {exc}") from None
        details = gguf.details(meta, gguf_path.stat().st_size)
        config = {
            "model_format": details.get("format", "gguf"),
            "model_family": details.get("family", ""),
            "model_families": details.get("families") or [],
            "model_type": details.get("parameter_size", ""),
            "file_type": details.get("quantization_level", ""),
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        }
        return self.write_bytes(_compact(config), CONFIG_TYPE)

    def write_manifest(self, name: ModelName, config: Layer, layers: list[Layer]) -> None:
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        self.write_manifest_bytes(name, _compact(manifest))

    def write_manifest_bytes(self, name: ModelName, raw: bytes) -> None:
        """Name a model by writing its manifest last, atomically: readers see all or nothing.
        Blobs only the replaced manifest used are removed, as Ollama does."""
        name = self.existing_name(name)
        old = self._digests_of(name)
        path = name.manifest_path(self.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".partial-" + path.name)
        tmp.write_bytes(raw)
        os.replace(tmp, path)
        self._remove_unused(old)

    def existing_name(self, name: str | ModelName) -> ModelName:
        """The stored spelling of a name that differs only in case, else the name itself
        (Ollama's getExistingName: names compare case-insensitively)."""
        model_name = parse_name(name) if isinstance(name, str) else name
        if model_name.manifest_path(self.root).is_file():
            return model_name
        return next((found for found, _ in self._manifests() if found == model_name), model_name)

    def resolve(self, name: str | ModelName) -> Model:
        """Find a model by name, ignoring case; ModelNotFound if there is no such manifest."""
        model_name = self.existing_name(name)
        path = model_name.manifest_path(self.root)
        if not path.is_file():
            raise ModelNotFound(name if isinstance(name, str) else name.display())
        return self._load(model_name, path)

    def _load(self, name: ModelName, path: Path) -> Model:
        raw = path.read_bytes()
        manifest = json.loads(raw)
        layers = [Layer(x["mediaType"], x["digest"], int(x["size"])) for x in manifest["layers"]]
        config_ref = manifest.get("config") or {}
        config = {}
        if config_ref.get("digest") and self.has_blob(config_ref["digest"]):
            config = json.loads(self.blob_path(config_ref["digest"]).read_text())
        model = Model(
            name=name,
            digest=hashlib.sha256(raw).hexdigest(),
            modified_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
            layers=layers,
            config=config,
            model_path=Path(),
            size=sum(layer.size for layer in layers) + int(config_ref.get("size") or 0),
        )
        for layer in layers:
            self._apply_layer(model, layer)
        return model

    def _apply_layer(self, model: Model, layer: Layer) -> None:
        path = self.blob_path(layer.digest)
        kind = layer.media_type.rsplit(".", 1)[-1]
        if kind == "model":
            model.model_path = path
        elif kind == "adapter":
            model.adapters.append(path)
        elif kind == "projector":
            model.projectors.append(path)
        elif kind in ("template", "prompt"):  # "prompt" is the template's pre-0.1 name
            model.template = path.read_text()
        elif kind == "system":
            model.system = path.read_text()
        elif kind == "license":
            model.license.append(path.read_text())
        elif kind == "params":
            model.parameters = json.loads(path.read_text())
        elif kind == "messages":
            model.messages = json.loads(path.read_text())

    def _manifests(self) -> list[tuple[ModelName, Path]]:
        """Every manifest file whose path is a valid name (Ollama globs */*/*/* too)."""
        base = self.root / "manifests"
        found = []
        for path in base.glob("*/*/*/*") if base.is_dir() else ():
            if not path.is_file() or path.name.startswith(".partial-"):
                continue
            try:
                found.append((name_from_manifest_path(self.root, path), path))
            except InvalidRequest:
                continue
        return found

    def list(self) -> list[Model]:
        """Every model whose manifest parses, newest first."""
        models = []
        for name, path in self._manifests():
            try:
                models.append(self._load(name, path))
            except (ValueError, KeyError, TypeError, OSError):
                continue
        return sorted(models, key=lambda m: m.modified_at, reverse=True)

    def copy(self, source: str | ModelName, destination: str | ModelName) -> Model:
        """Give a model a second name: the manifest's bytes copied, blobs shared (Ollama's cp)."""
        src = self.resolve(source)
        raw = src.name.manifest_path(self.root).read_bytes()
        dst = self.existing_name(destination)
        if dst == src.name:
            return src
        self.write_manifest_bytes(dst, raw)
        return self.resolve(dst)

    def delete(self, name: str | ModelName) -> None:
        """Remove a manifest, then those of its blobs no remaining manifest uses."""
        model = self.resolve(name)
        digests = self._digests_of(model.name)
        path = model.name.manifest_path(self.root)
        path.unlink()
        self._remove_empty_dirs(path.parent)
        self._remove_unused(digests)

    def _digests_of(self, name: ModelName) -> set[str]:
        """The layer and config digests a name's manifest refers to (empty if none)."""
        path = name.manifest_path(self.root)
        try:
            return _referenced(json.loads(path.read_bytes()))
        except (OSError, ValueError):
            return set()

    def _used(self) -> set[str]:
        """Every digest any manifest refers to, read from the manifests alone."""
        used: set[str] = set()
        for _, path in self._manifests():
            try:
                used |= _referenced(json.loads(path.read_bytes()))
            except (OSError, ValueError):
                continue
        return used

    def _remove_unused(self, candidates: set[str]) -> None:
        for digest in candidates - self._used():
            try:
                self.blob_path(digest).unlink(missing_ok=True)
            except InvalidRequest:
                continue

    def _remove_empty_dirs(self, directory: Path) -> None:
        """Remove now-empty model/namespace/host directories, as Ollama's PruneDirectory."""
        base = self.root / "manifests"
        while directory != base and base in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


def _referenced(manifest: dict[str, Any]) -> set[str]:
    digests = {layer.get("digest") for layer in manifest.get("layers") or []}
    digests.add((manifest.get("config") or {}).get("digest"))
    return {d for d in digests if isinstance(d, str)}
