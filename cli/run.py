"""`corral run MODEL PROMPT`: stream one answer to the terminal."""

from __future__ import annotations

import sys

import click

from cli.client import Client


@click.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--system", default=None, help="System message.")
@click.option("--temperature", type=float, default=None)
@click.option("--num-predict", type=int, default=None, help="Maximum tokens to generate.")
def run(model: str, prompt: tuple[str, ...], system: str | None, temperature: float | None,
        num_predict: int | None) -> None:
    """Send PROMPT (or standard input) to MODEL and stream the answer."""
    text = " ".join(prompt)
    if not text and not sys.stdin.isatty():
        text = sys.stdin.read()
    if not text:
        raise click.UsageError("give a prompt, or pipe one on standard input")
    messages = ([{"role": "system", "content": system}] if system else [])
    messages.append({"role": "user", "content": text})
    options = {k: v for k, v in (("temperature", temperature), ("num_predict", num_predict))
               if v is not None}
    body = {"model": model, "messages": messages, "options": options, "stream": True}
    for chunk in Client().stream("POST", "/api/chat", body):
        if not chunk.get("done"):
            click.echo(chunk["message"]["content"], nl=False)
    click.echo()
