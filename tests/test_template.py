"""Model TEMPLATEs: the Go text/template subset, and Ollama's way of building a chat prompt.

Expected outputs for the library templates are the ones in Ollama's template/testdata."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

import service.models.template as template_rules
from service.core.errors import InvalidRequest
from service.models.template import Template, parsed, render_chat
from workers.prompt import build_prompt

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello, how are you?"},
    {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
    {"role": "user", "content": "I'd like to show off how chat templating works!"},
]

CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

# llama3.2's template as served by the Ollama library (system header, $last, tool calls)
LLAMA32 = """<|start_header_id|>system<|end_header_id|>

Cutting Knowledge Date: December 2023

{{ if .System }}{{ .System }}
{{- end }}
{{- if .Tools }}You are a helpful assistant with tool calling capabilities.
{{- end }}<|eot_id|>
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

{{ range $.Tools }}
{{- . }}
{{ end }}
{{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}
{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

GEMMA3 = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<start_of_turn>user
{{- if and (eq $i 1) $.System }}
{{ $.System }}
{{ end }}
{{ .Content }}<end_of_turn>
{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}<end_of_turn>
{{ end }}
{{- if $last }}<start_of_turn>model
{{ end }}
{{- end }}
"""

GEMMA_SYSTEM_MERGE = """{{- $system := "" }}
{{- range .Messages }}
{{- if eq .Role "system" }}
{{- if not $system }}{{ $system = .Content }}
{{- else }}{{ $system = printf "%s\\n\\n%s" $system .Content }}
{{- end }}
{{- continue }}
{{- else if eq .Role "user" }}<start_of_turn>user
{{- if $system }}
{{ $system }}
{{- $system = "" }}
{{- end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{- end }}
{{ .Content }}<end_of_turn>
{{ end }}<start_of_turn>model
"""

VICUNA = """{{ if .System }}{{ .System }}

{{ end }}{{ if .Prompt }}USER: {{ .Prompt }}
{{ end }}ASSISTANT: {{ .Response }}</s>
"""


def test_chatml_template() -> None:
    assert render_chat(Template(CHATML), CONVERSATION) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello, how are you?<|im_end|>\n"
        "<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>\n"
        "<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_llama32_template_with_system() -> None:
    messages = [{"role": "system", "content": "You are a pirate."}, *CONVERSATION[1:]]
    prompt = render_chat(Template(LLAMA32), messages)
    assert prompt == (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n"
        "You are a pirate.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello, how are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        "I'm doing great. How can I help you today?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "I'd like to show off how chat templating works!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama32_template_renders_tool_calls_as_json() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny"},
    ]
    prompt = render_chat(Template(LLAMA32), messages)
    assert (
        '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", '
        '"parameters": {"city":"Paris"}}<|eot_id|>'
    ) in prompt
    assert prompt.endswith(
        "<|start_header_id|>ipython<|end_header_id|>\n\nsunny<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_gemma3_template_with_index_variables_and_slice() -> None:
    assert render_chat(Template(GEMMA3), CONVERSATION) == (
        "<start_of_turn>user\nYou are a helpful assistant.\n\nHello, how are you?<end_of_turn>\n"
        "<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
        "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>\n"
        "<start_of_turn>model\n\n"
    )


def test_gemma_template_with_assignment_printf_and_continue() -> None:
    assert render_chat(Template(GEMMA_SYSTEM_MERGE), CONVERSATION) == (
        "<start_of_turn>user\nYou are a helpful assistant.\nHello, how are you?<end_of_turn>\n"
        "<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
        "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_legacy_vicuna_template_leaves_the_last_turn_open() -> None:
    prompt = render_chat(Template(VICUNA), CONVERSATION)
    assert prompt == (
        "You are a helpful assistant.\n\nUSER: Hello, how are you?\n"
        "ASSISTANT: I'm doing great. How can I help you today?</s>\n"
        "USER: I'd like to show off how chat templating works!\nASSISTANT: "
    )


def test_legacy_template_without_response_gets_one_appended() -> None:
    template = Template("{{ .System }} USER: {{ .Prompt }} ASSISTANT:")
    assert not template.uses_messages
    prompt = render_chat(template, [{"role": "system", "content": "Be brief."}, *CONVERSATION[1:]])
    assert prompt == (
        "Be brief. USER: Hello, how are you? ASSISTANT:I'm doing great. How can I help you today?"
        " USER: I'd like to show off how chat templating works! ASSISTANT:"
    )


@pytest.mark.parametrize(
    "text",
    [
        "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] ",
        "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] {{ .Response }}",
        "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}\n{{- range .Messages }}\n"
        '{{- if eq .Role "user" }}{{ .Content }}[/INST] {{ else if eq .Role "assistant" }}'
        "{{ .Content }}[INST] {{ end }}\n{{- end }}",
    ],
)
def test_legacy_and_messages_templates_agree(text: str) -> None:
    """Ollama's TestExecuteWithMessages "mistral system" case."""
    assert render_chat(Template(text), CONVERSATION) == (
        "[INST] You are a helpful assistant.\n\nHello, how are you?[/INST] "
        "I'm doing great. How can I help you today?[INST] "
        "I'd like to show off how chat templating works![/INST] "
    )


def test_legacy_template_continues_a_partial_assistant_message() -> None:
    messages = [
        {"role": "user", "content": "Hello friend!"},
        {"role": "assistant", "content": "Hello human!"},
        {"role": "user", "content": "What is your name?"},
        {"role": "assistant", "content": "My name is Ollama and I"},
    ]
    prompt = render_chat(Template("[INST] {{ .Prompt }}[/INST] {{ .Response }}</s>"), messages)
    assert prompt == (
        "[INST] Hello friend![/INST] Hello human!</s>"
        "[INST] What is your name?[/INST] My name is Ollama and I"
    )


def prompt_for(template: str, body: dict[str, Any], kind: str, system: str | None = None) -> str:
    """build_prompt as a worker runs it, for a model with this TEMPLATE and SYSTEM."""
    model = SimpleNamespace(template=template, system=system, messages=[],
                            capabilities=lambda: ["completion"])
    return build_prompt(model, body, kind, SimpleNamespace(chat_template=None))


HI = {"role": "user", "content": "Hi"}
BE_BRIEF = {"role": "system", "content": "Be brief."}
SYSTEM_THEN_TURNS = (
    '{{ .System }}|{{ range .Messages }}{{ if ne .Role "system" }}'
    "{{ .Role }}:{{ .Content }};{{ end }}{{ end }}"
)
SHOWS_SYSTEM = pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SYSTEM_THEN_TURNS, "Be brief.|user:Hi;"),
        ("{{ range .Messages }}{{ .Role }}:{{ .Content }};{{ end }}", "system:Be brief.;user:Hi;"),
        ("{{ .System }} USER: {{ .Prompt }} ASSISTANT:", "Be brief. USER: Hi ASSISTANT:"),
    ],
)


@SHOWS_SYSTEM
def test_a_system_message_passes_through_render_chat_once(text: str, expected: str) -> None:
    """render_chat takes the system prompt from the messages only, and adds none of its own."""
    assert render_chat(Template(text), [BE_BRIEF, HI]) == expected


@SHOWS_SYSTEM
@pytest.mark.parametrize(
    ("kind", "body", "model_system"),
    [
        ("chat", {"messages": [HI]}, "Be brief."),
        ("chat", {"messages": [BE_BRIEF, HI]}, "Ignored."),
        ("generate", {"prompt": "Hi"}, "Be brief."),
        ("generate", {"prompt": "Hi", "system": "Be brief."}, "Ignored."),
    ],
)
def test_the_system_prompt_reaches_the_template_once(
    text: str, expected: str, kind: str, body: dict[str, Any], model_system: str
) -> None:
    """The model's SYSTEM applies only when the request brings none, and whichever applies is
    in the prompt once: in .System, and once among .Messages."""
    assert prompt_for(text, body, kind, system=model_system) == expected


def test_every_system_message_is_collated_where_it_stands() -> None:
    """As in Ollama: all system texts join in .System, and the turns keep their order."""
    messages = [
        {"role": "system", "content": "A"},
        HI,
        {"role": "system", "content": "B"},
        {"role": "user", "content": "Again"},
    ]
    prompt = prompt_for(SYSTEM_THEN_TURNS, {"messages": messages}, "chat", system="Ignored.")
    assert prompt == "A\n\nB|user:Hi;user:Again;"


def test_a_template_text_is_parsed_once_for_many_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_parse = template_rules.parse

    def counting_parse(text: str) -> list:
        calls.append(text)
        return real_parse(text)

    monkeypatch.setattr(template_rules, "parse", counting_parse)
    marker = uuid.uuid4().hex  # a text this process has not cached yet
    text = "{{ .Prompt }} " + marker
    first = prompt_for(text, {"prompt": "Q"}, "generate")
    second = prompt_for(text, {"prompt": "Q"}, "generate")
    assert first == second == f"Q {marker}"
    assert calls == [text]
    assert parsed(text) is parsed(text)


def test_a_shared_template_is_not_changed_by_rendering() -> None:
    """Jobs share the cached Template, so one render must not leak into the next."""
    template = parsed(VICUNA)
    before = render_chat(template, CONVERSATION)
    render_chat(template, [{"role": "user", "content": "Other"}])
    render_chat(template, CONVERSATION[:2])
    assert render_chat(template, CONVERSATION) == before
    assert template.render_prompt({"Prompt": "Q"}) == "USER: Q\nASSISTANT: "


def test_consecutive_messages_of_a_role_are_merged() -> None:
    messages = [{"role": "user", "content": "Hello"}, {"role": "user", "content": "How are you?"}]
    assert render_chat(Template(CHATML), messages) == (
        "<|im_start|>user\nHello\n\nHow are you?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert messages[0]["content"] == "Hello"  # the caller's messages are not changed


def render(text: str, **values: Any) -> str:
    return Template(text).render(values)


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("a  {{- .X -}}  b", {"X": 1}, "a1b"),
        ("a {{- /* note */ -}} b", {}, "ab"),
        ("{{ .Missing }}|{{ .A.B.C }}", {"A": None}, "|"),
        ('{{ if eq .R "x" "y" }}yes{{ else }}no{{ end }}', {"R": "y"}, "yes"),
        ('{{ if ne .R "x" }}ne{{ end }}', {"R": "y"}, "ne"),
        ("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {"A": "", "B": [1]}, "b"),
        ("{{ and .A .B }}|{{ or .A .B }}|{{ not .A }}", {"A": "", "B": "b"}, "|b|true"),
        ("{{ or .A (index .Missing 3) }}", {"A": "short-circuit"}, "short-circuit"),
        ("{{ len .S }} {{ len .L }}", {"S": "héllo", "L": [1, 2]}, "6 2"),
        ('{{ index .L 1 }} {{ index .M "k" }}', {"L": ["a", "b"], "M": {"k": "v"}}, "b v"),
        ("{{ slice .L 1 }}{{ slice .S 1 3 }}", {"L": [1, 2, 3], "S": "abcd"}, "[2,3]bc"),
        ("{{ .S | len }}", {"S": "abc"}, "3"),
        ("{{ (index .Messages 0).Content }}", {"Messages": [{"content": "hi"}]}, "hi"),
        (
            "{{ $.Name }}{{ range .L }}{{ $.Name }}{{ . }}{{ end }}",
            {"Name": "n", "L": [1, 2]},
            "nn1n2",
        ),
        ("{{ range $i, $v := .L }}{{ $i }}={{ $v }};{{ end }}", {"L": ["a", "b"]}, "0=a;1=b;"),
        ("{{ range $v := .L }}{{ $v }}{{ end }}", {"L": ["a", "b"]}, "ab"),
        ("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}, "empty"),
        ("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", {"M": {"b": 2, "a": 1}}, "a1b2"),
        (
            "{{ range .L }}{{ if eq . 2 }}{{ break }}{{ end }}{{ . }}{{ end }}",
            {"L": [1, 2, 3]},
            "1",
        ),
        (
            "{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ . }}{{ end }}",
            {"L": [1, 2, 3]},
            "13",
        ),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", {}, "2"),
        ("{{ with .A }}{{ . }}{{ else }}none{{ end }}", {"A": "a"}, "a"),
        ("{{ with .A }}{{ . }}{{ else }}none{{ end }}", {}, "none"),
        ("{{ if lt .N 3 }}small{{ end }}{{ if ge .N 3 }}big{{ end }}", {"N": 5}, "big"),
        ('{{ printf "%s-%d-%v-%q" "a" 3 true "b" }}', {}, 'a-3-true-"b"'),
        ('{{ print "a" 1 2 "b" }}', {}, "a1 2b"),
        (
            "{{ json .T }}",
            {"T": [{"name": "f", "html": "<b>&"}]},
            '[{"name":"f","html":"\\u003cb\\u003e\\u0026"}]',
        ),
        ('{{ "tab\\there" }}{{ `raw\\n` }}', {}, "tab\there" + "raw\\n"),
        ("{{ .ToolCalls }}", {"tool_calls": []}, "[]"),
        ("{{ .Flag }} {{ .N }} {{ .F }}", {"Flag": False, "N": -2, "F": 0.5}, "false -2 0.5"),
        ("{{ .Prompt }}", {"prompt": "lower-case keys work too"}, "lower-case keys work too"),
    ],
)
def test_go_template_features(text: str, values: dict[str, Any], expected: str) -> None:
    assert Template(text).render(values) == expected


def test_public_attributes_of_objects_are_fields() -> None:
    @dataclass
    class Message:
        role: str
        tool_calls: list

    template = Template("{{ range .Messages }}{{ .Role }}:{{ len .ToolCalls }} {{ end }}")
    assert (
        template.render({"Messages": [Message("user", []), Message("tool", [1])]})
        == "user:0 tool:1 "
    )


def test_prompt_only_template_gets_response_appended() -> None:
    template = Template("{{ .Prompt }}")
    assert template.variables >= {"prompt", "response"}
    assert template.render({"Prompt": "Q", "Response": "A"}) == "QA"
    assert (
        Template("{{ .Prompt }}{{ .Response }}!").render({"Prompt": "Q", "Response": "A"}) == "QA!"
    )


def test_variables_are_found_like_ollama() -> None:
    template = Template(GEMMA3)
    assert template.uses_messages
    assert {"messages", "role", "content", "system"} <= template.variables


@pytest.mark.parametrize(
    "text",
    [
        "{{ .Prompt",
        "{{ if .System }}no end",
        "{{ end }}",
        "{{ else }}",
        "{{ range .Messages }}{{ else }}x{{ else }}y{{ end }}",
        "{{ nosuchfunc .X }}",
        "{{ $undeclared }}",
        "{{ break }}",
        "{{ range .L }}{{ end }}{{ continue }}",
        "{{ }}",
        "{{ .A | }}",
        "{{ (.A }}",
        "{{ .A) }}",
        '{{ template "x" }}',
        "{{ 'c' }}",
        '{{ "bad \\q escape" }}',
        "{{ $a, $b := .X }}",
    ],
)
def test_parse_errors_are_invalid_requests(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        Template(text)
    assert caught.value.message.startswith("template: ")
    assert caught.value.status == 400


def test_parse_error_names_the_line() -> None:
    with pytest.raises(InvalidRequest, match="line 3"):
        Template("a\nb\n{{ nosuchfunc }}")


@pytest.mark.parametrize(
    ("text", "values", "fragment"),
    [
        ("{{ index .L 5 }}", {"L": [1]}, "index out of range"),
        ('{{ eq 1 "a" }}', {}, "incompatible types"),
        ("{{ slice .L 2 1 }}", {"L": [1, 2, 3]}, "index out of range"),
        ("{{ .S.X }}", {"S": "string"}, "can't evaluate field X"),
        ("{{ range .S }}{{ end }}", {"S": "abc"}, "range can't iterate"),
        ("{{ range 1000000000 }}x{{ end }}", {}, "range can't iterate"),
        ("{{ .A .B }}", {}, "can't give argument to non-function"),
        ("{{ .S.__class__ }}", {"S": "text"}, "can't evaluate field __class__"),
        ("{{ .S.upper }}", {"S": "text"}, "can't evaluate field upper"),
        ('{{ printf "%999999999d" 1 }}', {}, "too large"),
    ],
)
def test_execution_errors_are_invalid_requests(text: str, values: dict, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        Template(text).render(values)
    assert caught.value.message.startswith("template: ")
    assert fragment in caught.value.message
