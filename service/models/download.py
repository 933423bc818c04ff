"""Fetch one remote file into the store's blobs/ as a resumable, hashed `.partial` file.

A download appends to `blobs/<key>.partial` and asks only for the bytes it lacks (an HTTP
Range request), so a pull cut short by a dropped connection or a full disk continues where
it stopped the next time. The bytes are hashed as they arrive (the part already on disk is
hashed first), so verifying a multi-gigabyte blob costs no second read. Nothing here names a
blob: the caller compares the digest and commits the partial (ModelStore.commit_blob).

Two pulls of the same blob take turns on an exclusive lock of the partial file.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from service.core.errors import CorralError, InvalidRequest, NotFound
from service.core.version import __version__
from service.models.store import ModelStore

Progress = Callable[[dict[str, Any]], None]

_CHUNK = 1 << 20
_TIMEOUT = 60.0  # seconds without a byte before a download is reported as stalled
_REPORT_EVERY = 0.1  # seconds between progress updates of one file
_REPORT_STEPS = 20  # and one update per 1/20 of a file of known size, however fast it arrives


@dataclass(frozen=True)
class Remote:
    """A file to fetch: its URL, and what it should be when the publisher says so."""

    url: str
    digest: str | None = None  # "sha256:<hex>" when known in advance
    size: int | None = None  # bytes, when known in advance
    label: str = ""  # what progress lines call it ("pulling <label>")


@dataclass
class Staged:
    """A finished download still under its partial name, with the digest of its bytes."""

    remote: Remote
    partial: Path
    digest: str
    size: int
    committed: bool = False  # another pull named the blob while this one waited for it


def open_url(url: str, insecure: bool, headers: dict[str, str] | None = None):
    """GET a URL; plain http only with `insecure`, as Ollama's pull. 404 is NotFound."""
    if url.startswith("http://") and not insecure:
        raise InvalidRequest(f"insecure protocol http: {url} needs 'insecure' to pull over "
                             "plain http")
    if not url.startswith(("http://", "https://")):
        raise InvalidRequest(f"invalid URL {url!r}: expected http:// or https://")
    req = urllib.request.Request(url, headers={"User-Agent": f"corral/{__version__}",
                                               **(headers or {})})
    try:
        return urllib.request.urlopen(req, timeout=_TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc  # the caller decides what an unsatisfiable range means
        exc.close()
        if exc.code == 404:
            raise NotFound(f"{url}: file does not exist") from None
        raise CorralError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CorralError(f"{url}: could not connect: {reason}") from None


def fetch(store: ModelStore, remote: Remote, key: str, progress: Progress, *,
          insecure: bool) -> Staged:
    """Download `remote` into the partial file named by `key`, resuming what is there."""
    partial = store.partial_path(key)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with _open_locked(partial, remote, progress) as out:  # unlocked when it closes
        if remote.digest and store.has_blob(remote.digest):  # committed while we waited
            partial.unlink(missing_ok=True)
            size = store.blob_path(remote.digest).stat().st_size
            return Staged(remote, partial, remote.digest, size, committed=True)
        try:
            return _Transfer(out, partial, remote, progress, insecure).run()
        except BaseException:
            if os.fstat(out.fileno()).st_size == 0:  # nothing worth resuming
                partial.unlink(missing_ok=True)
            raise


def _open_locked(partial: Path, remote: Remote, progress: Progress) -> IO[bytes]:
    """Open the partial file and lock it; open again if the pull that held it meanwhile
    renamed or removed it, so two pulls never write to different files of one name."""
    while True:
        out = open(partial, "ab")
        _lock(out, remote, progress)
        try:
            if os.stat(partial).st_ino == os.fstat(out.fileno()).st_ino:
                return out
        except FileNotFoundError:
            pass
        out.close()


def _lock(out: IO[bytes], remote: Remote, progress: Progress) -> None:
    """Wait for the partial file; while another pull holds it, report that one's progress
    (the file grows), so a waiting client still sees the bar move."""
    while True:
        try:
            fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            update = {"status": f"pulling {remote.label}", "digest": remote.digest or "",
                      "completed": os.fstat(out.fileno()).st_size}
            if remote.size is not None:
                update["total"] = remote.size
            progress(update)
            time.sleep(1.0)


class _Transfer:
    """One attempt at completing a partial file, under its lock."""

    def __init__(self, out: IO[bytes], partial: Path, remote: Remote, progress: Progress,
                 insecure: bool) -> None:
        self.out, self.partial, self.remote = out, partial, remote
        self.progress, self.insecure = progress, insecure
        self.hasher = hashlib.sha256()
        self.completed = 0
        self.total = remote.size
        self._reported = 0.0
        self._reported_bytes = 0

    def run(self) -> Staged:
        self._hash_existing()
        if self.total is None or self.completed < self.total:
            self._receive()
        self._report(force=True)
        if self.total is not None and self.completed != self.total:
            raise CorralError(f"{self._what()}: connection closed after {self.completed} of "
                              f"{self.total} bytes; pull again to resume")
        digest = "sha256:" + self.hasher.hexdigest()
        return Staged(self.remote, self.partial, digest, self.completed)

    def _hash_existing(self) -> None:
        """Hash what earlier attempts left; start over if it is longer than the file."""
        size = self.partial.stat().st_size
        if self.total is not None and size > self.total:
            self._restart()
            return
        with open(self.partial, "rb") as done:
            while chunk := done.read(_CHUNK):
                self.hasher.update(chunk)
        self.completed = size

    def _restart(self) -> None:
        self.out.truncate(0)
        self.out.seek(0)
        self.hasher, self.completed = hashlib.sha256(), 0

    def _receive(self) -> None:
        headers = {"Range": f"bytes={self.completed}-"} if self.completed else {}
        response = open_url(self.remote.url, self.insecure, headers)
        with response:
            if response.status == 416 or (self.completed and response.status != 206):
                # The server cannot continue from our offset: fetch the whole file again.
                self._restart()
                if response.status == 416:
                    self._receive()
                    return
            self._learn_total(response)
            self._copy(response)

    def _learn_total(self, response) -> None:
        length = response.headers.get("Content-Length")
        if self.total is None and length is not None and length.isdigit():
            self.total = self.completed + int(length)

    def _copy(self, response) -> None:
        self._report(force=True)
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                self._flush()  # keep every byte that arrived, for the next attempt
                raise CorralError(f"{self._what()}: download interrupted after "
                                  f"{self.completed} bytes ({exc}); pull again to resume"
                                  ) from None
            if not chunk:
                break
            self._write(chunk)
            self._report()
        self._flush()

    def _write(self, chunk: bytes) -> None:
        try:
            self.out.write(chunk)
        except OSError as exc:
            raise self._disk_error(exc) from None
        self.hasher.update(chunk)
        self.completed += len(chunk)

    def _flush(self) -> None:
        try:
            self.out.flush()
            os.fsync(self.out.fileno())
        except OSError as exc:
            raise self._disk_error(exc) from None

    def _disk_error(self, exc: OSError) -> CorralError:
        return CorralError(f"{self._what()}: writing to {self.partial.parent} failed: "
                           f"{exc.strerror or exc}; free some space and pull again to resume")

    def _report(self, force: bool = False) -> None:
        """Send a progress update every _REPORT_EVERY seconds, and every 1/_REPORT_STEPS of the
        file: a bar keeps moving on a slow link and still moves on a fast one (a loopback
        registry delivers 100 MB within one time interval)."""
        now = time.monotonic()
        step = (self.total or 0) // _REPORT_STEPS
        stepped = step > 0 and self.completed - self._reported_bytes >= step
        if not force and not stepped and now - self._reported < _REPORT_EVERY:
            return
        self._reported, self._reported_bytes = now, self.completed
        update: dict[str, Any] = {"status": f"pulling {self.remote.label}",
                                  "digest": self.remote.digest or "",
                                  "completed": self.completed}
        if self.total is not None:
            update["total"] = self.total
        self.progress(update)

    def _what(self) -> str:
        return f"pulling {self.remote.label}"
