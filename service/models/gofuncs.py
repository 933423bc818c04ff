"""The functions a TEMPLATE may call beyond Go's comparisons and printing: Ollama's FuncMap
(template/template.go: currentDate, yesterdayDate, toTypeScriptType) and Go's escapers
(html, js, urlquery). Library templates call them, so a model whose template does would
otherwise be refused. service.models.gotemplate puts them in its function table.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from urllib.parse import quote_plus


def current_date(*_format: str) -> str:
    """Ollama's currentDate: today, local time, as "2006-01-02" (a format argument is
    accepted and ignored, as Ollama does, so library templates that pass one still run)."""
    return date.today().isoformat()


def yesterday_date(*_format: str) -> str:
    """Ollama's yesterdayDate: the day before currentDate, in the same form."""
    return (date.today() - timedelta(days=1)).isoformat()


_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
             "array": "any[]", "object": "Record<string, any>", "null": "null"}


def typescript_type(prop: Any) -> str:
    """Ollama's toTypeScriptType: a tool parameter's JSON-schema type as TypeScript, so a
    template can write `location: string | null`. anyOf branches and type lists become
    unions; anything else (no type, an unknown one, a value that is not a schema) is "any"."""
    if not isinstance(prop, dict):
        return "any"
    if isinstance(prop.get("anyOf"), list) and prop["anyOf"]:
        return " | ".join(typescript_type(branch) for branch in prop["anyOf"])
    kinds = prop.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
    if not kinds:
        return "any"
    return " | ".join(_TS_TYPES.get(k, "any") if isinstance(k, str) else "any" for k in kinds)


_HTML = {"\0": "\uFFFD", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
_JS = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E",
       "&": "\\u0026", "=": "\\u003D"}


def html(text: str) -> str:
    """Go's html: the five HTML-special characters as entities, as HTMLEscapeString."""
    return "".join(_HTML.get(c, c) for c in text)


def js(text: str) -> str:
    """Go's js: quotes, backslash, <, >, &, = and control characters as JavaScript escapes."""
    out = []
    for c in text:
        if c in _JS:
            out.append(_JS[c])
        elif c < " " or (c >= "\x80" and not c.isprintable()):  # Go: not unicode.IsPrint
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def urlquery(text: str) -> str:
    """Go's urlquery: the text escaped for a URL query (url.QueryEscape)."""
    return quote_plus(text, safe="")
