"""The one module through which the CLI talks to a running corral service, over HTTP."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import click

from service.core.settings import Settings


class APIError(click.ClickException):
    """An error the service answered with ({"error": ...}), or no answer at all."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """Small JSON-over-HTTP client for corral's API at CORRAL_HOST (as `ollama` uses
    OLLAMA_HOST); sends CORRAL_API_KEY when it is set."""

    def __init__(self, base_url: str | None = None, timeout: float = 3600.0,
                 api_key: str | None = None) -> None:
        settings = Settings.from_env()
        self.base_url = (base_url or settings.base_url).rstrip("/")
        self.timeout = timeout
        key = settings.api_key if api_key is None else api_key
        self.auth = {"Authorization": f"Bearer {key}"} if key else {}

    def _open(self, method: str, path: str, body: Any = None, data: bytes | None = None,
              headers: dict[str, str] | None = None):
        if body is not None:
            data = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={**self.auth, **(headers or {})})
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise APIError(_error_text(exc), exc.code) from None
        except urllib.error.URLError as exc:
            raise APIError(f"could not reach corral at {self.base_url}: {exc.reason}; "
                           "is `corral serve` running?") from None

    def request(self, method: str, path: str, body: Any = None, **kwargs) -> Any:
        """Send one request and return its decoded JSON (None for an empty body)."""
        with self._open(method, path, body, **kwargs) as response:
            raw = response.read()
        return json.loads(raw) if raw.strip() else None

    def stream(self, method: str, path: str, body: Any = None) -> Iterator[dict[str, Any]]:
        """Yield each NDJSON object of a streamed response; raise on an `error` line."""
        with self._open(method, path, body) as response:
            for line in response:
                if not line.strip():
                    continue
                item = json.loads(line)
                if "error" in item:
                    raise APIError(item["error"])
                yield item

    def events(self, job_id: str, after: str | None = None) -> Iterator[tuple[str, str, dict]]:
        """Yield (id, type, data) of a job's Server-Sent Events."""
        headers = {"Last-Event-ID": after} if after else {}
        with self._open("GET", f"/jobs/{job_id}/events", headers=headers) as response:
            event_id, event_type = "", "message"
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("event: "):
                    event_type = line[7:]
                elif line.startswith("data: "):
                    yield event_id, event_type, json.loads(line[6:])

    def upload_blob(self, path: str, digest: str) -> None:
        """Upload a file as a blob unless the server already has it."""
        try:
            self._open("HEAD", f"/api/blobs/{digest}").close()
            return
        except APIError as exc:
            if exc.status != 404:
                raise
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            req_headers = {**self.auth, "Content-Length": str(size),
                           "Content-Type": "application/octet-stream"}
            req = urllib.request.Request(f"{self.base_url}/api/blobs/{digest}", data=fh,
                                         method="POST", headers=req_headers)
            try:
                urllib.request.urlopen(req, timeout=self.timeout).close()
            except urllib.error.HTTPError as exc:
                raise APIError(_error_text(exc), exc.code) from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read()).get("error") or f"HTTP {exc.code}"
    except (ValueError, AttributeError):
        return f"HTTP {exc.code}: {exc.reason}"
