"""`corral jobs`: the queued and running jobs, with their places in the queue."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from cli.client import Client


def _age(iso: str) -> str:
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Include finished jobs.")
@click.option("--model", default=None, help="Only jobs for this model.")
@click.option("--limit", default=50, show_default=True)
def jobs(show_all: bool, model: str | None, limit: int) -> None:
    """List queued and running jobs (newest first) with their queue positions."""
    query = f"/jobs?limit={limit}"
    if not show_all:
        query += "&status=queued,running"
    if model:
        query += f"&model={model}"
    rows = Client().request("GET", query)["jobs"]
    click.echo(f"{'ID':34} {'KIND':9} {'MODEL':24} {'STATUS':10} {'POSITION':>8}  AGE")
    for job in rows:
        position = "" if job["position"] is None else str(job["position"])
        click.echo(f"{job['id']:34} {job['kind']:9} {job['model'][:24]:24} {job['status']:10} "
                   f"{position:>8}  {_age(job['created_at'])}")
