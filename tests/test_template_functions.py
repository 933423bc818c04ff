"""The functions a TEMPLATE may call beyond Go's own: Ollama's FuncMap (currentDate,
yesterdayDate, toTypeScriptType, json) and Go's escapers (html, js, urlquery).

Expected outputs are those of Ollama's template_test.go and api/types_typescript_test.go, and
of Go's text/template for the escapers."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from service.core.errors import InvalidRequest
from service.models.template import Template


def run(text: str, values: dict[str, Any] | None = None) -> str:
    return Template(text).render(values or {})


def test_current_date_is_today_as_go_formats_2006_01_02() -> None:
    out = run("{{- range .Messages }}{{ .Content }}{{ end }} Today is {{ currentDate }}",
              {"Messages": [{"Role": "user", "Content": "Hello"}]})
    assert out == f"Hello Today is {date.today().isoformat()}"


def test_yesterday_date_is_the_day_before() -> None:
    assert run("{{ yesterdayDate }}") == (date.today() - timedelta(days=1)).isoformat()


def test_a_format_argument_is_accepted_and_ignored_as_ollama_does() -> None:
    assert run('{{ currentDate "January 2, 2006" }}') == date.today().isoformat()


@pytest.mark.parametrize(("prop", "expected"), [
    ({"type": "string"}, "string"),
    ({"type": "number"}, "number"),
    ({"type": "integer"}, "number"),
    ({"type": "boolean"}, "boolean"),
    ({"type": "array"}, "any[]"),
    ({"type": "object"}, "Record<string, any>"),
    ({"type": "null"}, "null"),
    ({"type": ["string", "number"]}, "string | number"),
    ({"type": ["string", "null"]}, "string | null"),
    ({"anyOf": [{"type": "string"}, {"type": "number"}]}, "string | number"),
    ({"anyOf": [{"type": ["string", "null"]}, {"type": "number"}]}, "string | null | number"),
    ({"anyOf": [{"type": "boolean"}, {"anyOf": [{"type": "string"}, {"type": "number"}]}]},
     "boolean | string | number"),
    ({"type": []}, "any"),
    ({"type": "unknown_type"}, "any"),
    ({"type": ["string", "array", "null"]}, "string | any[] | null"),
    ({"description": "no type"}, "any"),
    ("not a schema", "any"),
])
def test_to_typescript_type_matches_ollama(prop: Any, expected: str) -> None:
    assert run("{{ toTypeScriptType .P }}", {"P": prop}) == expected


def test_to_typescript_type_over_a_tools_parameters_as_library_templates_use_it() -> None:
    text = ("{{ range .Tools }}type {{ .Function.Name }} = (_: { "
            "{{ range $name, $p := .Function.Parameters.Properties }}"
            "{{ $name }}: {{ toTypeScriptType $p }}, {{ end }}}) => any;{{ end }}")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"},
                                         "days": {"type": ["integer", "null"]}}}}}]
    assert run(text, {"Tools": tools}) == (
        "type get_weather = (_: { city: string, days: number | null, }) => any;")


@pytest.mark.parametrize(("text", "expected"), [
    ('{{ html "<a href=\\"x\\">Tom & Jerry\'s</a>" }}',
     "&lt;a href=&#34;x&#34;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"),
    ('{{ js "it\'s \\"<b>\\" a=b\\n" }}', "it\\'s \\\"\\u003Cb\\u003E\\\" a\\u003Db\\u000A"),
    ('{{ urlquery "a b&c/d?é" }}', "a+b%26c%2Fd%3F%C3%A9"),
    ("{{ html 1 2 }}", "1 2"),
    ('{{ json .V }}', '{"a":[1,"\\u003cb\\u003e"]}'),
])
def test_go_escapers_and_json(text: str, expected: str) -> None:
    assert run(text, {"V": {"a": [1, "<b>"]}}) == expected


def test_an_unknown_function_is_a_parse_error_naming_it() -> None:
    with pytest.raises(InvalidRequest, match='line 2: function "shout" not defined'):
        Template("Hello\n{{ shout .Prompt }}")


def test_a_generate_requests_own_template_is_checked_before_it_is_queued() -> None:
    from service.jobs.requests import GenerateRequest

    with pytest.raises(InvalidRequest, match="invalid field 'template': .*\"shout\" not defined"):
        GenerateRequest.from_json({"model": "m", "template": "{{ shout .Prompt }}"})
    assert GenerateRequest.from_json({"model": "m", "template": "{{ currentDate }}"}).template
