"""Settings: Ollama's defaults and meanings, and bad values named at start-up."""

import dataclasses
import re
from pathlib import Path

import pytest

from service.core.errors import SettingsError
from service.core.settings import (
    FOREVER,
    VARIABLES,
    Settings,
    Variable,
    describe,
    parse_duration,
    parse_keep_alive,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_match_ollama():
    s = Settings.from_env({})
    assert (s.host, s.port) == ("127.0.0.1", 11434)
    assert s.keep_alive == 300.0
    assert s.max_queue == 512
    assert s.redis_url is None
    assert s.database.startswith("sqlite:///") and s.database.endswith("corral.db")
    assert s.models_dir == s.home / "models"


def test_home_drives_models_and_database(tmp_path):
    s = Settings.from_env({"CORRAL_HOME": str(tmp_path)})
    assert s.models_dir == tmp_path / "models"
    assert s.database == f"sqlite:///{tmp_path / 'corral.db'}"


@pytest.mark.parametrize(("text", "seconds"), [
    ("5m", 300.0), ("1h30m", 5400.0), ("300", 300.0), ("0", 0.0), ("-1", FOREVER),
    ("-5m", FOREVER), (90, 90.0), ("2.5s", 2.5), ("100ms", 0.1),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "seconds"), [
    ("5m", 300.0), (1e308, FOREVER), ("1e308", FOREVER), (float("inf"), FOREVER),
    ("1000000h", FOREVER), (99 * 365 * 86400, 99 * 365 * 86400.0), ("-inf", FOREVER),
])
def test_keep_alive_beyond_a_century_is_forever(text, seconds):
    assert parse_keep_alive(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["nan", "NaN", float("nan")])
def test_nan_is_no_duration(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("name", "value"), [
    ("CORRAL_KEEP_ALIVE", "soon"),
    ("CORRAL_KEEP_ALIVE", "nan"),
    ("CORRAL_HOST", "localhost:99999"),
    ("CORRAL_NUM_PARALLEL", "0"),
    ("CORRAL_MAX_QUEUE", "many"),
    ("CORRAL_DEBUG", "maybe"),
    ("CORRAL_STREAM_INTERVAL", "-10ms"),
    ("CORRAL_STREAM_INTERVAL", "soon"),
])
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_an_absurd_keep_alive_setting_is_forever():
    assert Settings.from_env({"CORRAL_KEEP_ALIVE": "1e308"}).keep_alive == FOREVER


@pytest.mark.parametrize(("text", "seconds"), [("25ms", 0.025), ("0", 0.0), ("0.1", 0.1),
                                                ("1s", 1.0)])
def test_stream_interval_is_a_duration_in_seconds(text, seconds):
    assert Settings.from_env({}).stream_interval == pytest.approx(0.04)
    value = Settings.from_env({"CORRAL_STREAM_INTERVAL": text}).stream_interval
    assert value == pytest.approx(seconds)


def test_host_forms():
    assert Settings.from_env({"CORRAL_HOST": "0.0.0.0:8080"}).base_url == "http://127.0.0.1:8080"
    assert Settings.from_env({"CORRAL_HOST": "http://10.1.2.3"}).port == 11434


def test_every_variable_is_described():
    rows = describe({})
    names = {name for name, _, _ in rows}
    assert {"CORRAL_HOST", "CORRAL_HOME", "CORRAL_REDIS_URL", "CORRAL_KEEP_ALIVE"} <= names
    assert all(text for _, _, text in rows)


def test_empty_means_default_and_errors_quote_the_value():
    assert Settings.from_env({"CORRAL_NUM_CTX": "", "CORRAL_MODELS": ""}).num_ctx == 2048
    assert Settings.from_env({"CORRAL_MODELS": ""}).models is None
    with pytest.raises(SettingsError, match=r"^CORRAL_NUM_PARALLEL='x' is invalid: "):
        Settings.from_env({"CORRAL_NUM_PARALLEL": "x"})


def test_field_defaults_are_the_parsed_declared_defaults(monkeypatch, tmp_path):
    """`Settings()` and `from_env({})` come from one declaration, so they must agree."""
    monkeypatch.setenv("HOME", str(tmp_path))  # `~` in CORRAL_HOME follows HOME when built
    assert Settings() == Settings.from_env({})
    assert Settings().home == tmp_path / ".corral"
    assert Settings().origins == () and Settings().registry_mirrors == ()


def test_host_and_port_stay_fields():
    s = dataclasses.replace(Settings.from_env({}), host="0.0.0.0", port=8080)
    assert s.base_url == "http://127.0.0.1:8080"
    assert Settings(host="10.0.0.1", port=1234).base_url == "http://10.0.0.1:1234"


def test_every_field_is_declared_by_a_variable():
    for f in dataclasses.fields(Settings):
        declared = [m for m in f.metadata.values() if isinstance(m, Variable)]
        assert declared and declared[0] in VARIABLES, f"{f.name} is not read from the environment"


def test_describe_lists_each_variable_once_with_its_default():
    rows = describe({})
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names)), "a variable is listed twice"
    assert names == [v.name for v in VARIABLES]
    assert names.count("CORRAL_HOST") == 1  # fills two fields, host and port, but is one variable
    values = {name: value for name, value, _ in rows}
    assert values == {v.name: v.default or "" for v in VARIABLES}
    assert values["CORRAL_KEEP_ALIVE"] == "5m" and values["CORRAL_REDIS_URL"] == ""
    current = {name: value for name, value, _ in describe({"CORRAL_NUM_CTX": "4096"})}
    assert current["CORRAL_NUM_CTX"] == "4096"


def configuration_rows(markdown: str) -> list[tuple[list[str], str]]:
    """(variable names, default cell) of each body row of the table under "## Configuration"."""
    section = markdown.split("\n## Configuration\n", 1)[-1].split("\n## ", 1)[0]
    table = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    rows = []
    for line in table[2:]:  # after the header and the |---| line
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append((re.findall(r"`(CORRAL_\w+)`", cells[0]), cells[1]))
    return rows


def _default_matches(cell: str, variable: Variable, declared: dict[str, Variable]) -> bool:
    if variable.default:
        return cell == f"`{variable.default}`"
    if cell == "unset":
        return True
    derived = re.fullmatch(r"`\$(CORRAL_\w+)[^`]*`", cell)
    return (variable.default is None and derived is not None
            and derived.group(1) in declared and derived.group(1) != variable.name)


def readme_problems(markdown: str) -> list[str]:
    """Where the README's Configuration table disagrees with the declared variables.

    The rule: every variable a row names (in backticks) must be declared. A row naming one
    variable states its default: a declared default text must appear exactly, in backticks
    (`5m`); a default of None or "" reads `unset`, and None may instead read as a form
    derived from another declared variable (`$CORRAL_HOME/models`), since the value then
    follows that variable. A row naming several variables (`CORRAL_ORIGINS`, ... "see
    `corral env`") only points elsewhere, so its default cell must be empty.
    """
    declared = {v.name: v for v in VARIABLES}
    rows = configuration_rows(markdown)
    if not rows:
        return ["no table under ## Configuration"]
    problems = []
    for names, cell in rows:
        if not names:
            problems.append(f"a row names no CORRAL_ variable (default {cell!r})")
        problems += [f"{name} is in the README but not declared" for name in names
                     if name not in declared]
        if len(names) > 1 and cell:
            problems.append(f"{', '.join(names)}: a row of several variables gives {cell!r}")
        elif len(names) == 1 and names[0] in declared:
            variable = declared[names[0]]
            if not _default_matches(cell, variable, declared):
                problems.append(f"{variable.name}: README default {cell!r}, "
                                f"declared {variable.default!r}")
    return problems


def test_readme_configuration_table_matches_the_declarations():
    markdown = README.read_text(encoding="utf-8")
    assert len(configuration_rows(markdown)) >= 10  # the table is found, not silently empty
    assert readme_problems(markdown) == []


@pytest.mark.parametrize("row", [
    "| `CORRAL_KEEP_ALIVE` | `10m` | wrong default |",
    "| `CORRAL_KEEP_ALIVE` | 5m | default without backticks |",
    "| `CORRAL_NUM_CTX` | | a single variable must state its default |",
    "| `CORRAL_MODELS` | `/srv/models` | None reads unset or $VAR form |",
    "| `CORRAL_HOME` | unset | HOME has a default |",
    "| `CORRAL_REDIS_URL` | `$CORRAL_REDIS_URL/x` | derived from itself |",
    "| `CORRAL_MODELS` | `$CORRAL_NOPE/models` | derived from an undeclared variable |",
    "| `CORRAL_NO_SUCH` | `1` | not declared |",
    "| `CORRAL_ORIGINS`, `CORRAL_DEBUG`, … | `false` | a pointer row gives no default |",
    "| `CORRAL_ORIGINS`, `CORRAL_NOPE`, … | | a pointer row names only declared variables |",
])
def test_readme_check_catches_a_wrong_row(row):
    table = f"## Configuration\n\n| variable | default | meaning |\n|---|---|---|\n{row}\n"
    assert len(readme_problems(table)) == 1
