"""Tool calls in a model's output: which template styles ask for them, the JSON schema one
call must match, and a streaming parser that splits output into text and calls.

Models are taught one of a few formats by their templates, and the parser knows the common
ones (as Ollama's and llama-server's parsers do):

    Hermes / Qwen   <tool_call>{"name": ..., "arguments": {...}}</tool_call>   (one or more)
    Llama 3         {"name": ..., "parameters": {...}}  as the whole answer (or after
                    <|python_tag|>); several may follow one another, `;`-separated
    Mistral         [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]
                    or the newer [TOOL_CALLS]name[ARGS]{...}

Pure text in, dicts out: the worker feeds it the decoded text as it streams, and the HTTP
faces shape the calls (Ollama's `arguments` object, OpenAI's JSON string).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MISTRAL = "[TOOL_CALLS]"
PYTHON_TAG = "<|python_tag|>"  # Llama 3.1's marker before a JSON call
MARKERS = (HERMES_OPEN, MISTRAL, PYTHON_TAG)
_MISTRAL_NAMED = re.compile(r"\s*([^\s\[\]{}]+)\[ARGS\]")


def call_style(template_source: str) -> str:
    """How a template teaches calls, so a forced call is written the way the model was told:
    "hermes" (it shows <tool_call> tags) or "json" (a bare JSON object)."""
    return "hermes" if HERMES_OPEN in template_source else "json"


@dataclass(frozen=True)
class ToolPlan:
    """What a chat job does about tools: show them to the template, parse calls out of the
    output, and, when some call is required, constrain the output to one."""

    tools: list[dict[str, Any]]  # the request's tools, as the template sees them
    forced: list[str]  # names one of which the answer must call; [] lets the model choose
    style: str  # how a forced call is written (call_style)

    @property
    def names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]


def call_schema(tools: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The JSON schema of one call to one of `names`: {"name": <const>, "arguments": <that
    tool's parameters>}, name first so a grammar makes the model choose the function first."""
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    options = [{"type": "object",
                "properties": {"name": {"const": name}, "arguments": by_name[name]},
                "required": ["name", "arguments"]} for name in names]
    return options[0] if len(options) == 1 else {"oneOf": options}


def json_end(text: str, start: int = 0) -> int | None:
    """The index just past the JSON object or array opening at text[start], or None while it
    is still open (strings and escapes respected; nothing else is validated)."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def as_calls(value: Any) -> list[dict[str, Any]] | None:
    """`value` (decoded JSON) read as calls, or None if it is not calls: an object with a
    string `name` and `arguments` or `parameters` (an object or the JSON text of one), or a
    list of such objects."""
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        calls.append({"name": item["name"], "arguments": arguments})
    return calls or None


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class ToolCallParser:
    """Split streamed output into the text to show and the calls it makes.

    feed() returns the text that is certainly not part of a call; what might still become one
    (a marker's first characters, an opened call) is held until it is decided. A call that
    does not parse is given back as text, so nothing the model wrote is lost. Whitespace is
    held too, so the blank lines around calls do not become an answer of their own.
    """

    def __init__(self, names: Iterable[str], id_prefix: str | None = None) -> None:
        self.names = set(names)  # a bare JSON object is a call only if it names one of these
        self.id_prefix = id_prefix  # calls are <prefix><index>; None: random, as OpenAI's
        self.calls: list[dict[str, Any]] = []  # every call so far, in Ollama's shape
        self._new = 0  # calls not yet taken
        self._held = ""  # text not yet decided
        self._space = ""  # whitespace given out but not yet shown
        self._answered = False  # text was shown: a bare JSON object is text from now on

    def feed(self, text: str) -> str:
        """Take the next piece of output; return the text that can be shown now."""
        self._held += text
        return self._drain(final=False)

    def close(self) -> str:
        """The output ended: decide what is held (an unfinished call is tried as it is)."""
        text = self._drain(final=True)
        if not self.calls:
            text += self._space
        self._space = ""
        return text

    def take(self) -> list[dict[str, Any]]:
        """The calls completed since the last take."""
        new, self._new = self.calls[len(self.calls) - self._new:], 0
        return new

    def _drain(self, final: bool) -> str:
        out: list[str] = []
        while self._held:
            step = self._bare_json(final) if not self._answered else None
            if step is None:
                step = self._marked(final, out)
            if not step:
                break
        return "".join(out)

    def _bare_json(self, final: bool) -> bool | None:
        """A call as the whole answer (Llama 3): True if one was taken, False to wait for
        more, None if the held text is not one (it is then plain text)."""
        body = self._held.lstrip().lstrip(";").lstrip()
        if not body:
            return False if not final else None
        if body[0] != "{":
            return None
        end = json_end(body)
        if end is None:
            if not final:
                return False
            end = len(body)
        calls = as_calls(_decode(body[:end]))
        if not calls or not all(c["name"] in self.names for c in calls):
            self._answered = True
            return None
        self._record(calls)
        self._held = body[end:]
        return True

    def _marked(self, final: bool, out: list[str]) -> bool:
        """Show the text before the first marker and take the call after it; False when the
        rest must wait for more output."""
        held = self._held
        found = [(held.find(m), m) for m in MARKERS if m in held]
        if not found:
            keep = 0 if final else partial_marker(held)
            self._show(held[:len(held) - keep], out)
            self._held = held[len(held) - keep:]
            return False
        start, marker = min(found)
        self._show(held[:start], out)
        taken = self._call_after(marker, held[start + len(marker):], final)
        if taken is None:
            if final:
                self._show(held[start:], out)
                self._held = ""
            else:
                self._held = held[start:]
            return False
        self._held = taken
        return True

    def _call_after(self, marker: str, body: str, final: bool) -> str | None:
        """Take the call(s) that follow a marker; return the text after them, or None if they
        are unfinished (or, at the end, do not parse)."""
        if marker == HERMES_OPEN:
            close = body.find(HERMES_CLOSE)
            if close < 0 and not final:
                return None
            inner, rest = (body, "") if close < 0 else (body[:close],
                                                         body[close + len(HERMES_CLOSE):])
        else:
            named = _MISTRAL_NAMED.match(body) if marker == MISTRAL else None
            start = named.end() if named else len(body) - len(body.lstrip())
            end = json_end(body, start) if body[start:start + 1] in ("{", "[") else None
            if end is None and not final:
                return None
            end = end or len(body)
            inner, rest = body[start:end], body[end:]
            if named:
                inner = json.dumps({"name": named.group(1), "arguments": _decode(inner)})
        calls = as_calls(_decode(inner.strip()))
        if calls is None:
            return None
        self._record(calls)
        return rest

    def _show(self, text: str, out: list[str]) -> None:
        if not text.strip():
            self._space += text
            return
        out.append(self._space + text)
        self._space = ""
        self._answered = True

    def _record(self, calls: list[dict[str, Any]]) -> None:
        for call in calls:
            index = len(self.calls)
            id_ = f"{self.id_prefix}{index}" if self.id_prefix else f"call_{secrets.token_hex(8)}"
            self.calls.append({"id": id_, "function": {"index": index, **call}})
            self._new += 1


def partial_marker(text: str, markers: Iterable[str] = MARKERS) -> int:
    """How many of text's last characters could be the start of a marker: what a streaming
    parser holds back until the next chunk decides it (tool-call markers, reasoning tags)."""
    markers = tuple(markers)
    for size in range(min(len(text), max(map(len, markers))), 0, -1):
        if any(m.startswith(text[-size:]) for m in markers):
            return size
    return 0


def call_ids(job_id: str) -> str:
    """The id prefix of a job's calls: the worker's events and a batch's results, built from
    the same record, name each call alike, and no two jobs' calls share an id."""
    return f"call_{job_id}_"


def split_calls(text: str, names: Iterable[str], id_prefix: str | None = None
                ) -> tuple[str, list[dict[str, Any]]]:
    """A whole output's text and calls (what ToolCallParser gives when fed it at once)."""
    parser = ToolCallParser(names, id_prefix)
    shown = parser.feed(text) + parser.close()
    return shown, parser.calls
