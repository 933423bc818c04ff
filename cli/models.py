"""Model commands: create, list, rm."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from cli.client import Client


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@click.command()
@click.argument("name")
@click.option("--from", "source", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="A GGUF file to register under NAME.")
def create(name: str, source: Path) -> None:
    """Register a local GGUF file as model NAME (uploads it as a blob, as `ollama create`)."""
    client = Client()
    digest = _sha256(source)
    click.echo(f"uploading {source.name} ({digest[:19]}…)", err=True)
    client.upload_blob(str(source), digest)
    for line in client.stream("POST", "/api/create",
                              {"model": name, "files": {source.name: digest}}):
        click.echo(line.get("status", ""), err=True)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@click.command("list")
def list_models() -> None:
    """List the models in the store."""
    models = Client().request("GET", "/api/tags")["models"]
    click.echo(f"{'NAME':32} {'ID':14} {'SIZE':>10}  MODIFIED")
    for m in models:
        click.echo(f"{m['name']:32} {m['digest'][:12]:14} {_size(m['size']):>10}  "
                   f"{m['modified_at'][:19]}")


@click.command("rm")
@click.argument("names", nargs=-1, required=True)
def remove(names: tuple[str, ...]) -> None:
    """Remove models (and any blob no other model uses)."""
    client = Client()
    for name in names:
        client.request("DELETE", "/api/delete", {"model": name})
        click.echo(f"deleted '{name}'")
