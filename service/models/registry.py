"""Pull a model into the store from where Ollama users find models.

The name picks the source:
- `https://…/file.gguf` (optionally ending `#sha256=<hex>`): one GGUF file from a web server,
  stored as `<file name without .gguf>:latest`.
- `hf.co/<user>/<repo>[:<quant>]` (or huggingface.co): the repository's GGUF file whose name
  carries the quantization (Q4_K_M when no tag is given), found through the Hub's file list.
- any other name: an Ollama/OCI registry, `/v2/<namespace>/<model>/manifests/<tag>`, then
  each layer by digest from `/v2/<namespace>/<model>/blobs/<digest>`.

Each reports Ollama's progress lines ("pulling manifest", "pulling <digest prefix>" with
digest/total/completed, "verifying sha256 digest", "writing manifest"); the caller says
"success" when the whole job has ended. Files download to resumable partials
(service.models.download); every one is verified before any is given its name, and the manifest is
written last, so a failed pull leaves the store as it was and the next one resumes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from service.core.errors import CorralError, InvalidRequest, NotFound
from service.core.settings import Settings
from service.models import gguf
from service.models.download import Progress, Remote, Staged, fetch, open_url
from service.models.names import ModelName, parse_name
from service.models.store import MANIFEST_TYPE, MEDIA, Layer, ModelStore, check_digest

HF_HOSTS = ("hf.co", "huggingface.co")
DEFAULT_QUANT = "Q4_K_M"  # what the Hub serves Ollama for a repository pulled without a tag
_MAX_MANIFEST = 4 << 20


@dataclass(frozen=True)
class Endpoints:
    """Where names lead: registry hosts served from another base URL, and the Hub's address."""

    mirrors: Mapping[str, str] = field(default_factory=dict)  # host -> base URL
    hf: str = "https://huggingface.co"

    @classmethod
    def from_settings(cls, settings: Settings) -> Endpoints:
        return cls(dict(settings.registry_mirrors), settings.hf_endpoint.rstrip("/"))

    def registry(self, host: str, insecure: bool) -> str:
        """The base URL of a registry host: its mirror, else https (http when insecure)."""
        mirror = self.mirrors.get(host.lower())
        if mirror:
            return mirror.rstrip("/")
        return f"{'http' if insecure else 'https'}://{host}"


def is_url(name: str) -> bool:
    """True for a plain web address of a GGUF file (not a registry name)."""
    return name.startswith(("http://", "https://")) and \
        urlsplit(name).path.lower().endswith(".gguf")


def pull(name: str, store: ModelStore, progress: Progress, *, insecure: bool = False,
         endpoints: Endpoints | None = None) -> ModelName:
    """Download `name` into `store`, reporting progress; return the name it is stored under."""
    endpoints = endpoints or Endpoints()
    if is_url(name):
        return _pull_url(name, store, progress, insecure)
    model_name = parse_name(name)
    if model_name.host.lower() in HF_HOSTS:
        return _pull_hf(model_name, store, progress, insecure, endpoints.hf)
    return _pull_registry(model_name, store, progress, insecure, endpoints)


# Ollama/OCI registry -------------------------------------------------------------------------
def _pull_registry(name: ModelName, store: ModelStore, progress: Progress, insecure: bool,
                   endpoints: Endpoints) -> ModelName:
    base = f"{endpoints.registry(name.host, insecure)}/v2/{name.namespace}/{name.model}"
    progress({"status": "pulling manifest"})
    raw = _read_manifest(f"{base}/manifests/{name.tag}", name, insecure)
    remotes = [Remote(f"{base}/blobs/{digest}", digest, size, digest[7:19])
               for digest, size in _manifest_blobs(raw)]
    staged = _download(store, remotes, progress, insecure)
    _verify(staged, progress)
    for item in staged:
        if not item.committed:
            store.commit_blob(item.partial, item.digest)
    progress({"status": "writing manifest"})
    store.write_manifest_bytes(name, raw)
    return store.existing_name(name)


def _read_manifest(url: str, name: ModelName, insecure: bool) -> bytes:
    try:
        response = open_url(url, insecure, {"Accept": MANIFEST_TYPE})
    except NotFound:
        raise NotFound(f"pull model manifest: file does not exist: {name.display()} is not in "
                       f"the registry {name.host}") from None
    with response:
        raw = response.read(_MAX_MANIFEST + 1)
    if len(raw) > _MAX_MANIFEST:
        raise CorralError(f"pull model manifest: {url} is larger than a manifest can be")
    return raw


def _manifest_blobs(raw: bytes) -> list[tuple[str, int]]:
    """(digest, size) of every layer and the config, checked before anything is fetched."""
    try:
        manifest = json.loads(raw)
        entries = list(manifest["layers"])
        config = manifest.get("config") or {}
        if config.get("digest"):
            entries.append(config)
        blobs = [(check_digest(e["digest"]), int(e["size"])) for e in entries]
    except (ValueError, KeyError, TypeError, AttributeError, InvalidRequest) as exc:
        detail = getattr(exc, "message", None) or exc
        raise CorralError(f"pull model manifest: the registry sent an invalid manifest: "
                          f"{detail}") from None
    if not blobs:
        raise CorralError("pull model manifest: the manifest names no layers")
    return blobs


def _download(store: ModelStore, remotes: list[Remote], progress: Progress,
              insecure: bool) -> list[Staged]:
    """Fetch every blob the store lacks; report the ones it has as complete (Ollama does)."""
    staged = []
    for remote in remotes:
        digest = remote.digest or ""
        if digest and store.has_blob(digest):
            size = store.blob_path(digest).stat().st_size
            progress({"status": f"pulling {remote.label}", "digest": digest,
                      "total": size, "completed": size})
            continue
        staged.append(fetch(store, remote, digest or _url_key(remote.url), progress,
                            insecure=insecure))
    return staged


def _verify(staged: list[Staged], progress: Progress) -> None:
    """Compare every download with its published digest; a bad one is thrown away."""
    progress({"status": "verifying sha256 digest"})
    for item in staged:
        expected = item.remote.digest
        if expected and item.digest != expected:
            item.partial.unlink(missing_ok=True)
            raise CorralError(f"digest mismatch, file must be downloaded again: want {expected}, "
                              f"got {item.digest}")


# Hugging Face --------------------------------------------------------------------------------
def _pull_hf(name: ModelName, store: ModelStore, progress: Progress, insecure: bool,
             endpoint: str) -> ModelName:
    repo = f"{name.namespace}/{name.model}"
    progress({"status": "pulling manifest"})
    try:
        response = open_url(f"{endpoint}/api/models/{repo}/tree/main?recursive=true", insecure)
    except NotFound:
        raise NotFound(f"pull model manifest: file does not exist: {name.display()}") from None
    with response:
        files = json.loads(response.read())
    entry = pick_gguf(files, name)
    lfs = entry.get("lfs") or {}
    digest = check_digest(f"sha256:{lfs['oid']}") if lfs.get("oid") else None
    path = str(entry["path"])
    label = digest[7:19] if digest else path
    url = f"{endpoint}/{repo}/resolve/main/{quote(path)}"
    return _pull_file(name, Remote(url, digest, entry.get("size"), label), store, progress,
                      insecure)


def pick_gguf(files: list[dict], name: ModelName) -> dict:
    """The file a quantization tag names (Q4_K_M for "latest", else the first GGUF)."""
    ggufs = sorted((f for f in files if isinstance(f, dict) and f.get("type", "file") == "file"
                    and str(f.get("path", "")).lower().endswith(".gguf")
                    and "mmproj" not in str(f["path"]).lower()), key=lambda f: f["path"])
    if not ggufs:
        raise NotFound(f"{name.display()}: the repository has no GGUF file")
    latest = name.tag.lower() == "latest"
    quant = DEFAULT_QUANT if latest else name.tag
    pattern = re.compile(rf"(^|[-._/]){re.escape(quant)}(?=[-.]|$)", re.IGNORECASE)
    matches = [f for f in ggufs if pattern.search(str(f["path"])[:-5])]
    if matches:
        return matches[0]
    if latest:
        return ggufs[0]
    names = ", ".join(str(f["path"]) for f in ggufs)
    raise NotFound(f"{name.display()}: no GGUF file for quantization {name.tag!r}; "
                   f"the repository has {names}")


# Plain URL -----------------------------------------------------------------------------------
def _pull_url(url: str, store: ModelStore, progress: Progress, insecure: bool) -> ModelName:
    parts = urlsplit(url)
    digest = None
    if parts.fragment.startswith("sha256="):
        digest = check_digest("sha256:" + parts.fragment[len("sha256="):].lower())
    filename = unquote(parts.path.rsplit("/", 1)[-1])
    remote = Remote(urlunsplit(parts._replace(fragment="")), digest, None,
                    digest[7:19] if digest else filename)
    return _pull_file(name_for_file(filename), remote, store, progress, insecure)


def name_for_file(filename: str) -> ModelName:
    """A model name for a downloaded file: its name without .gguf, tag latest."""
    stem = filename[:-5] if filename.lower().endswith(".gguf") else filename
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).replace("..", ".")
    stem = re.sub(r"^[^A-Za-z0-9_]+", "", stem)[:100] or "model"
    return parse_name(f"{stem}:latest")


def _pull_file(name: ModelName, remote: Remote, store: ModelStore, progress: Progress,
               insecure: bool) -> ModelName:
    """Fetch one GGUF, verify it, name it, and write a manifest for it."""
    staged = _download(store, [remote], progress, insecure)
    _verify(staged, progress)
    for item in staged:
        if not item.committed:
            _check_gguf(item)
            store.commit_blob(item.partial, item.digest)
    digest = staged[0].digest if staged else str(remote.digest)
    progress({"status": "writing manifest"})
    layer = Layer(MEDIA["model"], digest, store.blob_path(digest).stat().st_size)
    return store.create(name, layer).name


def _check_gguf(item: Staged) -> None:
    try:
        gguf.read_metadata(item.partial)
    except (ValueError, OSError) as exc:
        item.partial.unlink(missing_ok=True)
        raise InvalidRequest(f"{item.remote.url} is not a usable GGUF file: {exc}") from None


def _url_key(url: str) -> str:
    """The partial-file name of a download whose digest is not known in advance."""
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:32]
