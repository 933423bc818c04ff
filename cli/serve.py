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
from collections.abc import Callable
from pathlib import Path

import click

from service.core.errors import SettingsError
from service.core.settings import Settings, describe, safe_url


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(exc.message) from None


def _env_help() -> str:
    rows = "\n".join(f"  {name:26} {text}" for name, _, text in describe())
    return "\b\nEnvironment variables:\n" + rows


# How `corral serve` supervises its children (see Supervisor).
BACKOFF = 0.5  # seconds before the first restart; doubled after each fast exit
BACKOFF_CAP = 8.0  # the longest wait between restarts
FAST_EXIT = 10.0  # an exit this soon after starting counts towards giving up
GIVE_UP = 5  # fast exits in a row after which serve stops everything and fails


def _log(line: str) -> None:
    click.echo(line, err=True)


@dataclasses.dataclass
class Child:
    """One supervised process: how to start it, when it stops and what it has done so far.

    `stage` orders the drain: the API (stage 0) stops taking work first, the workers
    (stage 1) finish theirs next, Redis (stage 2), which both use, stops last. `grace` is how
    long its SIGTERM may take before it is killed.
    """

    name: str
    spawn: Callable[[], subprocess.Popen]
    stage: int = 0
    grace: float = 20.0
    process: subprocess.Popen | None = None
    started: float = 0.0
    fast_exits: int = 0  # exits in a row, each within FAST_EXIT of its start
    restart_at: float | None = None  # set while it waits to be restarted

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self) -> None:
        self.restart_at = None
        self.process = self.spawn()
        self.started = time.monotonic()

    def kill_group(self) -> None:
        """SIGKILL what the child left in its process group (gunicorn's worker, a Redis
        rewrite child), so a restart finds its port free and nothing is orphaned.

        Called only just after the child was reaped: while its group has members its id
        cannot be reused, and when it has none, killpg finds nothing.
        """
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already (or was never its own)


class Supervisor:
    """Keep child processes running: restart one that exits, with backoff, until it keeps
    failing fast; on SIGTERM/SIGINT (stop()), drain them stage by stage.

    A crash of one part (a worker killed for memory, Redis killed) is then a pause, not an
    outage: the others keep their connections' URLs and reconnect by themselves.
    """

    def __init__(self, *, backoff: float = BACKOFF, backoff_cap: float = BACKOFF_CAP,
                 fast_exit: float = FAST_EXIT, give_up: int = GIVE_UP,
                 log: Callable[[str], None] = _log, tick: float = 0.1) -> None:
        self.children: list[Child] = []
        self.backoff, self.backoff_cap = backoff, backoff_cap
        self.fast_exit, self.give_up = fast_exit, give_up
        self.log = log
        self.tick = tick
        # Plain flags, set by signal handlers (which must not log: stderr is not reentrant).
        self.stopping = False
        self.hurry = False  # a second signal: kill instead of waiting for the drain
        self.signal: str | None = None

    def add(self, child: Child) -> Child:
        """Start `child` now; an error starting it the first time is the caller's."""
        self.children.append(child)
        child.launch()
        return child

    def stop(self) -> None:
        """Ask run() to return and drain (callable from a signal handler or another thread)."""
        if self.stopping:
            self.hurry = True
        self.stopping = True

    def on_signal(self, signum: int, _frame: object) -> None:
        self.signal = signal.Signals(signum).name
        self.stop()

    def run(self) -> int:
        """Supervise until stop() (then 0) or until a child keeps failing (then 1)."""
        while not self.stopping:
            for child in self.children:
                if child.restart_at is not None:
                    if time.monotonic() >= child.restart_at and not self._restart(child):
                        return 1
                elif not child.alive() and not self._exited(child):
                    return 1
            time.sleep(self.tick)
        return 0

    def _exited(self, child: Child) -> bool:
        """Schedule the restart of a child that exited; False when it is time to give up."""
        code = child.process.returncode if child.process is not None else None
        child.kill_group()
        fast = time.monotonic() - child.started < self.fast_exit
        child.fast_exits = child.fast_exits + 1 if fast else 0
        if child.fast_exits >= self.give_up:
            self.log(f"corral: {child.name} exited with {code}, {child.fast_exits} times in a "
                     f"row within {self.fast_exit:g} s of starting; giving up")
            return False
        delay = min(self.backoff_cap, self.backoff * 2 ** child.fast_exits)
        self.log(f"corral: {child.name} exited with {code}; restarting in {delay:.1f} s")
        child.restart_at = time.monotonic() + delay
        return True

    def _restart(self, child: Child) -> bool:
        """Start `child` again; a failure to start counts as a fast exit (False: give up)."""
        try:
            child.launch()
        except (OSError, RuntimeError) as exc:  # e.g. redis-server did not answer in time
            self.log(f"corral: {child.name} did not start: {exc}")
            child.process, child.started = None, time.monotonic()
            return self._exited(child)
        self.log(f"corral: {child.name} restarted (pid {child.process.pid})")
        return True

    def drain(self) -> None:
        """Stop the children stage by stage: SIGTERM, wait up to each one's grace, SIGKILL.

        Each stage stops before the next is signalled: the API finishes the requests it has
        (their jobs still run), workers then finish their running tasks (Celery's warm
        shutdown; with acks_late the messages they had not finished go back), and Redis, which
        both were using, goes last and flushes its append-only file.
        """
        self.stopping = True
        if any(child.alive() for child in self.children):
            self.log("corral: stopping" + (f" ({self.signal})" if self.signal else ""))
        for stage in sorted({child.stage for child in self.children}):
            group = [child for child in self.children if child.stage == stage and child.alive()]
            for child in self.children:
                child.restart_at = None
            for child in group:
                child.process.send_signal(signal.SIGTERM)
            for child in group:
                self._wait_or_kill(child)

    def _wait_or_kill(self, child: Child) -> None:
        """Wait for a signalled child; the log says how long each stage of a drain took."""
        started = time.monotonic()
        while child.alive() and time.monotonic() - started < child.grace and not self.hurry:
            time.sleep(0.05)
        if child.alive():
            self.log(f"corral: {child.name} did not stop within {child.grace:g} s; killing it")
            child.process.kill()
            child.process.wait()
        else:
            self.log(f"corral: {child.name} stopped ({child.process.returncode}) "
                     f"after {time.monotonic() - started:.1f} s")
        child.kill_group()


def web_command(settings: Settings) -> list[str]:
    """gunicorn with threads: streamed responses each hold a thread while they last.

    The worker class is gunicorn's gthread answering the requests gunicorn itself refuses
    (malformed, over its limits) in JSON, not HTML (service/http/server.py).
    """
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{settings.host}:{settings.port}",
        "--worker-class", "service.http.server.JSONErrorWorker", "--workers", "1",
        # Connections beyond the threads wait idle in keep-alive, as gunicorn asks.
        "--threads", str(settings.http_threads),
        "--worker-connections", str(2 * settings.http_threads),
        "--timeout", "120", "--graceful-timeout", "10",
        # With gunicorn's largest bounded request line (8190, 0 is unlimited) a 5,000-character
        # /api/blobs/<digest> reaches Flask and gets its JSON 400, and 32 KiB header fields let
        # the cookie jar a browser sends to localhost (shared by every local port) through;
        # beyond them, gunicorn answers 414 or 431 (in JSON, through the worker class).
        "--limit-request-line", "8190", "--limit-request-field_size", "32768",
        "--log-level", "debug" if settings.debug else "warning",
        "service:create_app()",
    ]


def worker_command(queues: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", "worker", "--queues", queues]


@click.command(epilog=_env_help())
@click.option("--no-worker", is_flag=True, help="Run only the API (and embedded Redis).")
def serve(no_worker: bool) -> None:
    """Start corral: embedded Redis (unless CORRAL_REDIS_URL), the API and one worker.

    Each is restarted when it dies; SIGTERM or Ctrl-C drains them (API, workers, Redis).
    """
    from service.core.db import upgrade
    from service.core.redis_server import EmbeddedRedis

    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    supervisor = Supervisor()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, supervisor.on_signal)
    preexec = _die_with_parent(signal.SIGTERM)
    redis_server = None
    code = 1
    try:
        if not settings.redis_url:
            redis_server = EmbeddedRedis(settings.home / "redis", preexec_fn=preexec)
            server = redis_server
            try:
                supervisor.add(Child("redis", lambda: server.start().process, stage=2,
                                     grace=10.0))
            except RuntimeError as exc:
                raise click.ClickException(str(exc)) from None
            env["CORRAL_REDIS_URL"] = redis_server.url
        upgrade(settings.database)
        web = web_command(settings)
        supervisor.add(Child("api", lambda: _spawn(web, env, preexec), stage=0, grace=15.0))
        if not no_worker:
            work = worker_command(settings.queues)
            # A worker told by SIGTERM to drain waits for its jobs and for Redis, which is
            # going too: it gets SIGKILL instead, and its leases hand its jobs back.
            abrupt = _die_with_parent(signal.SIGKILL)
            supervisor.add(Child("worker", lambda: _spawn(work, env, abrupt), stage=1,
                                 grace=25.0))
        _warn_without_keys(settings)
        click.echo(f"corral is running on {settings.base_url} "
                   f"(redis: {env['CORRAL_REDIS_URL']}, database: {safe_url(settings.database)})",
                   err=True)
        code = supervisor.run()
    finally:
        supervisor.drain()
        if redis_server is not None:
            redis_server.stop()  # already stopped by the drain; this removes its url file
    sys.exit(code)


def _warn_without_keys(settings: Settings) -> None:
    """Say so when the API will require keys and no admin key exists yet to make others."""
    from service.access.keys import KeyStore
    from service.core.db import make_engine, make_sessionmaker
    from service.http.access import keys_required

    if not keys_required(settings):
        return
    engine = make_engine(settings.database)
    try:
        if not KeyStore(make_sessionmaker(engine)).any_admin():
            click.echo("API keys are required (CORRAL_AUTH=required or a bind beyond "
                       "loopback) and none is an admin's yet: create one with "
                       "`corral keys create NAME --role admin`", err=True)
    finally:
        engine.dispose()


def _spawn(args: list[str], env: dict[str, str],
           preexec: Callable[[], None] | None) -> subprocess.Popen:
    """A child in a process group of its own: Ctrl-C in the terminal reaches only serve,
    which then stops the children in order instead of all of them at once."""
    return subprocess.Popen(args, env=env, process_group=0, preexec_fn=preexec)


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A preexec_fn that has Linux send the child `sig` when serve dies, even by SIGKILL, so
    no orphaned Redis keeps the append-only file open or an orphaned API the port."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, int(sig))


@click.command(epilog=_env_help())
@click.option("--queues", "-Q", default=None,
              help="Comma-separated queues (default: the --device's queue, else CORRAL_QUEUES).")
@click.option("--device", default=None,
              help="Device label, recorded in each job (default CORRAL_DEVICE); `gpu` "
                   "consumes the queue `gpu` unless --queues says otherwise.")
@click.option("--gpu-layers", type=click.IntRange(min=0), default=None,
              help="Layers of each model offloaded to the GPU (llama.cpp's n_gpu_layers; "
                   "default CORRAL_GPU_LAYERS); needs --device gpu.")
@click.option("--check", is_flag=True,
              help="Start nothing: exit 0 if a worker on this host is alive in the fleet, "
                   "else 1 (a container's health check).")
@click.option("--loglevel", default="WARNING", show_default=True)
def worker(queues: str | None, device: str | None, gpu_layers: int | None, check: bool,
           loglevel: str) -> None:
    """Run a Celery worker that loads models and decodes jobs from the given queues."""
    settings = worker_settings(load_settings(), queues=queues, device=device,
                               gpu_layers=gpu_layers)
    if not settings.redis_url:
        # Beside a `corral serve` on this machine: join its embedded Redis.
        from service.core.redis_server import EmbeddedRedis

        url = EmbeddedRedis.running_url(settings.home / "redis")
        if not url:
            raise click.ClickException("CORRAL_REDIS_URL is not set and no embedded Redis is "
                                       "running under CORRAL_HOME: start `corral serve` first")
        settings = dataclasses.replace(settings, redis_url=url)
    if check:
        from cli.health import check_worker

        alive, message = check_worker(settings)
        click.echo(message, err=not alive)
        sys.exit(0 if alive else 1)
    from workers.celery_app import create_celery

    if settings.device == "gpu" and not settings.gpu_layers:
        _log("corral: a gpu worker with --gpu-layers 0 (CORRAL_GPU_LAYERS) decodes on the CPU")
    app = create_celery(settings)
    app.worker_main(["worker", "--queues", ",".join(app.corral_queues), "--loglevel", loglevel,
                     "--hostname", f"corral-{os.getpid()}@%h",
                     "--without-gossip", "--without-mingle"])


def worker_settings(settings: Settings, *, queues: str | None = None,
                    device: str | None = None, gpu_layers: int | None = None) -> Settings:
    """The settings a worker runs with: its flags over the environment's.

    A `--device` without `--queues` consumes the queue named after the device (`gpu`), so a
    GPU host takes the jobs sent to GPUs and leaves the CPU queue to CPU hosts. Offloading
    layers on a worker that calls itself a CPU one is refused rather than silently done.
    """
    if device is not None:
        settings = dataclasses.replace(settings, device=device, queues=queues or device)
    elif queues is not None:
        settings = dataclasses.replace(settings, queues=queues)
    if gpu_layers is not None:
        settings = dataclasses.replace(settings, gpu_layers=gpu_layers)
    if settings.gpu_layers and settings.device == "cpu":
        raise click.UsageError("--gpu-layers (CORRAL_GPU_LAYERS) offloads layers to a GPU: "
                               "use it with --device gpu (CORRAL_DEVICE=gpu)")
    return settings


@click.command("env")
def env_command() -> None:
    """Print every CORRAL_* variable with its current value and meaning."""
    for name, value, text in describe():
        click.echo(f"{name}={value}\t# {text}")


def home_path() -> Path:
    return load_settings().home
