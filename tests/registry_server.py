"""A loopback Ollama registry, Hugging Face-style Hub and plain file server for pull tests.

It speaks the parts of each protocol corral uses: `/v2/<ns>/<model>/manifests/<tag>` and
`/v2/<ns>/<model>/blobs/<digest>`; `/api/models/<user>/<repo>/tree/main` and
`/<user>/<repo>/resolve/main/<file>`; any other path as a file. Every file honours Range
requests. Faults are switched on per test: `cut_after` closes each response after that many
body bytes, `corrupt` flips one byte of the named digests' or paths' content, and
`ignore_range` answers every Range request with the whole file.

It also takes pushes: POST `/v2/<ns>/<model>/blobs/uploads/` answers 202 with a Location, PUT
to that location with `?digest=` keeps the body as that blob if its sha256 matches (400
otherwise), PUT `/v2/<ns>/<model>/manifests/<tag>` keeps the manifest. `refuse` maps a method
to the status it answers every such request with; `token` makes every /v2/ request without
`Authorization: Bearer <token>` a 401 challenge pointing at GET /token, which hands it out.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_TYPE = "application/vnd.ollama.image.model"
_CHUNK = 1 << 20

Content = Path | bytes


@cache
def sha256_of(path: Path) -> str:
    """The digest of a (large) file, computed once per test session."""
    hasher = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def digest_of(content: Content) -> str:
    if isinstance(content, Path):
        return sha256_of(content)
    return "sha256:" + hashlib.sha256(content).hexdigest()


def size_of(content: Content) -> int:
    return content.stat().st_size if isinstance(content, Path) else len(content)


@dataclass
class Seen:
    """One request the server answered."""

    method: str
    path: str
    range: str | None
    status: int = 0
    sent: int = 0  # body bytes written
    received: int = 0  # body bytes read (an upload)


@dataclass
class Loopback:
    """The server's content, faults and request log; start() serves it on 127.0.0.1."""

    manifests: dict[str, bytes] = field(default_factory=dict)  # "ns/model:tag" -> JSON
    blobs: dict[str, Content] = field(default_factory=dict)  # digest -> content
    files: dict[str, Content] = field(default_factory=dict)  # URL path -> content
    trees: dict[str, list[dict]] = field(default_factory=dict)  # "user/repo" -> listing
    cut_after: int | None = None
    corrupt: set[str] = field(default_factory=set)
    ignore_range: bool = False
    refuse: dict[str, int] = field(default_factory=dict)  # method -> status it answers
    token: str | None = None
    uploads: set[str] = field(default_factory=set)  # open upload sessions
    seen: list[Seen] = field(default_factory=list)

    def start(self) -> Loopback:
        handler = type("Handler", (_Handler,), {"loopback": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # content -----------------------------------------------------------------------------
    def add_model(self, repo: str, tag: str, weights: Content,
                  text_layers: dict[str, str] | None = None) -> dict:
        """Publish an Ollama model (weights + e.g. {"template": ...}); return its manifest."""
        layers = [self._blob(weights, MODEL_TYPE)]
        for kind, text in (text_layers or {}).items():
            layers.append(self._blob(text.encode(), f"application/vnd.ollama.image.{kind}"))
        config = {"model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
                  "model_type": "", "file_type": "", "architecture": "amd64", "os": "linux",
                  "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]}}
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                    "config": self._blob(json.dumps(config).encode(), CONFIG_TYPE),
                    "layers": layers}
        self.manifests[f"{repo}:{tag}"] = json.dumps(manifest).encode()
        return manifest

    def _blob(self, content: Content, media_type: str) -> dict:
        digest = digest_of(content)
        self.blobs[digest] = content
        return {"mediaType": media_type, "digest": digest, "size": size_of(content)}

    def add_hf_repo(self, repo: str, files: dict[str, Content]) -> None:
        """Publish files in a Hub repository, GGUFs listed with their LFS sha256."""
        listing = []
        for name, content in files.items():
            self.files[f"/{repo}/resolve/main/{name}"] = content
            oid = digest_of(content)[len("sha256:"):]
            listing.append({"type": "file", "path": name, "size": size_of(content),
                            "oid": "0" * 40, "lfs": {"oid": oid, "size": size_of(content)}})
        self.trees[repo] = listing

    def bodies_sent(self, path_part: str) -> list[Seen]:
        return [s for s in self.seen if path_part in s.path and s.method == "GET"]

    def log(self) -> list[str]:
        """Every request as `METHOD path -> status`, upload ids and digests shortened."""
        def short(path: str) -> str:
            path = re.sub(r"uploads/[0-9a-f]{32}", "uploads/<id>", path)
            return re.sub(r"sha256(:|%3A)([0-9a-f]{12})[0-9a-f]{52}", r"sha256\1\2…", path)
        return [f"{s.method} {short(s.path)} -> {s.status}" for s in self.seen]


class _Handler(BaseHTTPRequestHandler):
    loopback: Loopback

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_POST(self) -> None:
        seen = self._seen()
        if self._refused(seen):
            return
        if not re.fullmatch(r"/v2/(.+)/blobs/uploads/", self.path.split("?", 1)[0]):
            return self._status(seen, 404)
        upload = uuid.uuid4().hex
        self.loopback.uploads.add(upload)
        seen.status = 202
        self.send_response(202)
        self.send_header("Location", f"{self.path.split('?', 1)[0]}{upload}?_state=x")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PUT(self) -> None:
        seen = self._seen()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen.received = len(body)
        if self._refused(seen):
            return
        path, _, query = self.path.partition("?")
        upload = re.fullmatch(r"/v2/(.+)/blobs/uploads/([0-9a-f]{32})", path)
        manifest = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path)
        if upload and upload[2] in self.loopback.uploads:
            digest = (parse_qs(query).get("digest") or [""])[0]
            if digest_of(body) != digest:
                return self._status(seen, 400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
            self.loopback.uploads.discard(upload[2])
            self.loopback.blobs[digest] = body
            return self._status(seen, 201)
        if manifest:
            self.loopback.manifests[f"{manifest[1]}:{manifest[2]}"] = body
            return self._status(seen, 201)
        self._status(seen, 404)

    def _seen(self) -> Seen:
        seen = Seen(self.command, self.path, self.headers.get("Range"))
        self.loopback.seen.append(seen)
        return seen

    def _refused(self, seen: Seen) -> bool:
        """Answer a refusal or an auth challenge, if one is due; True if it was."""
        status = self.loopback.refuse.get(self.command)
        if status is not None:
            self._status(seen, status, b'{"errors":[{"code":"UNKNOWN","message":"refused"}]}')
            return True
        token, path = self.loopback.token, self.path
        if token and path.startswith("/v2/") and \
                self.headers.get("Authorization") != f"Bearer {token}":
            realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
            self._status(seen, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
                "WWW-Authenticate": f'Bearer realm="{realm}",service="loopback",'
                                    f'scope="repository:x:pull,push"'})
            return True
        return False

    def _answer(self, head: bool) -> None:
        seen = self._seen()
        if self._refused(seen):
            return
        path = self.path.split("?", 1)[0]
        if path == "/token" and self.loopback.token:
            return self._json(seen, json.dumps({"token": self.loopback.token}).encode(),
                              "application/json", head)
        manifest = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path)
        blob = re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", path)
        tree = re.fullmatch(r"/api/models/(.+)/tree/main", path)
        if manifest:
            raw = self.loopback.manifests.get(f"{manifest[1]}:{manifest[2]}")
            self._json(seen, raw, MANIFEST_TYPE, head)
        elif tree:
            listing = self.loopback.trees.get(tree[1])
            self._json(seen, None if listing is None else json.dumps(listing).encode(),
                       "application/json", head)
        elif blob:
            self._content(seen, blob[2], self.loopback.blobs.get(blob[2]), head)
        else:
            self._content(seen, path, self.loopback.files.get(path), head)

    def _json(self, seen: Seen, raw: bytes | None, kind: str, head: bool) -> None:
        if raw is None:
            return self._status(seen, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
        seen.status = 200
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if not head:
            self.wfile.write(raw)

    def _status(self, seen: Seen, code: int, body: bytes = b"",
                headers: dict[str, str] | None = None) -> None:
        seen.status = code
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _content(self, seen: Seen, key: str, content: Content | None, head: bool) -> None:
        if content is None:
            return self._status(seen, 404)
        size = size_of(content)
        start = _range_start(seen.range) if not self.loopback.ignore_range else None
        if start is not None and start >= size:
            return self._status(seen, 416)
        seen.status = 206 if start is not None else 200
        self.send_response(seen.status)
        if start is not None:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - (start or 0)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not head:
            self._send_body(seen, key, content, start or 0, size)

    def _send_body(self, seen: Seen, key: str, content: Content, start: int, size: int) -> None:
        limit = self.loopback.cut_after
        flip = size // 2 if key in self.loopback.corrupt else None
        for offset, chunk in _chunks(content, start):
            if flip is not None and offset <= flip < offset + len(chunk):
                i = flip - offset
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
            if limit is not None and seen.sent + len(chunk) > limit:
                self.wfile.write(chunk[: limit - seen.sent])
                seen.sent = limit
                self.close_connection = True
                return
            self.wfile.write(chunk)
            seen.sent += len(chunk)


def _range_start(header: str | None) -> int | None:
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match[1]) if match else None


def _chunks(content: Content, start: int):
    if isinstance(content, bytes):
        for offset in range(start, len(content), _CHUNK):
            yield offset, content[offset:offset + _CHUNK]
        return
    with content.open("rb") as fh:
        fh.seek(start)
        offset = start
        while chunk := fh.read(_CHUNK):
            yield offset, chunk
            offset += len(chunk)
