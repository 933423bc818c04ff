"""Push a model from the store to an Ollama/OCI registry (Docker Registry HTTP API v2).

The model's name says where it goes (`host/namespace/model:tag`, a mirror in
CORRAL_REGISTRY_MIRRORS standing in for the host, as for pulls). Each layer and the config is
offered by digest: a blob the registry has (HEAD 200) is not sent again; any other is uploaded
whole (POST .../blobs/uploads/ for a Location, then PUT <location>?digest=<digest>). The
manifest goes last, so the registry names the model only once every blob it needs is there.

Progress is Ollama's: "retrieving manifest", "pushing <digest prefix>" with digest, total and
completed, "pushing manifest"; the caller says "success" when the job has ended.

A registry that answers 401 with a `Bearer` challenge is asked for an anonymous token (the
Docker token flow) and the request is made again with it; corral holds no registry
credentials, so a registry that wants them refuses the push with a message saying so.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlencode, urljoin, urlsplit

from service.core.errors import CorralError, InvalidRequest, ModelNotFound
from service.core.version import __version__
from service.models.download import Progress
from service.models.names import ModelName
from service.models.registry import Endpoints
from service.models.store import MANIFEST_TYPE, ModelStore

_TIMEOUT = 60.0  # seconds a registry may stay silent before the push is reported as stalled
_REPORT_EVERY = 0.1  # seconds between progress updates of one blob
_REPORT_STEPS = 20  # and one per 1/20 of it, however fast it goes (as downloads report)
_BLOCK = 1 << 20
_PARAM = re.compile(r'(\w+)="([^"]*)"')  # a scope holds commas, so split on the quotes

Body = bytes | Callable[[], IO[bytes]] | None  # a callable opens a (large) body afresh


def push(name: str, store: ModelStore, progress: Progress, *, insecure: bool = False,
         endpoints: Endpoints | None = None) -> ModelName:
    """Send the stored model `name` to the registry its name names; return the name."""
    model_name = store.existing_name(name)
    path = model_name.manifest_path(store.root)
    if not path.is_file():
        raise ModelNotFound(name)
    progress({"status": "retrieving manifest"})
    raw = path.read_bytes()
    base = (endpoints or Endpoints()).registry(model_name.host, insecure)
    registry = Registry(model_name, base, insecure)
    for digest, size in manifest_blobs(raw):
        _push_blob(registry, store, digest, size, progress)
    progress({"status": "pushing manifest"})
    registry.send("PUT", registry.url(f"manifests/{model_name.tag}"), raw,
                  {"Content-Type": MANIFEST_TYPE})
    return model_name


def manifest_blobs(raw: bytes) -> list[tuple[str, int]]:
    """(digest, size) of every layer, then the config: the order Ollama uploads them."""
    manifest = json.loads(raw)
    entries = list(manifest.get("layers") or [])
    if (manifest.get("config") or {}).get("digest"):
        entries.append(manifest["config"])
    return [(str(entry["digest"]), int(entry["size"])) for entry in entries]


def _push_blob(registry: Registry, store: ModelStore, digest: str, size: int,
               progress: Progress) -> None:
    """Upload one blob unless the registry has it; report it complete either way."""
    update = {"status": f"pushing {digest[7:19]}", "digest": digest, "total": size}
    if registry.has_blob(digest):
        progress(update | {"completed": size})
        return
    if not store.has_blob(digest):
        raise CorralError(f"push {registry.name.display()}: blob {digest} of its manifest is "
                          "missing from the store")
    location = registry.start_upload()
    separator = "&" if "?" in location else "?"
    target = f"{location}{separator}{urlencode({'digest': digest})}"
    path = store.blob_path(digest)
    registry.send("PUT", target, lambda: _Reporting(path.open("rb"), update, progress),
                  {"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    progress(update | {"completed": size})


@dataclass
class Registry:
    """One repository of a registry, and the token it gave this push (if it asked for one)."""

    name: ModelName
    base: str  # the registry's base URL: scheme://host[:port], or its mirror
    insecure: bool
    token: str | None = None

    def url(self, rest: str) -> str:
        return f"{self.base}/v2/{self.name.namespace}/{self.name.model}/{rest}"

    def has_blob(self, digest: str) -> bool:
        """Whether the repository holds the blob (HEAD 200; 404 is no)."""
        return self.send("HEAD", self.url(f"blobs/{digest}"), ok=(200, 404)).status == 200

    def start_upload(self) -> str:
        """Open an upload session; return its absolute Location."""
        answer = self.send("POST", self.url("blobs/uploads/"), b"", ok=(202,))
        location = answer.headers.get("Location")
        if not location:
            raise self._error("POST", "blobs/uploads/", "answered 202 without a Location")
        return urljoin(self.base + "/", location)

    def send(self, method: str, url: str, body: Body = None,
             headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201, 202)):
        """Make one request; on a Bearer challenge get a token and make it once more."""
        status, answer = self._once(method, url, body, headers)
        if status == 401 and self.token is None:
            challenge = answer.headers.get("WWW-Authenticate", "")
            if challenge.lower().startswith("bearer "):
                self.token = self._fetch_token(challenge)
                status, answer = self._once(method, url, body, headers)
        if status not in ok:
            raise self._refused(method, url, status, answer)
        return answer

    def _once(self, method: str, url: str, body: Body, headers: dict[str, str] | None):
        """(status, response) of one request; an HTTP error status is an answer, not a raise."""
        self._check_scheme(url)
        data = body() if callable(body) else body
        request = urllib.request.Request(url, data=data, method=method, headers={
            "User-Agent": f"corral/{__version__}", **(headers or {}), **self._auth(url)})
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as answer:
                answer.read(1 << 20)
                return answer.status, answer
        except urllib.error.HTTPError as exc:
            exc.body = exc.read(4096)  # the registry's explanation, for the error message
            exc.close()
            return exc.code, exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CorralError(f"push {self.name.display()}: could not connect to the registry "
                              f"{self.name.host} ({self.base}): {reason}") from None
        finally:
            if hasattr(data, "close"):
                data.close()

    def _auth(self, url: str) -> dict[str, str]:
        """The token goes only to the registry itself, never to another host it points at."""
        if self.token and _origin(url) == _origin(self.base):
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def _check_scheme(self, url: str) -> None:
        if url.startswith("http://") and not self.insecure:
            raise InvalidRequest(f"insecure protocol http: {url} needs 'insecure' to push over "
                                 "plain http")
        if not url.startswith(("http://", "https://")):
            raise InvalidRequest(f"invalid registry URL {url!r}: expected http:// or https://")

    def _fetch_token(self, challenge: str) -> str:
        """An anonymous token from the challenge's realm (the Docker token flow)."""
        params = _challenge_params(challenge)
        realm = params.pop("realm", "")
        params.setdefault("scope", f"repository:{self.name.namespace}/{self.name.model}:"
                                   "pull,push")
        self._check_scheme(realm)
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(params)}"
        request = urllib.request.Request(url, headers={"User-Agent": f"corral/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as answer:
                reply = json.loads(answer.read(1 << 20))
        except urllib.error.HTTPError as exc:
            exc.close()
            raise CorralError(f"push {self.name.display()}: the registry {self.name.host} "
                              f"wants credentials, and its token service {realm} answered "
                              f"{exc.code} {exc.reason} (corral signs in to no registry)"
                              ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CorralError(f"push {self.name.display()}: no token from {realm}: "
                              f"{getattr(exc, 'reason', exc)}") from None
        token = (reply.get("token") or reply.get("access_token")) if isinstance(reply, dict) \
            else None
        if not isinstance(token, str) or not token:
            raise CorralError(f"push {self.name.display()}: {realm} sent no token")
        return token

    def _refused(self, method: str, url: str, status: int, answer: Any) -> CorralError:
        reason = getattr(answer, "reason", "") or ""
        detail = _registry_errors(getattr(answer, "body", b""))
        what = f"answered {status} {reason}".rstrip() + (f": {detail}" if detail else "")
        if status == 401:
            what += " (it wants credentials; corral signs in to no registry)"
        return self._error(method, urlsplit(url).path, what)

    def _error(self, method: str, path: str, what: str) -> CorralError:
        return CorralError(f"push {self.name.display()}: the registry {self.name.host} "
                           f"{what} ({method} {path})")


class _Reporting:
    """A blob's file as a request body, reporting how much has been sent as it is read."""

    def __init__(self, file: IO[bytes], update: dict[str, Any], progress: Progress) -> None:
        self.file, self.update, self.progress = file, update, progress
        self.sent, self._reported, self._reported_bytes = 0, 0.0, 0
        self._step = int(update["total"]) // _REPORT_STEPS

    def read(self, size: int = -1) -> bytes:
        chunk = self.file.read(_BLOCK if size is None or size < 0 else max(size, _BLOCK))
        self.sent += len(chunk)
        now = time.monotonic()
        stepped = self._step > 0 and self.sent - self._reported_bytes >= self._step
        if chunk and (stepped or now - self._reported >= _REPORT_EVERY):
            self._reported, self._reported_bytes = now, self.sent
            self.progress(self.update | {"completed": self.sent})
        return chunk

    def close(self) -> None:
        self.file.close()


def _challenge_params(challenge: str) -> dict[str, str]:
    """The key="value" pairs of a `Bearer realm="...",service="...",scope="..."` header."""
    return {key.lower(): value for key, value in _PARAM.findall(challenge)}


def _registry_errors(body: bytes) -> str:
    """The `errors` a registry explains itself with (OCI's error body), else its text."""
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)
    except (ValueError, AttributeError, TypeError):
        return body.decode("utf-8", "replace").strip()[:200]


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()
