"""Ollama's prompt rules over Go templates: a model's TEMPLATE rendered from chat messages.

The template language itself is in service.models.gotemplate; this module decides what a template
sees, as Ollama's Template.Execute does (system collation, legacy Prompt/Response turns).
"""

from __future__ import annotations

from typing import Any

from service.models.gotemplate import cut_after_response, execute, fail, identifiers, parse


class Template:
    """A parsed template; `render` fills it from a dict of Go-style names (System, Messages)."""

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
    def uses_messages(self) -> bool:
        """Whether the template ranges over .Messages itself (else it is a legacy template)."""
        return bool({"messages", "document"} & self.variables)

    def render(self, values: dict[str, Any]) -> str:
        """Execute the template with `values` as both `.` and `$`."""
        return execute(self._nodes, values)

    def __str__(self) -> str:
        return self.text


def render_chat(
    template: Template, messages: list[dict[str, Any]], system: str | None = None
) -> str:
    """Build a prompt from chat messages the way Ollama's Template.Execute does, leaving the
    assistant's turn open. `system` (the model's SYSTEM) is prepended unless the first message
    already is a system message."""
    msgs = [dict(m) for m in messages]
    if system and (not msgs or msgs[0].get("role") != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    system_text, collated = _collate(msgs)
    values = {"Tools": [], "Response": "", "Think": False, "IsThinkSet": False}
    if template.uses_messages:
        return template.render({**values, "System": system_text, "Messages": collated})
    return _render_legacy(template, collated, values)


def _collate(msgs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Join all system texts, and merge consecutive messages of one role (except tool)."""
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
    out.append(execute(template._prompt_nodes, {**base, **turn}))
    return "".join(out)
