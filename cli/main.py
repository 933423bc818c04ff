"""The `corral` command: one group, with subcommands from one module per command group."""

from __future__ import annotations

import click

from cli.batch import batch
from cli.jobs import jobs
from cli.models import copy, create, list_models, ps, pull, remove, show, stop
from cli.report import report
from cli.run import run
from cli.serve import env_command, serve, worker
from service.core.version import __version__


@click.group()
@click.version_option(__version__, prog_name="corral")
def cli() -> None:
    """corral: run open GGUF models locally through a job queue."""


for command in (serve, worker, env_command, create, list_models, remove, run, batch):
    cli.add_command(command)
for command in (show, copy, pull, ps, stop, jobs):
    cli.add_command(command)
cli.add_command(report)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
