"""`corral batch submit FILE`: send a file of prompts through the queue, results in input order."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click

from cli.client import APIError, Client

FINISHED = ("succeeded", "failed", "cancelled")


def parse_line(line: str, number: int, model: str | None) -> dict[str, Any]:
    """One input line as a /jobs body: plain text, {"prompt": ...} or {"messages": [...]}."""
    text = line.strip()
    if text.startswith("{"):
        try:
            item = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"line {number}: invalid JSON: {exc}") from None
    else:
        item = {"prompt": text}
    body = {k: v for k, v in item.items() if k not in ("custom_id",)}
    body["kind"] = "chat" if "messages" in item else "generate"
    body.setdefault("model", model)
    if not body["model"]:
        raise click.ClickException(f"line {number}: no model (use --model or a \"model\" field)")
    body["stream"] = False
    return body


def read_lines(path: Path, model: str | None) -> list[tuple[int, dict[str, Any]]]:
    """Non-blank lines of the file with their 1-based line numbers."""
    lines = path.read_text().splitlines()
    return [(n, parse_line(text, n, model)) for n, text in enumerate(lines, 1) if text.strip()]


def _wait(client: Client, job_id: str) -> dict[str, Any]:
    while True:
        job = client.request("GET", f"/jobs/{job_id}")
        if job["status"] in FINISHED:
            return job
        time.sleep(0.1)


def _result(number: int, job: dict[str, Any]) -> dict[str, Any]:
    keys = ("status", "output", "error", "done_reason", "prompt_eval_count", "eval_count",
            "total_duration", "eval_duration", "started_at", "finished_at")
    return {"line": number, "id": job["id"], **{k: job.get(k) for k in keys}}


def throughput_line(jobs: list[dict[str, Any]], wall: float) -> str:
    """Aggregate generated tokens per second of wall time, and the mean per request."""
    tokens = sum(j.get("eval_count") or 0 for j in jobs)
    rates = [j["eval_count"] / (j["eval_duration"] / 1e9) for j in jobs
             if j.get("eval_count") and j.get("eval_duration")]
    per_request = sum(rates) / len(rates) if rates else 0.0
    return (f"throughput: {len(jobs)} jobs, {tokens} tokens in {wall:.1f}s = "
            f"{tokens / wall if wall else 0:.1f} tokens/s aggregate, "
            f"{per_request:.1f} tokens/s per request")


@click.group()
def batch() -> None:
    """Bulk prompt files."""


@batch.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "-m", default=None, help="Model for lines that do not name one.")
@click.option("--wait", is_flag=True, help="Wait for every line and write the results.")
@click.option("--output", "-o", type=click.File("w"), default=None,
              help="Where to write JSONL results in input order (default: standard output).")
def submit(file: Path, model: str | None, wait: bool, output: TextIO | None) -> None:
    """Queue every line of FILE; with --wait, write results in input order."""
    client = Client()
    lines = read_lines(file, model)
    batch_id = uuid.uuid4().hex
    started = time.monotonic()
    ids = []
    for number, body in lines:
        try:
            ids.append((number, client.request("POST", "/jobs", {**body, "batch": batch_id})["id"]))
        except APIError as exc:
            raise click.ClickException(f"line {number}: {exc.message}") from None
    click.echo(f"batch {batch_id}: {len(ids)} jobs queued", err=True)
    if not wait:
        for number, job_id in ids:
            click.echo(json.dumps({"line": number, "id": job_id}))
        return
    out = output or click.get_text_stream("stdout")
    finished = []
    with click.progressbar(ids, label="running", file=click.get_text_stream("stderr"),
                           show_pos=True) as bar:
        for number, job_id in bar:
            job = _wait(client, job_id)
            finished.append(job)
            out.write(json.dumps(_result(number, job)) + "\n")
            out.flush()
    failed = sum(1 for j in finished if j["status"] != "succeeded")
    click.echo(f"done: {len(finished) - failed} succeeded, {failed} failed", err=True)
    click.echo(throughput_line(finished, wall_seconds(finished) or time.monotonic() - started),
               err=True)


def wall_seconds(jobs: list[dict[str, Any]]) -> float:
    """Seconds from the first job's start to the last job's end, from the job records."""
    starts = [datetime.fromisoformat(j["started_at"]) for j in jobs if j.get("started_at")]
    ends = [datetime.fromisoformat(j["finished_at"]) for j in jobs if j.get("finished_at")]
    if not starts or not ends:
        return 0.0
    return (max(ends) - min(starts)).total_seconds()
