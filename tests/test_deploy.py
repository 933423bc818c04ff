"""Deployment as shipped: every `corral` command the Procfile, docker/compose.yml and the
Dockerfiles name (their commands and health checks) parses with the real CLI; the API's health
check answers only while the API does; a worker's `--check` vouches only for a live worker on
its own host; and `corral worker --device gpu --gpu-layers N` reaches the model loader and
consumes the `gpu` queue.

No Docker engine runs here: the files are read as Docker and honcho read them, not built.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
import redis
import yaml
from click.testing import CliRunner

from cli.main import cli
from cli.serve import worker_settings
from service.jobs import fleet
from tests.conftest import running_worker, serving
from tests.test_api_jobs import submit, wait_finished
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "Procfile"
COMPOSE = ROOT / "docker" / "compose.yml"
DOCKERFILES = (ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cuda")
API_ADDRESS = "127.0.0.1:11434"  # where the API's health check asks, inside its container


def parse_corral(args: list[str]) -> tuple[click.Command, dict]:
    """Resolve `corral ARGS` with the real click CLI down to its command, and parse that
    command's options, without running it: an unknown command or flag, or a bad value, raises
    click's UsageError as `corral` would print it."""
    command: click.Command = cli
    ctx: click.Context | None = None
    name, rest = "corral", list(args)
    while isinstance(command, click.Group):
        ctx = click.Context(command, info_name=name, parent=ctx)
        name, found, rest = command.resolve_command(ctx, rest)
        if found is None:
            raise click.UsageError(f"no such command {name!r}", ctx)
        command = found
    with command.make_context(name, rest, parent=ctx) as leaf:
        return command, dict(leaf.params)


def procfile_commands(text: str) -> dict[str, list[str]]:
    """Each process of a Procfile (`name: command`, as honcho and foreman read it; other
    lines are comments), its leading VAR=value assignments dropped."""
    commands = {}
    for line in text.splitlines():
        name, sep, command = line.partition(":")
        if not sep or line.startswith("#") or not name.strip().replace("-", "").isalnum():
            continue
        words = shlex.split(command)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words.pop(0)
        commands[name.strip()] = words
    return commands


def health_test(test: list[str] | str) -> list[str]:
    """The argv of a compose/Docker health-check test: ["CMD", ...] as is, CMD-SHELL split."""
    if isinstance(test, str):
        return shlex.split(test)
    kind, *rest = test
    return shlex.split(rest[0]) if kind == "CMD-SHELL" else rest


def compose_commands(spec: dict) -> dict[str, list[str]]:
    """`service` and `service:health` → argv, for every service of a compose file."""
    found = {}
    for name, service in spec["services"].items():
        command = service.get("command")
        if command is not None:
            found[name] = shlex.split(command) if isinstance(command, str) else list(command)
        if "healthcheck" in service:
            found[f"{name}:health"] = health_test(service["healthcheck"]["test"])
    return found


def dockerfile_commands(text: str) -> dict[str, list[str]]:
    """CMD and HEALTHCHECK's CMD (exec form, JSON) of a Dockerfile, continuation lines joined."""
    found = {}
    for line in text.replace("\\\n", " ").splitlines():
        instruction, _, rest = line.partition(" ")
        if instruction in ("CMD", "HEALTHCHECK"):
            found[instruction] = json.loads(rest if instruction == "CMD"
                                            else rest.partition(" CMD ")[2])
    return found


def every_command() -> dict[str, list[str]]:
    """What every deployment file runs, named by file and process."""
    found = {f"Procfile {k}": v for k, v in procfile_commands(PROCFILE.read_text()).items()}
    spec = yaml.safe_load(COMPOSE.read_text())
    found |= {f"compose {k}": v for k, v in compose_commands(spec).items()}
    for path in DOCKERFILES:
        found |= {f"{path.name} {k}": v for k, v in dockerfile_commands(path.read_text()).items()}
    return found


def test_every_corral_command_of_the_procfile_compose_and_dockerfiles_parses() -> None:
    commands = every_command()
    corral = {where: argv[1:] for where, argv in commands.items() if argv[0] == "corral"}
    # What each file must run: the API, workers, and the workers' own health checks.
    assert {"Procfile api", "Procfile worker1", "Procfile worker2", "compose api",
            "compose worker", "compose worker:health", "compose worker-gpu",
            "compose worker-gpu:health", "Dockerfile CMD", "Dockerfile.cuda CMD",
            "Dockerfile.cuda HEALTHCHECK"} <= set(corral), sorted(corral)
    parsed = {where: parse_corral(args) for where, args in corral.items()}
    assert parsed["compose api"][0].name == "serve" and parsed["compose api"][1]["no_worker"]
    for where in ("compose worker:health", "compose worker-gpu:health",
                  "Dockerfile.cuda HEALTHCHECK"):
        assert parsed[where][0].name == "worker" and parsed[where][1]["check"], where
    gpu = parsed["compose worker-gpu"][1]
    assert (gpu["device"], gpu["gpu_layers"]) == ("gpu", 999)
    # The others are the images' own tools (redis-cli, pg_isready, python, redis-server).
    others = {argv[0] for where, argv in commands.items() if where not in corral}
    assert others == {"redis-server", "redis-cli", "pg_isready", "python"}, others


def test_an_unknown_flag_or_command_or_a_bad_value_does_not_parse() -> None:
    with pytest.raises(click.NoSuchOption):
        parse_corral(["worker", "--gpu-layer", "3"])
    with pytest.raises(click.UsageError):
        parse_corral(["wroker", "--check"])
    with pytest.raises(click.BadParameter):
        parse_corral(["worker", "--gpu-layers", "-1"])
    bad = procfile_commands("worker: CORRAL_REDIS_URL=redis://r corral worker --queue cpu\n")
    with pytest.raises(click.NoSuchOption):
        parse_corral(bad["worker"][1:])


def test_compose_checks_every_service_and_starts_each_once_what_it_needs_is_healthy() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"redis", "postgres", "api", "worker"} <= set(services)
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for needed, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, (name, needed)
    assert services["worker"]["deploy"]["replicas"] == 2
    assert set(services["worker"]["depends_on"]) == {"api"}  # the API migrated the database
    # The published port is the one the API binds, on every interface of its container.
    api = services["api"]
    published, _, inside = api["ports"][0].rpartition(":")
    host, _, port = api["environment"]["CORRAL_HOST"].rpartition(":")
    assert (host, port, published) == ("0.0.0.0", inside, inside)
    assert API_ADDRESS.endswith(f":{inside}")
    assert api["environment"]["CORRAL_REDIS_URL"] == "redis://redis:6379/0"


def api_health_check() -> list[str]:
    """The API's health check, the same in compose and in the Dockerfile."""
    spec = yaml.safe_load(COMPOSE.read_text())
    check = health_test(spec["services"]["api"]["healthcheck"]["test"])
    assert check == dockerfile_commands(DOCKERFILES[0].read_text())["HEALTHCHECK"]
    assert API_ADDRESS in check[-1]
    return check


def test_the_api_health_check_passes_while_the_api_answers_and_fails_once_it_is_gone(
        app) -> None:
    check = api_health_check()
    assert check[:2] == ["python", "-c"]
    with serving(app) as url:
        address = url.removeprefix("http://")
        here = [sys.executable, "-c", check[2].replace(API_ADDRESS, address)]
        up = subprocess.run(here, capture_output=True, text=True, timeout=30)
    assert up.returncode == 0, up.stderr
    down = subprocess.run(here, capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "Connection refused" in down.stderr


def check_worker(redis_url: str):
    return CliRunner().invoke(cli, ["worker", "--check"], env={"CORRAL_REDIS_URL": redis_url})


def test_worker_check_passes_while_this_hosts_worker_beats(worker, redis_url) -> None:
    wait_until(lambda: fleet.alive(worker.redis, worker.worker_id), 10,
               message="the worker in the fleet")
    out = check_worker(redis_url)
    assert out.exit_code == 0, out.output
    assert out.output.startswith("healthy:") and worker.worker_id in out.output


def test_worker_check_fails_without_a_live_worker_on_this_host(redis_url) -> None:
    client = redis.Redis.from_url(redis_url)
    out = check_worker(redis_url)
    assert out.exit_code == 1 and "no worker on" in out.output
    # Another host's live worker does not vouch for this one.
    fleet.publish(client, "elsewhere:1:a", [], ttl=30, about={"host": "elsewhere"})
    out = check_worker(redis_url)
    assert out.exit_code == 1 and "no worker on" in out.output
    # One of this host's that stopped beating is listed for a while, but is not healthy.
    me = f"{socket.gethostname()}:1:b"
    fleet.publish(client, me, [], ttl=0.05, about={"host": socket.gethostname()})
    wait_until(lambda: not fleet.alive(client, me), 5, message="its heartbeat to lapse")
    out = check_worker(redis_url)
    assert out.exit_code == 1 and "heartbeat stopped" in out.output and me in out.output
    client.close()


def test_worker_check_fails_when_redis_does_not_answer() -> None:
    out = check_worker("redis://127.0.0.1:9/0")  # the discard port: nothing listens
    assert out.exit_code == 1 and "did not answer" in out.output


def test_gpu_flags_set_the_device_its_queue_and_the_layers_unless_told_otherwise(
        settings) -> None:
    gpu = worker_settings(settings, device="gpu", gpu_layers=7)
    assert (gpu.device, gpu.queues, gpu.gpu_layers) == ("gpu", "gpu", 7)
    mixed = worker_settings(settings, device="gpu", queues="gpu,cpu")
    assert (mixed.queues, mixed.gpu_layers) == ("gpu,cpu", settings.gpu_layers)
    assert worker_settings(settings).queues == settings.queues == "cpu"
    with pytest.raises(click.UsageError, match="--device gpu"):
        worker_settings(settings, gpu_layers=7)  # a CPU worker offloading layers
    from workers.llama_loader import model_params

    assert model_params(7).n_gpu_layers == 7
    assert model_params().n_gpu_layers == 0  # never llama.cpp's default (every layer)


def test_a_gpu_worker_consumes_the_gpu_queue_and_loads_with_its_layers(make_app,
                                                                       settings) -> None:
    gpu = worker_settings(settings, device="gpu", gpu_layers=7)
    app = make_app(queues="gpu")  # an API that sends its jobs to GPU workers
    api = app.test_client()
    with running_worker(gpu) as runtime, serving(app) as url:
        job = wait_finished(api, submit(api))
        assert job["status"] == "succeeded", job
        loaded = runtime.pool.loaded()
        me = next(w for w in fleet.workers(runtime.redis) if w["worker"] == runtime.worker_id)
        listed = CliRunner().invoke(cli, ["workers"], env={"CORRAL_HOST": url[len("http://"):]})
    assert listed.exit_code == 0 and "gpu (7 layers)" in listed.output, listed.output
    assert job["device"] == "gpu" and job["queue"] == "gpu"
    assert [entry.engine.n_gpu_layers for entry in loaded] == [7]
    assert (me["device"], me["gpu_layers"]) == ("gpu", 7)
    assert me["queues"] == ["gpu", runtime.own_queue, "gpu.batch"]  # and no cpu queue
