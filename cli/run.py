"""`corral run MODEL [PROMPT]`: one answer when given a prompt or piped input, otherwise an
interactive chat with Ollama's commands (/set, /show, /clear, /save, /load, /bye, \"\"\")."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from cli.client import APIError, Client
from cli.models import describe

HELP = """Available Commands:
  /set parameter NAME VALUE   Set a parameter (e.g. temperature, num_predict)
  /set system TEXT            Set the system message
  /show info                  Show details for this model
  /show (license|modelfile|parameters|system|template)
  /clear                      Clear session context
  /save NAME                  Save this session (system, parameters, messages) as a model
  /load NAME                  Load a model or session
  /bye                        Exit
  /?, /help                   Help for a command

Use \"\"\" to begin a multi-line message."""


@click.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--system", default=None, help="System message.")
@click.option("--temperature", type=float, default=None)
@click.option("--num-predict", type=int, default=None, help="Maximum tokens to generate.")
@click.option("--keepalive", default=None, help="How long to keep the model loaded (e.g. 5m).")
def run(model: str, prompt: tuple[str, ...], system: str | None, temperature: float | None,
        num_predict: int | None, keepalive: str | None) -> None:
    """Chat with MODEL, or answer PROMPT (or standard input) once and exit."""
    options = {k: v for k, v in (("temperature", temperature), ("num_predict", num_predict))
               if v is not None}
    session = Session(Client(), model, system, options, keepalive)
    text = " ".join(prompt)
    if not sys.stdin.isatty():
        piped = sys.stdin.read()
        text = f"{piped}\n\n{text}" if text and piped else piped or text
    if text:
        session.ask(text)
        return
    session.interact()


class Session:
    """One conversation: the model, its system message, options and the turns so far."""

    def __init__(self, client: Client, model: str, system: str | None,
                 options: dict[str, Any], keep_alive: str | None) -> None:
        self.client, self.model, self.system = client, model, system
        self.options, self.keep_alive = dict(options), keep_alive
        self.messages: list[dict[str, str]] = []

    def _chat_body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "options": self.options, "stream": True}
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    def ask(self, text: str) -> str:
        """Send one user turn, printing the answer as it streams; keep both turns."""
        turns = self.messages + [{"role": "user", "content": text}]
        system = [{"role": "system", "content": self.system}] if self.system else []
        parts = []
        try:
            for chunk in self.client.stream("POST", "/api/chat", self._chat_body(system + turns)):
                piece = chunk.get("message", {}).get("content", "")
                parts.append(piece)
                click.echo(piece, nl=False)
        except KeyboardInterrupt:
            click.echo()
            return "".join(parts)  # a cancelled answer is not kept, as in Ollama
        click.echo("\n" if sys.stdout.isatty() else "")
        answer = "".join(parts)
        self.messages = turns + [{"role": "assistant", "content": answer}]
        return answer

    def load(self) -> None:
        """Load the model now (an empty chat), so the first answer does not wait for it."""
        body = self._chat_body([])
        body["stream"] = False
        self.client.request("POST", "/api/chat", body)

    def interact(self) -> None:
        """Read messages and /commands until /bye or end of input."""
        self.load()
        commands: dict[str, Callable[[list[str]], bool]] = {
            "/set": self._set, "/show": self._show, "/clear": self._clear,
            "/save": self._save, "/load": self._load, "/bye": lambda _: False,
            "/exit": lambda _: False, "/?": self._help, "/help": self._help}
        while (text := read_message()) is not None:
            if not text.strip():
                continue
            if text.startswith("/"):
                words = text.split()
                handler = commands.get(words[0])
                if handler is None:
                    click.echo(f"Unknown command '{words[0]}'. Type /? for help")
                elif not handler(words[1:]):
                    return
                continue
            self.ask(text)

    def _help(self, _: list[str]) -> bool:
        click.echo(HELP)
        return True

    def _set(self, args: list[str]) -> bool:
        if len(args) >= 3 and args[0] == "parameter":
            # Imported here, not at the top: only `/set parameter` parses Modelfile text.
            from service.core.errors import InvalidRequest
            from service.models.modelfile import parse_modelfile

            name, value = args[1], " ".join(args[2:])
            try:
                parsed = parse_modelfile(f"FROM _\nPARAMETER {name} {value}\n").parameters
            except InvalidRequest as exc:
                click.echo(f"Couldn't set parameter: {exc.message.split(': ', 1)[-1]}")
                return True
            self.options.update(parsed)
            click.echo(f"Set parameter '{name}' to '{value}'")
        elif len(args) >= 2 and args[0] == "system":
            self.system = " ".join(args[1:]).strip('"')
            click.echo("Set system message.")
        else:
            click.echo("Usage:\n  /set parameter NAME VALUE\n  /set system TEXT")
        return True

    def _show(self, args: list[str]) -> bool:
        try:
            info = self.client.request("POST", "/api/show", {"model": self.model})
        except APIError as exc:
            click.echo(f"error: {exc.message}")
            return True
        part = args[0] if args else "info"
        if part == "info":
            click.echo(describe(info))
        elif part == "system" and self.system:
            click.echo(self.system)
        elif part in ("license", "modelfile", "parameters", "system", "template"):
            click.echo(info.get(part) or f"No {part} was specified for this model.")
        else:
            click.echo("Usage: /show info|license|modelfile|parameters|system|template")
        return True

    def _clear(self, _: list[str]) -> bool:
        self.messages = []
        click.echo("Cleared session context")
        return True

    def _save(self, args: list[str]) -> bool:
        if len(args) != 1:
            click.echo("Usage: /save NAME")
            return True
        body: dict[str, Any] = {"model": args[0], "from": self.model, "stream": False,
                                "parameters": self.options, "messages": self.messages}
        if self.system:
            body["system"] = self.system
        try:
            self.client.request("POST", "/api/create", body)
        except APIError as exc:
            click.echo(f"error: {exc.message}")
            return True
        click.echo(f"Created new model '{args[0]}'")
        return True

    def _load(self, args: list[str]) -> bool:
        if len(args) != 1:
            click.echo("Usage: /load NAME")
            return True
        previous, self.model = self.model, args[0]
        click.echo(f"Loading model '{self.model}'")
        try:
            self.load()
        except APIError as exc:
            click.echo(f"error: {exc.message}")
            self.model = previous
            return True
        self.messages = []
        return True


def read_message() -> str | None:
    """One message from the terminal: a line, or \"\"\"-quoted lines; None at end of input."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    try:
        line = input(">>> ")
        if not line.startswith('"""'):
            return line
        lines, rest = [], line[3:]
        while not rest.endswith('"""'):
            lines.append(rest)
            rest = input("... ")
        lines.append(rest[:-3])
        return "\n".join(lines).strip("\n")
    except EOFError:
        click.echo()
        return None
    except KeyboardInterrupt:
        click.echo("\nUse Ctrl + d or /bye to exit.")
        return ""
