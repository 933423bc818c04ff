"""`corral batch`: submit a file of prompts as one batch, follow it, read its results.

The file goes up once (POST /batches); the service feeds its lines to the queue. An
Idempotency-Key made of the file's bytes and the model means re-running an interrupted
`corral batch submit` attaches to the batch already made instead of redoing its lines.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

import click

from cli.client import Client

ENDED = ("completed", "failed", "cancelled", "expired")
POLL_SECONDS = 0.5


def file_key(path: Path, model: str | None) -> str:
    """The batch's Idempotency-Key: sha256 of the file's bytes and the default model."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    digest.update(b"\0" + (model or "").encode())
    return digest.hexdigest()


def upload(client: Client, path: Path, model: str | None, priority: int) -> tuple[dict, bool]:
    """Create the batch, or attach to the one this file already made; (batch, attached)."""
    key = file_key(path, model)
    headers = {"Idempotency-Key": key}
    found = client.request("GET", "/batches?" + urlencode({"idempotency_key": key}))["batches"]
    if found:  # attach (and resume if it was cancelled) without sending the file again
        return client.request("POST", "/batches", data=b"", headers=headers), True
    query = urlencode({k: v for k, v in {"model": model, "priority": priority}.items() if v})
    headers.update({"Content-Type": "application/x-ndjson", "X-Filename": path.name[:255],
                    "Content-Length": str(path.stat().st_size)})
    with open(path, "rb") as fh:
        return client.request("POST", f"/batches?{query}", data=fh, headers=headers), False


class Progress:
    """A one-line progress bar on stderr: done, failed, tokens/s and ETA.

    Rates are measured over what this command has watched, so attaching to a half-done
    batch shows its current speed, not an average diluted by the time before.
    """

    WIDTH = 24

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.first: tuple[float, int, int] | None = None
        self.last_print = 0.0

    def line(self, batch: dict[str, Any], now: float) -> str:
        counts = batch["counts"]
        total, done = counts["total"] or 1, counts["done"]
        if self.first is None:
            self.first = (now, done, batch["eval_count"])
        start, done0, tokens0 = self.first
        elapsed = now - start
        rate = (batch["eval_count"] - tokens0) / elapsed if elapsed > 0 else 0.0
        per_line = (done - done0) / elapsed if elapsed > 0 else 0.0
        eta = (counts["total"] - done) / per_line if per_line > 0 else None
        filled = int(self.WIDTH * done / total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        return (f"[{bar}] {done}/{counts['total']} done, {counts['failed']} failed, "
                f"{rate:.1f} tokens/s, ETA {_duration(eta)}")

    def show(self, batch: dict[str, Any], final: bool = False) -> None:
        now = time.monotonic()
        text = self.line(batch, now)
        if self.live:
            self.stream.write("\r" + text + ("\n" if final else ""))
        elif final or now - self.last_print >= 10:
            self.stream.write(text + "\n")
            self.last_print = now
        self.stream.flush()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def follow(client: Client, batch: dict[str, Any]) -> dict[str, Any]:
    """Poll the batch until it ends, drawing the progress bar."""
    progress = Progress(sys.stderr)
    while batch["status"] not in ENDED:
        progress.show(batch)
        time.sleep(POLL_SECONDS)
        batch = client.request("GET", f"/batches/{batch['id']}")
    progress.show(batch, final=True)
    return batch


def write_results(client: Client, batch_id: str, out: TextIO) -> list[dict[str, Any]]:
    """Write the results JSONL (input order, one object per line) and return them."""
    results = []
    # Client.stream treats an "error" key as a failed stream; here every line has one.
    with client._open("GET", f"/batches/{batch_id}/results") as response:
        for raw in response:
            if raw.strip():
                item = json.loads(raw)
                results.append(item)
                out.write(json.dumps(item) + "\n")
    out.flush()
    return results


def summary(batch: dict[str, Any]) -> str:
    counts = batch["counts"]
    return (f"batch {batch['id']}: {batch['status']}, {counts['total']} lines: "
            f"{counts['succeeded']} succeeded, {counts['failed']} failed "
            f"({counts['invalid']} invalid), {counts['cancelled']} cancelled, "
            f"{counts['running']} running, {counts['queued'] + counts['pending']} waiting")


@click.group()
def batch() -> None:
    """Bulk prompt files: submit, follow, read results, cancel."""


@batch.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "-m", default=None, help="Model for lines that do not name one.")
@click.option("--priority", type=click.IntRange(0, 9), default=0,
              help="Priority among batches (0-9); batches always run behind interactive use.")
@click.option("--wait", is_flag=True, help="Follow the batch, then write its results.")
@click.option("--output", "-o", type=click.File("w"), default="-",
              help="Where to write JSONL results in input order (default: standard output).")
def submit(file: Path, model: str | None, priority: int, wait: bool,
           output: TextIO) -> None:
    """Run every line of FILE: plain text, {"prompt"}, {"messages"} or OpenAI batch lines."""
    client = Client()
    data, attached = upload(client, file, model, priority)
    verb = "attached to existing batch" if attached else "created"
    click.echo(f"{verb} {data['id']}: {data['counts']['total']} lines", err=True)
    if not wait:
        click.echo(data["id"])
        return
    data = follow(client, data)
    results = write_results(client, data["id"], output)
    click.echo(summary(data), err=True)
    click.echo(throughput_line(results, wall_seconds(results)), err=True)
    if data["status"] != "completed":
        raise SystemExit(1)


@batch.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print the batch as JSON.")
def status(batch_id: str, as_json: bool) -> None:
    """Show a batch's status and line counts."""
    data = Client().request("GET", f"/batches/{batch_id}")
    click.echo(json.dumps(data, indent=2) if as_json else summary(data))


@batch.command()
@click.argument("batch_id")
@click.option("--output", "-o", type=click.File("w"), default="-",
              help="Where to write JSONL results (default: standard output).")
def results(batch_id: str, output: TextIO) -> None:
    """Write a batch's results as JSONL in input order (unfinished lines included)."""
    write_results(Client(), batch_id, output)


@batch.command()
@click.argument("batch_id")
def cancel(batch_id: str) -> None:
    """Cancel a batch: queued lines never run, running ones stop (409 if it has ended)."""
    client = Client()
    data = client.request("POST", f"/batches/{batch_id}/cancel")
    deadline = time.monotonic() + 30
    while data["status"] == "cancelling" and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        data = client.request("GET", f"/batches/{batch_id}")
    click.echo(summary(data))


@batch.command(name="list")
@click.option("--limit", type=click.IntRange(1, 100), default=20)
def list_batches(limit: int) -> None:
    """List batches, newest first."""
    rows = Client().request("GET", f"/batches?limit={limit}")["batches"]
    click.echo(f"{'ID':<40} {'STATUS':<12} {'DONE':>13} {'FAILED':>7}  CREATED")
    for row in rows:
        counts = row["counts"]
        done = f"{counts['done']}/{counts['total']}"
        click.echo(f"{row['id']:<40} {row['status']:<12} {done:>13} {counts['failed']:>7}  "
                   f"{row['created_at'][:19].replace('T', ' ')}")


def throughput_line(jobs: list[dict[str, Any]], wall: float) -> str:
    """Aggregate generated tokens per second of wall time, and the mean per request."""
    tokens = sum(j.get("eval_count") or 0 for j in jobs)
    rates = [j["eval_count"] / (j["eval_duration"] / 1e9) for j in jobs
             if j.get("eval_count") and j.get("eval_duration")]
    per_request = sum(rates) / len(rates) if rates else 0.0
    return (f"throughput: {len(jobs)} jobs, {tokens} tokens in {wall:.1f}s = "
            f"{tokens / wall if wall else 0:.1f} tokens/s aggregate, "
            f"{per_request:.1f} tokens/s per request")


def wall_seconds(jobs: list[dict[str, Any]]) -> float:
    """Seconds from the first job's start to the last job's end, from the job records."""
    starts = [datetime.fromisoformat(j["started_at"]) for j in jobs if j.get("started_at")]
    ends = [datetime.fromisoformat(j["finished_at"]) for j in jobs if j.get("finished_at")]
    if not starts or not ends:
        return 0.0
    return (max(ends) - min(starts)).total_seconds()
