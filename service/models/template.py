"""Ollama's prompt rules over Go templates: a model's TEMPLATE rendered from chat messages.

The template language itself is in service.models.gotemplate; this module decides what a template
sees, as Ollama's Template.Execute does (system collation, legacy Prompt/Response turns).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from service.models.gotemplate import (
    cut_after_response,
    execute,
    fail,
    identifiers,
    parse,
    thinking_tags,
)


class Template:
    """A parsed template; `render` fills it from a dict of Go-style names (System, Messages).

    Rendering only reads the parsed nodes, so one Template can serve many jobs at once."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise fail("expected a string")
        self.text = text
        nodes = parse(text)
        if not {"messages", "response"} & identifiers(nodes):
            # Ollama appends {{ .Response }} so a prompt-only template still shows replies.
            nodes.append(("action", ([], None, [[("field", ["Response"])]])))
        self.variables = frozenset(identifiers(nodes))
        self._nodes = nodes
        self._prompt_nodes = cut_after_response(nodes)

    @property
    def uses_suffix(self) -> bool:
        """Whether the template places a fill-in-the-middle .Suffix (Ollama's insert)."""
        return "suffix" in self.variables

    @property
    def uses_tools(self) -> bool:
        """Whether the template shows .Tools, i.e. the model was taught to call them (Ollama
        refuses tools for any other; corral answers as a plain chat)."""
        return "tools" in self.variables

    @property
    def uses_messages(self) -> bool:
        """Whether the template ranges over .Messages itself (else it is a legacy template)."""
        return bool({"messages", "document"} & self.variables)

    @property
    def thinking_tags(self) -> tuple[str, str]:
        """The tags the template writes around a message's .Thinking (("", "") if it writes
        none): Ollama's sign that a model thinks."""
        return thinking_tags(self._nodes)

    def render(self, values: dict[str, Any]) -> str:
        """Execute the template with `values` as both `.` and `$`."""
        return execute(self._nodes, values)

    def render_prompt(self, values: dict[str, Any]) -> str:
        """Execute the template only up to its first {{ .Response }}, so the prompt ends where
        the model's reply begins (the last turn of a legacy template)."""
        return execute(self._prompt_nodes, values)

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=16)
def parsed(text: str) -> Template:
    """The Template for `text`, parsed once: every job of a model carries the same TEMPLATE,
    and a shared Template is safe because rendering never changes it."""
    return Template(text)


def render_chat(template: Template, messages: list[dict[str, Any]],
                tools: list[dict[str, Any]] | None = None,
                think: bool | str | None = None, suffix: str = "") -> str:
    """Build a prompt from a whole conversation the way Ollama's Template.Execute does, leaving
    the assistant's turn open. System messages are part of `messages` (the caller decides
    which SYSTEM applies); their texts are joined into .System. `think` (the request's) is
    .Think, .ThinkLevel and .IsThinkSet, as Ollama sets them.

    Messages and tools are the job's dicts (service.jobs.tools), which the template reaches
    as Ollama's do: `.ToolCalls`, `.Function.Name`, `.Function.Arguments` (printed as JSON),
    `.ToolName`, `.ToolCallID`, and `.Tools` printing as the tools' JSON."""
    system, collated = _collate(messages)
    values = {"Tools": tools or [], "Response": "", "Suffix": suffix, **think_values(think)}
    if template.uses_messages:
        return template.render({**values, "System": system, "Messages": collated})
    return _render_legacy(template, collated, values)


def think_values(think: bool | str | None) -> dict[str, Any]:
    """Ollama's think fields: a level means thinking on, and true alone means "medium"."""
    level = think if isinstance(think, str) else "medium" if think else ""
    return {"Think": bool(think), "ThinkLevel": level, "IsThinkSet": think is not None}


def _collate(msgs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Join all system texts, and merge consecutive messages of one role (except tool), on
    copies so the caller's messages stay as they were."""
    system = [m.get("content") or "" for m in msgs if m.get("role") == "system"]
    collated: list[dict[str, Any]] = []
    for m in msgs:
        if collated and collated[-1].get("role") == m.get("role") and m.get("role") != "tool":
            last = collated[-1]
            last["content"] = f"{last.get('content') or ''}\n\n{m.get('content') or ''}"
        else:
            collated.append(dict(m))
    return "\n\n".join(system), collated


def _render_legacy(template: Template, msgs: list[dict[str, Any]], base: dict[str, Any]) -> str:
    """Render a .System/.Prompt/.Response template once per turn; the last turn stops at
    .Response so the model writes the reply."""
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}
    for m in msgs:
        role, content = m.get("role"), m.get("content") or ""
        flush = (role == "system" and (turn["Prompt"] or turn["Response"])) or (
            role == "user" and turn["Response"]
        )
        if flush:
            out.append(template.render({**base, **turn}))
            turn = {"System": "", "Prompt": "", "Response": ""}
        key = {"system": "System", "user": "Prompt", "assistant": "Response"}.get(role)
        if key:
            turn[key] = content
    out.append(template.render_prompt({**base, **turn}))
    return "".join(out)
