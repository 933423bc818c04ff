"""The repository's layout rules, checked from outside the code: what each part may import.

Each section below guards one part of the tree under its own header; the helpers of a
section are named after that part, so that sections can be added without clashing.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# The CLI (cli/): a client of the service over HTTP.
#
# Only the commands that start processes (cli/serve.py: serve, worker, env; cli/health.py, the
# worker's --check beside it; cli/demo.py, which starts a service) and cli/keys.py (keys are
# made on the database's machine: the first admin key must exist before the API can be asked)
# may use the service's internals, and they import
# the heavy ones inside the commands. Every other cli module talks to the service through
# cli/client.py and may import from it only the settings (CORRAL_HOST), the version and,
# inside the functions that parse a Modelfile, the Modelfile language and the error it raises.
# `corral --help` and `corral list` must start without loading the queue, the database, the
# web app or the engine.
# ---------------------------------------------------------------------------------------------

CLI_DIR = ROOT / "cli"
CLI_HEAVY_PACKAGES = ("celery", "sqlalchemy", "flask", "llama_cpp")
CLI_PROCESS_MODULES = ("serve.py", "health.py", "demo.py", "keys.py")
CLI_SERVICE_AT_MODULE_LEVEL = ("service.core.settings", "service.core.version")
CLI_SERVICE_IN_FUNCTIONS = CLI_SERVICE_AT_MODULE_LEVEL + (
    "service.models.modelfile", "service.core.errors")
UNREACHABLE_HOST = "127.0.0.1:9"  # the discard port: nothing listens, connecting fails at once

# Runs the `corral` group in this process, then prints the heavy packages it loaded as JSON.
_CLI_PROBE = """
import json, sys
from cli.main import cli
try:
    cli(sys.argv[1:], prog_name="corral")
except SystemExit:
    pass
heavy = {heavy!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def run_corral_in_subprocess(*args: str) -> tuple[list[str], subprocess.CompletedProcess]:
    """Run `corral ARGS` in a fresh interpreter (this one has imported everything already);
    return the heavy packages it loaded, and the finished process."""
    code = _CLI_PROBE.format(heavy=CLI_HEAVY_PACKAGES)
    env = {**os.environ, "CORRAL_HOST": UNREACHABLE_HOST}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done


def cli_imports(path: Path) -> list[tuple[str, bool]]:
    """(dotted name, inside a function) for each name a file imports, at any depth: `import a.b`
    gives "a.b", `from a.b import c` gives "a.b.c" (so `from service import x` is seen too)."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((f"{node.module}.{alias.name}", in_function) for alias in node.names)
        nested = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, nested)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


def _within(name: str, packages: tuple[str, ...]) -> bool:
    """Whether a dotted name is one of `packages` or lies inside one."""
    return any(name == package or name.startswith(package + ".") for package in packages)


def cli_import_violations(cli_dir: Path) -> list[str]:
    """Every import in a client cli module (any but the process commands) that breaks the
    rules: anything from `workers`, or from `service` beyond what that place may use."""
    problems = []
    for path in sorted(cli_dir.glob("*.py")):
        if path.name in CLI_PROCESS_MODULES:
            continue
        for name, in_function in cli_imports(path):
            allowed = CLI_SERVICE_IN_FUNCTIONS if in_function else CLI_SERVICE_AT_MODULE_LEVEL
            if _within(name, ("workers",)) or (
                    _within(name, ("service",)) and not _within(name, allowed)):
                where = "in a function" if in_function else "at module level"
                problems.append(f"{path.name} imports {name} {where}")
    return problems


def test_corral_help_and_list_load_neither_celery_nor_sqlalchemy() -> None:
    """A client command starts at once and runs where only the client is installed: it must
    not load the queue (Celery), the database (SQLAlchemy), the web app or the engine."""
    for args in (["--help"], ["list"]):
        loaded, _ = run_corral_in_subprocess(*args)
        assert loaded == [], f"corral {' '.join(args)} loaded {loaded}"


def test_corral_list_reaches_for_the_service_over_http() -> None:
    """`list` ran to its request (it failed on the connection, not on an import)."""
    _, done = run_corral_in_subprocess("list")
    assert f"could not reach corral at http://{UNREACHABLE_HOST}" in done.stderr


def test_corral_help_lists_every_command_with_its_short_help() -> None:
    """The lazy group still lists every command, with the start of its docstring."""
    from cli.main import SUBCOMMANDS, cli

    _, done = run_corral_in_subprocess("--help")
    rows = [line.split(None, 1) for line in done.stdout.split("Commands:", 1)[1].splitlines()]
    listed = {row[0]: row[1] for row in rows if len(row) == 2}
    assert sorted(listed) == sorted(SUBCOMMANDS)
    for name, short_help in listed.items():
        command = cli.get_command(click.Context(cli), name)
        assert command is not None and command.help
        assert " ".join(command.help.split()).startswith(short_help.removesuffix("...")), name


def test_cli_modules_import_from_the_service_only_settings_version_and_modelfile() -> None:
    """The CLI is a client (as Ollama's cmd): it reaches the service over HTTP, so a change
    inside the service cannot break a command that does not start it."""
    assert cli_import_violations(CLI_DIR) == []


def test_cli_import_rules_catch_lazy_and_module_level_imports(tmp_path: Path) -> None:
    """The checker itself: an import inside a function counts, and so does the parser at the
    top of a module; the process commands are exempt."""
    (tmp_path / "lazy.py").write_text("def f():\n    from service.jobs.queue import enqueue\n")
    (tmp_path / "eager.py").write_text("from service.models.modelfile import parse_modelfile\n")
    (tmp_path / "worker.py").write_text("import workers.celery_app\n")
    (tmp_path / "serve.py").write_text("from service.jobs.queue import enqueue\n")
    assert cli_import_violations(tmp_path) == [
        "eager.py imports service.models.modelfile.parse_modelfile at module level",
        "lazy.py imports service.jobs.queue.enqueue in a function",
        "worker.py imports workers.celery_app at module level",
    ]


# ---------------------------------------------------------------------------------------------
# The layers: workers use the service's domain but never its HTTP face; only service.http
# loads Flask; nothing in service/ loads llama_cpp or the workers (it sends tasks by name).
# ---------------------------------------------------------------------------------------------
def modules_of(package: str) -> list[str]:
    """Every module of a top-level package, by dotted name, found on disk."""
    root = ROOT / package
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def loaded_after_importing(modules: list[str], watched: tuple[str, ...]) -> list[str]:
    """Which of `watched` a fresh interpreter has loaded after importing `modules`."""
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(','.join(m for m in {watched!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [name for name in result.stdout.strip().split(",") if name]


def test_every_worker_module_loads_without_flask_or_the_http_face():
    workers = modules_of("workers")
    assert "workers.runtime" in workers and "workers.kinds.generate" in workers
    assert loaded_after_importing(workers, ("flask", "werkzeug", "service.http")) == []


def test_the_domain_loads_without_flask_and_the_service_without_llama_cpp():
    service = modules_of("service")
    domain = [m for m in service if not m.startswith("service.http")]
    assert "service.jobs.kinds" in domain and "service.http.app" not in domain
    assert loaded_after_importing(domain, ("flask", "werkzeug")) == []
    assert loaded_after_importing(service, ("llama_cpp", "workers")) == []


# ---------------------------------------------------------------------------------------------
# No import circles in service/, workers/ or cli/, and one table of job kinds.
# ---------------------------------------------------------------------------------------------
def import_graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module → the project modules it imports, counting every import statement anywhere in
    the file (inside functions and under TYPE_CHECKING too: a circle deferred is still one).

    `from a import b` points at a.b when that is a module, else at a; a package's __init__
    is only an edge where a statement names the package itself.
    """
    known = {m for p in packages for m in modules_of(p)}
    graph: dict[str, set[str]] = {}
    for module in sorted(known):
        path = ROOT / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in known)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    if target in known:
                        edges.add(target)
                    elif node.module in known:
                        edges.add(node.module)
        graph[module] = edges - {module}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first, colouring modules)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module)):
            return circle
    return None


def test_find_circle_reports_a_circle_it_is_shown():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circles_in_service_workers_or_cli():
    graph = import_graph(("service", "workers", "cli"))
    assert graph["workers.runtime"] >= {"service.jobs.kinds", "workers.heartbeat"}
    assert find_circle(graph) is None, " → ".join(find_circle(graph) or [])


def test_each_job_kind_names_a_task_a_request_reader_and_a_worker_handler():
    from service.jobs.kinds import KINDS, JobKind
    from workers.runtime import handler_for

    assert set(KINDS) == set(JobKind)
    for kind, row in KINDS.items():
        assert row.task == f"corral.{kind.value}"
        assert callable(row.request.from_json) and callable(handler_for(kind.value))


def test_the_worker_app_registers_one_task_per_kind_without_importing_it_back():
    from service.core.settings import Settings
    from service.jobs.kinds import KINDS
    from workers.celery_app import create_celery

    app = create_celery(Settings(redis_url="redis://127.0.0.1:9/0"))  # connects to nothing
    try:
        assert {row.task for row in KINDS.values()} <= set(app.tasks)
    finally:
        app.close()
