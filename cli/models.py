"""Model commands with Ollama's names and output: create, list, show, cp, rm, pull, push, ps,
stop."""

from __future__ import annotations

import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cli.client import Client


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _upload(client: Client, path: Path) -> str:
    """Upload a local file as a blob (skipped if the server has it); return its digest."""
    digest = _sha256(path)
    click.echo(f"copying file {digest} ({path.name})", err=True)
    client.upload_blob(str(path), digest)
    return digest


def _local_file(source: str, base: Path) -> Path | None:
    """A FROM/ADAPTER value as a file next to the Modelfile, or None (a model name)."""
    path = Path(source).expanduser()
    path = path if path.is_absolute() else base / path
    return path if path.is_file() else None


def create_request(client: Client, name: str, modelfile_path: Path) -> dict[str, Any]:
    """Turn a Modelfile into Ollama's create fields, uploading the files it names (as
    `ollama create` does: the server may not see this machine's files)."""
    # Imported here, not at the top: only `create -f` parses a Modelfile, and other commands
    # (`corral list`) should not pay for loading the parser.
    from service.core.errors import InvalidRequest
    from service.models.modelfile import parse_modelfile

    try:
        modelfile = parse_modelfile(modelfile_path.read_text())
    except InvalidRequest as exc:
        raise click.ClickException(f"{modelfile_path}: {exc.message}") from None
    base = modelfile_path.parent
    body: dict[str, Any] = {"model": name}
    weights = _local_file(modelfile.from_, base)
    if weights is not None:
        body["files"] = {weights.name: _upload(client, weights)}
    else:
        body["from"] = modelfile.from_
    adapters = {}
    for source in modelfile.adapters:
        adapter = _local_file(source, base)
        if adapter is None:
            raise click.ClickException(f"ADAPTER {source}: no such file")
        adapters[adapter.name] = _upload(client, adapter)
    body.update({k: v for k, v in {
        "adapters": adapters, "template": modelfile.template, "system": modelfile.system,
        "parameters": modelfile.parameters, "license": modelfile.license,
        "messages": modelfile.messages}.items() if v})
    return body


@click.command()
@click.argument("name")
@click.option("-f", "--file", "modelfile", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Modelfile to build from (default ./Modelfile).")
@click.option("--from", "source", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A GGUF file to register under NAME (no Modelfile needed).")
@click.option("-q", "--quantize", default=None, metavar="TYPE",
              help="Quantize F16/BF16/F32 weights to TYPE (e.g. q4_K_M, q8_0) on a worker.")
def create(name: str, modelfile: Path | None, source: Path | None,
           quantize: str | None) -> None:
    """Create model NAME from a Modelfile (or one GGUF file), as `ollama create`."""
    client = Client()
    if source is not None:
        body = {"model": name, "files": {source.name: _upload(client, source)}}
    else:
        path = modelfile or Path("Modelfile")
        if not path.is_file():
            raise click.ClickException(f"no Modelfile at {path}: give one with -f")
        body = create_request(client, name, path)
    if quantize:
        body["quantize"] = quantize
    for line in client.stream("POST", "/api/create", body):
        click.echo(line.get("status", ""), err=True)


def human_bytes(n: float) -> str:
    """Sizes as Ollama's format.HumanBytes prints them: 98 MB, 1.2 GB, 512 B."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 10 else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def human_time(iso: str, now: datetime | None = None) -> str:
    """"2 minutes ago" / "4 minutes from now", as Ollama's format.HumanTime."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 1:
        return "Less than a second" if future else "Less than a second ago"
    for size, unit in ((86400 * 365, "year"), (86400 * 7, "week"), (86400, "day"),
                       (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size:
            count = int(seconds // size)
            text = f"{count} {unit}{'s' if count != 1 else ''}"
            return f"{text} from now" if future else f"{text} ago"
    return iso


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("    ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@click.command("list")
def list_models() -> None:
    """List the models in the store."""
    models = Client().request("GET", "/api/tags")["models"]
    _table([["NAME", "ID", "SIZE", "MODIFIED"]] + [
        [m["name"], m["digest"][:12], human_bytes(m["size"]), human_time(m["modified_at"])]
        for m in models])


@click.command("ps")
def ps() -> None:
    """List the models loaded on any worker, and until when."""
    answer = Client().request("GET", "/api/ps")
    waiting = dict(answer.get("queued") or {})
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL", "QUEUED"]]
    for m in answer["models"]:
        until = "Forever" if m["expires_at"].startswith("2318") else human_time(m["expires_at"])
        rows.append([m["name"], m["digest"][:12], human_bytes(m["size"]), "100% CPU",
                     str(m.get("context_length", "")), until, str(waiting.pop(m["name"], 0))])
    for name, count in sorted(waiting.items()):  # waiting for a model nobody has loaded yet
        rows.append([name, "", "", "", "", "not loaded", str(count)])
    _table(rows)


@click.command("rm")
@click.argument("names", nargs=-1, required=True)
def remove(names: tuple[str, ...]) -> None:
    """Remove models (and any blob no other model uses)."""
    client = Client()
    for name in names:
        client.request("DELETE", "/api/delete", {"model": name})
        click.echo(f"deleted '{name}'")


@click.command("cp")
@click.argument("source")
@click.argument("destination")
def copy(source: str, destination: str) -> None:
    """Copy a model to a new name (the blobs are shared)."""
    Client().request("POST", "/api/copy", {"source": source, "destination": destination})
    click.echo(f"copied '{source}' to '{destination}'")


@click.command()
@click.argument("name")
def stop(name: str) -> None:
    """Unload a model from every worker now."""
    Client().request("POST", "/api/generate", {"model": name, "keep_alive": 0, "stream": False})


@click.command()
@click.argument("name")
@click.option("--insecure", is_flag=True, help="Allow plain http (a registry on your network).")
def pull(name: str, insecure: bool) -> None:
    """Download a model: a registry name, hf.co/<user>/<repo>[:<quant>], or a .gguf URL."""
    _transfer("/api/pull", name, insecure)


@click.command()
@click.argument("name")
@click.option("--insecure", is_flag=True, help="Allow plain http (a registry on your network).")
def push(name: str, insecure: bool) -> None:
    """Upload a model to the registry its name names (host/namespace/model:tag)."""
    _transfer("/api/push", name, insecure)


def _transfer(path: str, name: str, insecure: bool) -> None:
    """Run a pull or push, drawing its progress lines as bars (plain lines off a terminal)."""
    bars = Bars(sys.stderr.isatty())
    for update in Client().stream("POST", path, {"model": name, "insecure": insecure}):
        bars.show(update)
    bars.finish()


class Bars:
    """Ollama's pull (and push) display: one progress bar per layer, then one line per status."""

    WIDTH = 40

    def __init__(self, live: bool) -> None:
        self.live = live  # a terminal: redraw the current bar in place
        self.current: str | None = None
        self.line = ""

    def show(self, update: dict[str, Any]) -> None:
        key = update.get("digest") or update.get("status", "")
        if key != self.current:
            self.finish()
            self.current = key
        self.line = self._render(update)
        if self.live:
            click.echo("\r" + self.line + "\033[K", nl=False, err=True)

    def finish(self) -> None:
        if self.current is not None and self.line:
            click.echo(("\r" + self.line + "\033[K") if self.live else self.line, err=True)
        self.current, self.line = None, ""

    def _render(self, update: dict[str, Any]) -> str:
        status, total = update.get("status", ""), update.get("total")
        if not total:
            return status
        done = min(update.get("completed") or 0, total)
        filled = int(self.WIDTH * done / total)
        bar = "█" * filled + " " * (self.WIDTH - filled)
        return (f"{status}: {100 * done // total:3d}% ▕{bar}▏ "
                f"{human_bytes(done)}/{human_bytes(total)}")


@click.command()
@click.argument("name")
@click.option("--license", "part", flag_value="license", help="Show the license.")
@click.option("--modelfile", "part", flag_value="modelfile", help="Show the Modelfile.")
@click.option("--parameters", "part", flag_value="parameters", help="Show the parameters.")
@click.option("--system", "part", flag_value="system", help="Show the system message.")
@click.option("--template", "part", flag_value="template", help="Show the template.")
def show(name: str, part: str | None) -> None:
    """Show a model's details, or one part of it."""
    info = Client().request("POST", "/api/show", {"model": name})
    if part:
        click.echo(info.get(part, ""))
        return
    click.echo(describe(info))


def describe(info: dict[str, Any]) -> str:
    """`ollama show` without flags: Model, Capabilities, Parameters, System, License."""
    meta, details = info.get("model_info") or {}, info.get("details") or {}
    arch = meta.get("general.architecture", details.get("family", ""))
    rows = [("architecture", arch), ("parameters", details.get("parameter_size", "")),
            ("context length", meta.get(f"{arch}.context_length", "")),
            ("embedding length", meta.get(f"{arch}.embedding_length", "")),
            ("quantization", details.get("quantization_level", ""))]
    sections = [("Model", [f"{k:<20}{v}" for k, v in rows if v != ""]),
                ("Capabilities", info.get("capabilities") or []),
                ("Parameters", (info.get("parameters") or "").splitlines()),
                ("System", (info.get("system") or "").splitlines()[:2]),
                ("License", (info.get("license") or "").splitlines()[:2])]
    out = []
    for title, lines in sections:
        if lines:
            out += [f"  {title}"] + [f"    {line}" for line in lines] + [""]
    return "\n".join(out)


@click.command("workers")
def workers() -> None:
    """List every worker heard from lately: where it runs, what it holds, how full it is."""
    rows = [["WORKER", "NODE", "DEVICE", "QUEUES", "MODELS", "SLOTS FREE", "JOBS", "THREADS",
             "HEARTBEAT"]]
    for w in Client().request("GET", "/api/workers")["workers"]:
        beat = f"{w['heartbeat_age']:.0f}s ago" + ("" if w["alive"] else " (dead)")
        device = w.get("device") or ""
        if w.get("gpu_layers"):
            device += f" ({w['gpu_layers']} layers)"
        rows.append([w["worker"], w.get("node") or "", device,
                     ",".join(w.get("queues") or []), ",".join(w["models"]) or "-",
                     f"{w.get('free_slots', '')}/{w.get('slots', '')}", str(w.get("running", "")),
                     str(w.get("threads", "")), beat])
    _table(rows)
