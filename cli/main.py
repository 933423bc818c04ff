"""The `corral` command: one group, with subcommands from one module per command group.

Subcommands are loaded lazily (click's LazyGroup pattern), so that `corral list` imports only
the module of `list` and the HTTP client, never the service's workers, queue or database.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from service.core.version import __version__

# Command name -> "module:attribute" of its click command; imported when first asked for.
SUBCOMMANDS: dict[str, str] = {
    "batch": "cli.batch:batch",
    "cp": "cli.models:copy",
    "create": "cli.models:create",
    "env": "cli.serve:env_command",
    "jobs": "cli.jobs:jobs",
    "keys": "cli.keys:keys",
    "list": "cli.models:list_models",
    "ps": "cli.models:ps",
    "pull": "cli.models:pull",
    "push": "cli.models:push",
    "report": "cli.report:report",
    "rm": "cli.models:remove",
    "run": "cli.run:run",
    "serve": "cli.serve:serve",
    "show": "cli.models:show",
    "stop": "cli.models:stop",
    "worker": "cli.serve:worker",
    "workers": "cli.models:workers",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on use: starting one command does not pay for
    the imports of every other (`corral list` must not load Celery or SQLAlchemy)."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every name, eager and lazy, sorted as click sorts a plain group's commands."""
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            return self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, cmd_name: str) -> click.Command:
        """Import the command's module and return the click command it names."""
        module_name, attribute = self.lazy_subcommands[cmd_name].split(":", 1)
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}:{attribute} is not a click command")
        return command


@click.group(cls=LazyGroup, lazy_subcommands=SUBCOMMANDS)
@click.version_option(__version__, prog_name="corral")
def cli() -> None:
    """corral: run open GGUF models locally through a job queue."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
