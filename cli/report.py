"""`corral report`: tokens/s and latency by model and concurrency, from the job history."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import click

from cli.client import Client

HEADER = ("MODEL", "CONCURRENCY", "REQUESTS", "TOKENS", "TOK/S/REQ", "TOK/S AGG",
          "TTFT P50", "TTFT P95", "LATENCY P50", "LATENCY P95", "WAIT P50")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The report as aligned text lines, one per (model, concurrency)."""
    cells = [HEADER] + [
        (r["model"], str(r["concurrency"]), str(r["requests"]), str(r["tokens"]),
         f"{r['tokens_per_s_request']:.1f}", f"{r['tokens_per_s_aggregate']:.1f}",
         _ms(r["ttft_p50_ms"]), _ms(r["ttft_p95_ms"]),
         f"{r['latency_p50_s']:.2f} s", f"{r['latency_p95_s']:.2f} s",
         _ms(r.get("queue_wait_p50_ms")))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in cells]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Draw aggregate and per-request tokens/s against concurrency, one colour per model."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException("--plot needs matplotlib: pip install matplotlib "
                                   "(or `pip install --group bench`)") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in sorted({r["model"] for r in rows}):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["concurrency"])
        levels = [r["concurrency"] for r in mine]
        line, = ax.plot(levels, [r["tokens_per_s_aggregate"] for r in mine], marker="o",
                        label=f"{model} aggregate")
        ax.plot(levels, [r["tokens_per_s_request"] for r in mine], marker="s", linestyle="--",
                color=line.get_color(), label=f"{model} per request")
    ax.set_xlabel("concurrent requests (from the job history)")
    ax.set_ylabel("generated tokens/s")
    ax.set_title("corral throughput by concurrency")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command()
@click.option("--since", default=None,
              help="Only jobs created since this ISO time or this long ago (e.g. 1h, 30m, 7d).")
@click.option("--model", "-m", default=None, help="Only this model.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also draw tokens/s against concurrency into FILE.png.")
def report(since: str | None, model: str | None, plot_path: Path | None) -> None:
    """Tokens/s and latency per model and concurrency level, from the job history.

    A job's concurrency is how many jobs of its model were running, on average, while it ran.
    """
    query = urllib.parse.urlencode({k: v for k, v in (("since", since), ("model", model)) if v})
    rows = Client().request("GET", "/jobs/report" + (f"?{query}" if query else ""))["rows"]
    if not rows:
        click.echo("no finished generate or chat jobs in the history" +
                   (" for that selection" if since or model else ""), err=True)
        return
    for line in table(rows):
        click.echo(line)
    if plot_path is not None:
        plot(rows, plot_path)
        click.echo(f"plot written to {plot_path}", err=True)
