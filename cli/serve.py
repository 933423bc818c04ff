"""Commands that start processes: `corral serve`, `corral worker`, `corral env`.

Unlike the client commands, these run the service, so they use its internals; they import
the heavy ones (Redis, the Celery queue, the database, the workers) inside the commands, so
that `corral --help`, which loads this module to list them, stays cheap.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from service.core.errors import SettingsError
from service.core.settings import Settings, describe


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(exc.message) from None


def _env_help() -> str:
    rows = "\n".join(f"  {name:26} {text}" for name, _, text in describe())
    return "\b\nEnvironment variables:\n" + rows


class Supervisor:
    """Run child processes together; when one exits or we are signalled, stop them all."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.children.append((name, subprocess.Popen(args, env=env)))

    def wait(self) -> int:
        """Block until a signal or until any child exits; return the exit code to use."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        while not self.stopping:
            for name, child in self.children:
                if child.poll() is not None:
                    click.echo(f"corral: {name} exited with {child.returncode}", err=True)
                    self.stopping = True
                    return child.returncode or 1
            time.sleep(0.2)
        return 0

    def _on_signal(self, signum, _frame) -> None:
        self.stopping = True

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every child (workers finish their step), then SIGKILL stragglers."""
        for _, child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def web_command(settings: Settings) -> list[str]:
    """gunicorn with threads: streamed responses each hold a thread while they last."""
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{settings.host}:{settings.port}",
        "--worker-class", "gthread", "--workers", "1", "--threads", "64",
        "--timeout", "120", "--graceful-timeout", "10",
        # gunicorn answers an over-long request line or header with an HTML page of its own;
        # with its largest bounded request line (8190, 0 is unlimited) a 5,000-character
        # /api/blobs/<digest> reaches Flask and gets a JSON 400, and 32 KiB header fields let
        # the cookie jar a browser sends to localhost (shared by every local port) through.
        "--limit-request-line", "8190", "--limit-request-field_size", "32768",
        "--log-level", "debug" if settings.debug else "warning",
        "service:create_app()",
    ]


def worker_command(queues: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", "worker", "--queues", queues]


@click.command(epilog=_env_help())
@click.option("--no-worker", is_flag=True, help="Run only the API (and embedded Redis).")
def serve(no_worker: bool) -> None:
    """Start corral: embedded Redis (unless CORRAL_REDIS_URL), the API and one worker."""
    from service.core.db import upgrade
    from service.core.redis_server import EmbeddedRedis

    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    redis_server = None
    if not settings.redis_url:
        redis_server = EmbeddedRedis(settings.home / "redis").start()
        env["CORRAL_REDIS_URL"] = redis_server.url
    upgrade(settings.database)
    supervisor = Supervisor()
    try:
        supervisor.start("web", web_command(settings), env)
        if not no_worker:
            supervisor.start("worker", worker_command(settings.queues), env)
        click.echo(f"corral is running on {settings.base_url} "
                   f"(redis: {env['CORRAL_REDIS_URL']}, database: {_safe(settings.database)})",
                   err=True)
        code = supervisor.wait()
    finally:
        supervisor.stop()
        if redis_server is not None:
            redis_server.stop()
    sys.exit(code)


def _safe(url: str) -> str:
    """A database URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@click.command(epilog=_env_help())
@click.option("--queues", "-Q", default=None,
              help="Comma-separated queues (default CORRAL_QUEUES).")
@click.option("--loglevel", default="WARNING", show_default=True)
def worker(queues: str | None, loglevel: str) -> None:
    """Run a Celery worker that loads models and decodes jobs from the given queues."""
    from service.core.redis_server import EmbeddedRedis
    from service.jobs.queue import consumed_queues
    from workers.celery_app import create_celery

    settings = load_settings()
    if not settings.redis_url:
        # Beside a `corral serve` on this machine: join its embedded Redis.
        url = EmbeddedRedis.running_url(settings.home / "redis")
        if not url:
            raise click.ClickException("CORRAL_REDIS_URL is not set and no embedded Redis is "
                                       "running under CORRAL_HOME: start `corral serve` first")
        settings = dataclasses.replace(settings, redis_url=url)
    app = create_celery(settings)
    queues = ",".join(consumed_queues(queues or settings.queues))
    app.worker_main(["worker", "--queues", queues, "--loglevel", loglevel,
                     "--hostname", f"corral-{os.getpid()}@%h",
                     "--without-gossip", "--without-mingle"])


@click.command("env")
def env_command() -> None:
    """Print every CORRAL_* variable with its current value and meaning."""
    for name, value, text in describe():
        click.echo(f"{name}={value}\t# {text}")


def home_path() -> Path:
    return load_settings().home
