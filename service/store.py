"""The model store, laid out exactly as Ollama's: manifests + content-addressed blobs.

    <root>/manifests/<host>/<namespace>/<model>/<tag>   OCI-style JSON manifest
    <root>/blobs/sha256-<hex>                            GGUF weights, template, params, ...

Pointing CORRAL_MODELS at an existing ~/.ollama/models works as it is, and what corral writes
there Ollama reads back. Blobs are written to a temporary name, verified, then renamed, so a
failed write never leaves a blob under a digest it does not match.
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
from pathlib import Path
from typing import IO, Any

from service import gguf
from service.errors import InvalidRequest, ModelNotFound
from service.names import ModelName, name_from_manifest_path, parse_name

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
    size: int
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    license: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    adapters: list[Path] = field(default_factory=list)

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


class ModelStore:
    """Read and write models under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # blobs ---------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / check_digest(digest).replace(":", "-")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

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
            raise InvalidRequest(f"digest mismatch: expected {expected}, got {digest}")
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

    def import_file(self, path: Path) -> Layer:
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
        return Layer(MEDIA["model"], digest, path.stat().st_size)

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
    ) -> Model:
        """Write a manifest naming the model blob and text layers; return the resolved model."""
        model_name = parse_name(name) if isinstance(name, str) else name
        model_layer = Layer(MEDIA["model"], model_layer.digest, model_layer.size)
        layers = [model_layer]
        for kind, text in (("template", template), ("system", system)):
            if text is not None:
                layers.append(self.write_bytes(text.encode(), MEDIA[kind]))
        for text in license:
            layers.append(self.write_bytes(text.encode(), MEDIA["license"]))
        if parameters:
            layers.append(self.write_bytes(json.dumps(parameters).encode(), MEDIA["params"]))
        if messages:
            layers.append(self.write_bytes(json.dumps(messages).encode(), MEDIA["messages"]))
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
        return self.write_bytes(json.dumps(config).encode(), CONFIG_TYPE)

    def write_manifest(self, name: ModelName, config: Layer, layers: list[Layer]) -> None:
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        path = name.manifest_path(self.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".partial-" + path.name)
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, path)

    def resolve(self, name: str | ModelName) -> Model:
        """Find a model by name; ModelNotFound if there is no such manifest."""
        model_name = parse_name(name) if isinstance(name, str) else name
        path = model_name.manifest_path(self.root)
        if not path.is_file():
            raise ModelNotFound(name if isinstance(name, str) else name.display())
        return self._load(model_name, path)

    def _load(self, name: ModelName, path: Path) -> Model:
        raw = path.read_bytes()
        manifest = json.loads(raw)
        layers = [Layer(x["mediaType"], x["digest"], int(x["size"])) for x in manifest["layers"]]
        config_digest = manifest.get("config", {}).get("digest")
        config = {}
        if config_digest and self.has_blob(config_digest):
            config = json.loads(self.blob_path(config_digest).read_text())
        model = Model(
            name=name,
            digest=hashlib.sha256(raw).hexdigest(),
            modified_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
            layers=layers,
            config=config,
            model_path=Path(),
            size=sum(layer.size for layer in layers),
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
        elif kind in ("template", "system"):
            setattr(model, kind, path.read_text())
        elif kind == "license":
            model.license.append(path.read_text())
        elif kind == "params":
            model.parameters = json.loads(path.read_text())
        elif kind == "messages":
            model.messages = json.loads(path.read_text())

    def list(self) -> list[Model]:
        """Every model whose manifest parses, newest first."""
        base = self.root / "manifests"
        models = []
        if base.is_dir():
            for path in base.glob("*/*/*/*"):
                if not path.is_file() or path.name.startswith(".partial-"):
                    continue
                try:
                    models.append(self._load(name_from_manifest_path(self.root, path), path))
                except (InvalidRequest, ValueError, KeyError, OSError):
                    continue
        return sorted(models, key=lambda m: m.modified_at, reverse=True)

    def delete(self, name: str | ModelName) -> None:
        """Remove a manifest, then every blob no remaining manifest uses."""
        model = self.resolve(name)
        model.name.manifest_path(self.root).unlink()
        self.prune()

    def prune(self) -> None:
        """Delete blobs that no manifest references (Ollama does this on delete)."""
        used = set()
        for model in self.list():
            used.update(layer.digest for layer in model.layers)
            manifest = json.loads(model.name.manifest_path(self.root).read_text())
            used.add(manifest.get("config", {}).get("digest"))
        for blob in (self.root / "blobs").glob("sha256-*"):
            if blob.name.replace("-", ":", 1) not in used:
                blob.unlink(missing_ok=True)
