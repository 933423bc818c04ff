"""Go's text/template, the part that Ollama model TEMPLATEs use: parse and execute.

Supported: text with `{{ }}` actions and `{{- -}}` trimming, `{{/* comments */}}`, fields
(`.Messages`, `.Function.Name`), `$` and variables (`$x := ...`, `$x = ...`), string, number
and boolean literals, pipelines with `|` and `( )`, `if / else if / else`, `range` (with
`$i, $m :=`, `else`, `break`, `continue`), `with`, Go's functions (eq ne lt le gt ge and or
not len index slice print printf println html js urlquery; not `call`, since a template's data
holds no functions) and Ollama's FuncMap (json currentDate yesterdayDate toTypeScriptType).
Parse errors and run-time errors are InvalidRequest("template: ..."), because a template is
something a user sent; an unknown function is a parse error, so creating a model refuses it.

Differences from Go, chosen for prompts: a missing field prints as "" (Go prints
"<no value>"), a field of a missing value is missing rather than an error, maps and lists
print as JSON (as Ollama's Tools and tool-call arguments do), and dict keys are looked up as
written and then in snake_case, so `.ToolCalls` finds an API message's `tool_calls`.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Callable
from typing import Any

from service.core.errors import InvalidRequest
from service.models import gofuncs

_WS = " \t\r\n"
_ACTION = re.compile(r"\{\{(-[ \t\r\n])?(.*?)([ \t\r\n]-)?\}\}", re.S)
_TOKEN = re.compile(
    r"""(?P<ws>\s+)|(?P<str>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)
    |(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<op>:=|[=|(),])
    |(?P<var>\$\w*(?:\.\w+)*)|(?P<field>(?:\.\w+)+|\.)|(?P<ident>[A-Za-z_]\w*)""",
    re.X,
)
_VERB = re.compile(r"%([-+# 0]*\d*(?:\.\d+)?)([a-zA-Z%])")


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _fail(message: str, line: int | None = None) -> InvalidRequest:
    where = f"line {line}: " if line else ""
    return InvalidRequest(f"template: {where}{message}")


# --- parsing -------------------------------------------------------------------------------


def _chunks(text: str) -> list[tuple[str, str, int]]:
    """Split text into ("text", s, line) and ("action", body, line), applying {{- -}} trims."""
    chunks: list[tuple[str, str, int]] = []
    pos, line, trim_next = 0, 1, False
    for m in _ACTION.finditer(text):
        before = text[pos : m.start()]
        before = before.lstrip(_WS) if trim_next else before
        before = before.rstrip(_WS) if m.group(1) else before
        if "{{" in before:
            raise _fail("unclosed action", line + text.count("\n", pos, text.index("{{", pos)))
        if before:
            chunks.append(("text", before, line))
        line += text.count("\n", pos, m.start())
        body = m.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            chunks.append(("action", m.group(2), line))
        line += text.count("\n", m.start(), m.end())
        pos, trim_next = m.end(), bool(m.group(3))
    tail = text[pos:].lstrip(_WS) if trim_next else text[pos:]
    if "{{" in tail:
        raise _fail("unclosed action", line)
    if tail:
        chunks.append(("text", tail, line))
    return chunks


def _tokens(body: str, line: int) -> list[tuple[str, str, bool]]:
    """Tokenize an action; each token records whether whitespace came before it."""
    out, pos, spaced = [], 0, True
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if not m:
            raise _fail(f"unexpected {body[pos]!r} in action", line)
        if m.lastgroup == "ws":
            spaced = True
        else:
            out.append((m.lastgroup or "", m.group(), spaced))
            spaced = False
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over the chunks, checking variables and loops as Go's parser does."""

    def __init__(self, text: str) -> None:
        self.chunks = _chunks(text)
        self.i = 0
        self.declared = ["$"]
        self.loops = 0

    def parse(self) -> list:
        nodes, end = self.parse_list()
        if end:
            raise _fail(f"unexpected {{{{{end[0]}}}}}", end[2])
        return nodes

    def parse_list(self) -> tuple[list, tuple | None]:
        """Parse nodes until {{end}} or {{else}}, returned as (word, rest, line), or EOF."""
        nodes: list = []
        while self.i < len(self.chunks):
            kind, payload, line = self.chunks[self.i]
            self.i += 1
            if kind == "text":
                nodes.append(("text", payload))
                continue
            toks = _tokens(payload, line)
            if not toks:
                raise _fail("missing value for command", line)
            head = toks[0][1] if toks[0][0] == "ident" else ""
            if head in ("end", "else"):
                return nodes, (head, toks[1:], line)
            nodes.append(self.parse_action(head, toks, line))
        return nodes, None

    def parse_action(self, head: str, toks: list, line: int) -> tuple:
        if head in ("if", "range", "with"):
            mark = len(self.declared)
            try:
                if head == "if":
                    return self.parse_if(toks[1:], line)
                return self.parse_block(head, toks[1:], line)
            finally:
                del self.declared[mark:]
        if head in ("break", "continue"):
            if len(toks) > 1 or not self.loops:
                raise _fail(f"{{{{{head}}}}} outside {{{{range}}}}", line)
            return (head,)
        if head in ("define", "template", "block"):
            raise _fail(f"{{{{{head}}}}} is not supported", line)
        return ("action", self.pipeline(toks, line, max_decl=1))

    def parse_if(self, toks: list, line: int) -> tuple:
        branches = []
        cond = self.pipeline(toks, line, max_decl=1)
        while True:
            body, end = self.parse_list()
            branches.append((cond, body))
            word, rest, end_line = self.expect_end(end, "if", line)
            if word == "end":
                return ("if", branches, [])
            if rest and rest[0][:2] == ("ident", "if"):
                cond = self.pipeline(rest[1:], end_line, max_decl=1)
                continue
            if rest:
                raise _fail("unexpected tokens after {{else}}", end_line)
            return ("if", branches, self.parse_else("if", line))

    def parse_block(self, head: str, toks: list, line: int) -> tuple:
        pipe = self.pipeline(toks, line, max_decl=2 if head == "range" else 1)
        self.loops += head == "range"
        body, end = self.parse_list()
        self.loops -= head == "range"
        word, rest, end_line = self.expect_end(end, head, line)
        if rest:
            raise _fail(f"unexpected tokens after {{{{{word}}}}}", end_line)
        return (head, pipe, body, [] if word == "end" else self.parse_else(head, line))

    def parse_else(self, head: str, line: int) -> list:
        body, end = self.parse_list()
        word, rest, end_line = self.expect_end(end, head, line)
        if word != "end" or rest:
            raise _fail(f"expected {{{{end}}}} after {{{{else}}}}, got {{{{{word}}}}}", end_line)
        return body

    @staticmethod
    def expect_end(end: tuple | None, head: str, line: int) -> tuple:
        if end is None:
            raise _fail(f"unexpected EOF: {{{{{head}}}}} has no {{{{end}}}}", line)
        return end

    def pipeline(self, toks: list, line: int, max_decl: int) -> tuple:
        """Parse `[$a[, $b] (:= | =)] command | command ...` into (decl, op, commands)."""
        names, j = [], 0
        while j < len(toks) and toks[j][0] == "var" and "." not in toks[j][1]:
            names.append(toks[j][1])
            j += 1
            if j < len(toks) and toks[j][1] == "," and len(names) < 2:
                j += 1
                continue
            break
        decl, op, pos = [], None, 0
        if names and j < len(toks) and toks[j][1] in (":=", "="):
            if len(names) > max_decl or (len(names) > 1 and toks[j][1] == "="):
                raise _fail("too many declarations in command", line)
            decl, op, pos = names, toks[j][1], j + 1
            for name in names if op == "=" else []:
                self.check_var(name, line)
        cmds, pos = self.commands(toks, pos, line, nested=False)
        self.declared += decl if op == ":=" else []
        return (decl, op, cmds)

    def commands(self, toks: list, pos: int, line: int, nested: bool) -> tuple[list, int]:
        cmds: list = []
        args: list = []
        while pos < len(toks) and toks[pos][1] != ")":
            if toks[pos][1] == "|":
                if not args:
                    raise _fail("missing command before '|'", line)
                cmds.append(args)
                args, pos = [], pos + 1
                continue
            arg, pos = self.operand(toks, pos, line)
            args.append(arg)
        if pos < len(toks) and not nested:
            raise _fail("unexpected ')'", line)
        if not args:
            raise _fail("missing value for command", line)
        return cmds + [args], pos

    def operand(self, toks: list, pos: int, line: int) -> tuple[tuple, int]:
        kind, text, _ = toks[pos]
        pos += 1
        if kind == "str":
            return ("lit", _unquote(text, line)), pos
        if kind == "raw":
            return ("lit", text[1:-1]), pos
        if kind == "num":
            return ("lit", float(text) if any(c in text for c in ".eE") else int(text)), pos
        if kind == "var":
            name, *chain = text.split(".")
            self.check_var(name, line)
            return ("var", name, chain), pos
        if kind == "field":
            return ("field", [p for p in text.split(".") if p]), pos
        if kind == "ident":
            if text in ("true", "false", "nil"):
                return ("lit", {"true": True, "false": False, "nil": None}[text]), pos
            if text not in _FUNCS:
                raise _fail(f'function "{text}" not defined', line)
            return ("func", text), pos
        if text == "(":
            cmds, pos = self.commands(toks, pos, line, nested=True)
            if pos >= len(toks):
                raise _fail("unclosed left paren", line)
            pos += 1
            chain: list[str] = []
            if pos < len(toks) and toks[pos][0] == "field" and not toks[pos][2]:
                chain, pos = [p for p in toks[pos][1].split(".") if p], pos + 1
            return ("sub", ([], None, cmds), chain), pos
        raise _fail(f"unexpected {text!r} in operand", line)

    def check_var(self, name: str, line: int) -> None:
        if name not in self.declared:
            raise _fail(f'undefined variable "{name}"', line)


def _unquote(text: str, line: int) -> str:
    """Decode a Go string literal; Go and Python share the escapes templates use."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown escape is an error in Go too
        try:
            return ast.literal_eval(text)
        except (SyntaxError, ValueError, Warning):
            raise _fail(f"invalid string literal {text}", line) from None


def _identifiers(nodes: list) -> set[str]:
    """Collect field and variable names in lower case, as Ollama's Template.Vars does."""
    found: set[str] = set()

    def pipe(p: tuple) -> None:
        for cmd in p[2]:
            for arg in cmd:
                if arg[0] == "field":
                    found.update(name.lower() for name in arg[1])
                elif arg[0] == "var":
                    found.update(name.lower() for name in [arg[1], *arg[2]])
                elif arg[0] == "sub":
                    pipe(arg[1])

    for node in _walk_nodes(nodes):
        if node[0] == "action" or node[0] in ("range", "with"):
            pipe(node[1])
        elif node[0] == "if":
            for cond, _ in node[1]:
                pipe(cond)
    return found


def _walk_nodes(nodes: list):
    for node in nodes:
        yield node
        if node[0] == "if":
            for _, body in node[1]:
                yield from _walk_nodes(body)
            yield from _walk_nodes(node[2])
        elif node[0] in ("range", "with"):
            yield from _walk_nodes(node[2])
            yield from _walk_nodes(node[3])


def _pipe_fields(pipe: tuple) -> list[list[str]]:
    """The `.A.B` field chains a pipeline names, sub-pipelines included (not `$.A`)."""
    found = []
    for cmd in pipe[2]:
        for arg in cmd:
            if arg[0] == "field":
                found.append(arg[1])
            elif arg[0] == "sub":
                found += _pipe_fields(arg[1])
    return found


def _thinking_tags(nodes: list) -> tuple[str, str]:
    """Ollama's thinking.InferTags: where a `.Thinking` field is used and the nearest range
    around it is over `.Messages`, the list of nodes holding it opens and closes with the
    tags (trimmed text), e.g. ("<think>", "</think>"); the last such use wins, as in Ollama."""
    tags = ["", ""]

    def visit(ns: list, in_messages: bool) -> None:
        for node in ns:
            kind = node[0]
            pipes = [node[1]] if kind in ("action", "range", "with") else (
                [cond for cond, _ in node[1]] if kind == "if" else [])
            # the nearest enclosing range decides, and a range encloses its own pipeline
            inner = in_messages if kind != "range" else any(
                chain[0] == "Messages" for chain in _pipe_fields(node[1]))
            if inner and any(chain[0] == "Thinking" for p in pipes for chain in _pipe_fields(p)):
                first, last = ns[0], ns[-1]
                tags[0] = first[1].strip() if first[0] == "text" else tags[0]
                tags[1] = last[1].strip() if last[0] == "text" else tags[1]
            if kind == "if":
                for _, body in node[1]:
                    visit(body, in_messages)
                visit(node[2], in_messages)
            elif kind in ("range", "with"):
                visit(node[2], inner)
                visit(node[3], inner)

    visit(nodes, False)
    return tags[0], tags[1]


def _cut_after_response(nodes: list) -> list:
    """Copy the tree keeping everything up to the first `.Response` field, as Ollama's
    deleteNode does for the last legacy turn (control conditions are kept as they are)."""
    cut = False

    def walk_pipe(p: tuple) -> tuple | None:
        nonlocal cut
        cmds = []
        for cmd in p[2]:
            args = []
            for arg in cmd:
                if arg[0] == "field" and "Response" in arg[1]:
                    args.append(arg)
                    cut = True
                elif arg[0] == "sub" and not cut:
                    sub = walk_pipe(arg[1])
                    args += [("sub", sub, arg[2])] if sub else []
                elif not cut:
                    args.append(arg)
            if not args:
                return None
            cmds.append(args)
        return (p[0], p[1], cmds) if cmds else None

    def walk(ns: list) -> list:
        out = []
        for n in ns:
            if cut:
                break
            if n[0] == "action":
                p = walk_pipe(n[1])
                out += [("action", p)] if p else []
            elif n[0] == "if":
                out.append(("if", [(c, walk(body)) for c, body in n[1]], walk(n[2])))
            elif n[0] in ("range", "with"):
                out.append((n[0], n[1], walk(n[2]), walk(n[3])))
            else:
                out.append(n)
        return out

    return walk(nodes)


# --- execution -----------------------------------------------------------------------------


def _execute(nodes: list, values: dict[str, Any]) -> str:
    run = _Run(values)
    run.nodes(nodes, values)
    return "".join(run.out)


class _Run:
    """One execution: the output so far and the variable stack ($ at the bottom)."""

    def __init__(self, root: Any) -> None:
        self.out: list[str] = []
        self.vars: list[tuple[str, Any]] = [("$", root)]

    def nodes(self, nodes: list, dot: Any) -> None:
        for node in nodes:
            kind = node[0]
            if kind == "text":
                self.out.append(node[1])
            elif kind == "action":
                value = self.pipe(node[1], dot)
                if not node[1][0]:
                    self.out.append(_to_str(value))
            elif kind in ("break", "continue"):
                raise _Break if kind == "break" else _Continue
            else:  # if, with, range: variables declared inside end with the block
                mark = len(self.vars)
                try:
                    getattr(self, f"run_{kind}")(node, dot)
                finally:
                    del self.vars[mark:]

    def run_if(self, node: tuple, dot: Any) -> None:
        for cond, body in node[1]:
            if _truth(self.pipe(cond, dot)):
                return self.nodes(body, dot)
        self.nodes(node[2], dot)

    def run_with(self, node: tuple, dot: Any) -> None:
        value = self.pipe(node[1], dot)
        if _truth(value):
            self.nodes(node[2], value)
        else:
            self.nodes(node[3], dot)

    def run_range(self, node: tuple, dot: Any) -> None:
        decl, _, cmds = node[1]
        items = _iterate(self.pipe(([], None, cmds), dot))
        if not items:
            return self.nodes(node[3], dot)
        mark = len(self.vars)
        for key, item in items:
            del self.vars[mark:]
            if len(decl) == 1:  # `range $x := ...` binds the element
                self.vars.append((decl[0], item))
            elif len(decl) == 2:
                self.vars += [(decl[0], key), (decl[1], item)]
            try:
                self.nodes(node[2], item)
            except _Continue:
                continue
            except _Break:
                break

    def pipe(self, pipe: tuple, dot: Any) -> Any:
        decl, op, cmds = pipe
        value: Any = None
        for i, cmd in enumerate(cmds):
            value = self.command(cmd, dot, [value] if i else [])
        if op == ":=":
            self.vars.append((decl[0], value))
        elif op == "=":
            index = max(n for n, (name, _) in enumerate(self.vars) if name == decl[0])
            self.vars[index] = (decl[0], value)
        return value

    def command(self, args: list, dot: Any, final: list) -> Any:
        if args[0][0] != "func":
            if len(args) > 1 or final:
                raise _fail("can't give argument to non-function")
            return self.arg(args[0], dot)
        name = args[0][1]
        thunks = [lambda a=a: self.arg(a, dot) for a in args[1:]] + [lambda v=v: v for v in final]
        if name in ("and", "or"):
            return _logic(name, thunks)
        values = [thunk() for thunk in thunks]
        try:
            return _FUNCS[name](*values)
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise _fail(f"error calling {name}: {exc}") from None

    def arg(self, arg: tuple, dot: Any) -> Any:
        kind = arg[0]
        if kind == "lit":
            return arg[1]
        if kind == "field":
            return _fields(dot, arg[1])
        if kind == "var":
            value = next(v for name, v in reversed(self.vars) if name == arg[1])
            return _fields(value, arg[2])
        if kind == "sub":
            return _fields(self.pipe(arg[1], dot), arg[2])
        return self.command([arg], dot, [])


def _logic(name: str, thunks: list[Callable[[], Any]]) -> Any:
    """Evaluate and/or lazily, returning the deciding argument as Go does."""
    if not thunks:
        raise _fail(f"wrong number of args for {name}: want at least 1 got 0")
    value = None
    for thunk in thunks:
        value = thunk()
        if _truth(value) == (name == "or"):
            return value
    return value


def _fields(value: Any, chain: list[str]) -> Any:
    for name in chain:
        if value is None:
            return None
        value = _field(value, name)
    return value


def _field(value: Any, name: str) -> Any:
    """Look a field up in a dict, or as a public data attribute of an object. Templates are
    user input, so private names, methods and the insides of builtin types stay out of reach."""
    if isinstance(value, dict):
        return value[name] if name in value else value.get(_snake(name))
    if not isinstance(value, str | int | float | list | tuple):
        for attr in (name, _snake(name)):
            found = getattr(value, attr, None) if not attr.startswith("_") else None
            if found is not None and not callable(found):
                return found
    raise _fail(f"can't evaluate field {name} in type {type(value).__name__}")


def _snake(name: str) -> str:
    """ToolCalls -> tool_calls; an acronym stays one word (ToolCallID -> tool_call_id)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _iterate(value: Any) -> list[tuple[Any, Any]]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(enumerate(value))
    if isinstance(value, dict):
        return [(k, value[k]) for k in sorted(value)]
    if isinstance(value, int) and not isinstance(value, bool) and value <= 10_000:
        return [(i, i) for i in range(value)]  # Go 1.22's range over an integer, bounded
    raise _fail(f"range can't iterate over {_to_str(value)}")


def _truth(value: Any) -> bool:
    if isinstance(value, str | list | tuple | dict):
        return len(value) > 0
    return bool(value) if isinstance(value, bool | int | float) or value is None else True


def _to_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, list | tuple | dict):
        return _json(value)
    return str(value)


# --- functions -----------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else type(value).__name__


def _compare(a: Any, b: Any) -> None:
    if a is not None and b is not None and _kind(a) != _kind(b):
        raise TypeError("incompatible types for comparison")


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TypeError("missing argument for comparison")
    for b in others:
        _compare(a, b)
    return any(a == b for b in others)


def _ordered(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def check(a: Any, b: Any) -> bool:
        _compare(a, b)
        if _kind(a) not in ("number", "str"):
            raise TypeError(f"invalid type for comparison: {_kind(a)}")
        return test(a, b)

    return check


def _len(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())  # Go's len counts bytes
    if isinstance(value, list | tuple | dict):
        return len(value)
    raise TypeError(f"len of type {_kind(value)}")


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list | tuple | str):
            if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key < len(value):
                raise IndexError(f"index out of range: {key}")
            value = value[key]
        else:
            raise TypeError(f"can't index item of type {_kind(value)}")
    return value


def _slice(value: Any, *indexes: int) -> Any:
    if not isinstance(value, list | tuple | str) or len(indexes) > 3:
        raise TypeError(f"can't slice item of type {_kind(value)}")
    start = indexes[0] if indexes else 0
    end = indexes[1] if len(indexes) > 1 else len(value)
    if not 0 <= start <= end <= len(value):
        raise IndexError(f"index out of range: {start}:{end}")
    return value[start:end]


def _print(*args: Any) -> str:
    """Go's fmt.Sprint: a space goes between operands when neither is a string."""
    out = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_to_str(arg))
    return "".join(out)


def _printf(fmt: str, *args: Any) -> str:
    """A small fmt.Sprintf: %v %s %d %q %t %x %f %e %g, with Python's width and precision."""
    pending = list(args)

    def verb(m: re.Match) -> str:
        flags, kind = m.groups()
        if kind == "%":
            return "%"
        if any(int(n) > 200 for n in re.findall(r"\d+", flags)):
            raise ValueError("width or precision too large")
        if not pending:
            return f"%!{kind}(MISSING)"
        arg = pending.pop(0)
        if kind in "vst":
            return _to_str(arg)
        if kind == "q":
            return json.dumps(_to_str(arg), ensure_ascii=False)
        return format(int(arg) if kind in "dx" else arg, flags + kind)

    return _VERB.sub(verb, fmt)


def _json(value: Any) -> str:
    """Ollama's `json` function: compact JSON with Go's HTML-safe escapes."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_plain)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plain(value: Any) -> Any:
    return getattr(value, "__dict__", None) or str(value)


def _text_of(args: tuple[Any, ...]) -> str:
    """The text Go's html/js/urlquery escape: a lone string as it is, else fmt.Sprint."""
    return args[0] if len(args) == 1 and isinstance(args[0], str) else _print(*args)


_FUNCS: dict[str, Callable[..., Any]] = {
    "and": _logic,  # and/or are evaluated lazily by _Run.command; listed so they parse
    "or": _logic,
    "not": lambda value: not _truth(value),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _ordered(lambda a, b: a < b),
    "le": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "ge": _ordered(lambda a, b: a >= b),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": _print,
    "printf": _printf,
    "println": lambda *args: " ".join(_to_str(a) for a in args) + "\n",
    "html": lambda *args: gofuncs.html(_text_of(args)),
    "js": lambda *args: gofuncs.js(_text_of(args)),
    "urlquery": lambda *args: gofuncs.urlquery(_text_of(args)),
    "json": _json,
    "currentDate": gofuncs.current_date,
    "yesterdayDate": gofuncs.yesterday_date,
    "toTypeScriptType": gofuncs.typescript_type,
}


def parse(text: str) -> list:
    """Parse template text into nodes; InvalidRequest("template: line N: ...") on errors."""
    return _Parser(text).parse()


def execute(nodes: list, values: dict[str, Any]) -> str:
    """Run parsed nodes with `values` as both `.` and `$`."""
    return _execute(nodes, values)


def identifiers(nodes: list) -> set[str]:
    """Lower-cased names of the fields the nodes refer to (e.g. "messages", "response")."""
    return _identifiers(nodes)


def thinking_tags(nodes: list) -> tuple[str, str]:
    """The tags around a message's .Thinking, as Ollama infers them; ("", "") if none."""
    return _thinking_tags(nodes)


def cut_after_response(nodes: list) -> list:
    """The nodes up to the first {{ .Response }}: a prompt that leaves the reply open."""
    return _cut_after_response(nodes)


def fail(message: str, line: int | None = None) -> InvalidRequest:
    return _fail(message, line)
