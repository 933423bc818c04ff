"""Tool calling on /api/chat and /v1/chat/completions: the request shapes, tools rendered through
Go and Jinja templates, calls parsed out of the output (Hermes, Llama 3, Mistral), a grammar
that makes a required call valid, and end to end through the official ollama and openai
clients against a real worker running SmolLM2 with a Hermes-style tool TEMPLATE."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from service.models.store import ModelStore
from service.models.template import Template, render_chat
from service.models.tool_calls import ToolCallParser, ToolPlan, call_schema, split_calls
from workers.prompt import render_jinja, tool_plan

PLAIN = "smollm2:135m"  # SmolLM2's own chat template shows no tools
TOOLS_MODEL = "smollm2-tools:135m"  # the same weights with HERMES as TEMPLATE

# Ollama's Hermes/Qwen tool template (as its qwen2.5 library template is written), on
# SmolLM2's ChatML turns.
HERMES = """{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response name="{{ .ToolName }}" id="{{ .ToolCallID }}">
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""

# The tool parts of Qwen2.5's Jinja chat template (tokenizer.chat_template), shortened.
QWEN_JINJA = """{%- if tools %}<|im_start|>system
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
{%- for tool_call in message.tool_calls %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
<tool_call>
{"name": "{{ tool_call.name }}", "arguments": {{ tool_call.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}<|im_start|>assistant
"""

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "required": ["city", "unit"], "properties": {
        "city": {"type": "string", "description": "the city's name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the local time in a timezone",
    "parameters": {"type": "object", "required": ["timezone"],
                   "properties": {"timezone": {"type": "string"}}}}}
ASK = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
SHORT = {"temperature": 0, "seed": 1, "num_predict": 96}  # a call ends well before


def parse(text: str, step: int = 1, names=("get_weather",)) -> tuple[str, list[dict]]:
    """Feed `text` to a parser `step` characters at a time, as a stream arrives."""
    parser, shown, calls = ToolCallParser(names), [], []
    for i in range(0, len(text), step):
        shown.append(parser.feed(text[i:i + step]))
        calls += parser.take()
    shown.append(parser.close())
    calls += parser.take()
    return "".join(shown), [c["function"] for c in calls]


PARIS = {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}


# ---- the parser ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
    '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
    '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',  # arguments as text
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}',  # no closing tag
])
@pytest.mark.parametrize("step", [1, 4, 1000])
def test_each_format_is_parsed_into_one_call_and_no_text(text, step):
    assert parse(text, step) == ("", [PARIS])


def test_text_around_hermes_calls_is_kept_and_several_calls_are_indexed():
    text = ('Let me look. <tool_call>{"name": "get_weather", "arguments": {"city": "Pa}ris"}}'
            '</tool_call>\n<tool_call>{"name": "get_time", "arguments": {}}</tool_call>\n')
    shown, calls = parse(text, 3, names=("get_weather", "get_time"))
    assert shown == "Let me look."  # the space before the calls is not shown
    assert calls == [{"index": 0, "name": "get_weather", "arguments": {"city": "Pa}ris"}},
                     {"index": 1, "name": "get_time", "arguments": {}}]


def test_llama3_calls_may_follow_one_another():
    text = ('{"name": "get_weather", "parameters": {"city": "Paris"}}; '
            '{"name": "get_weather", "parameters": {"city": "Rome"}}')
    assert [c["arguments"]["city"] for c in parse(text, 5)[1]] == ["Paris", "Rome"]


@pytest.mark.parametrize("text", [
    '{"answer": 42}',  # JSON, but no call
    '{"name": "not_a_tool", "parameters": {}}',  # a bare object naming no tool is text
    'It is {"name": "get_weather", "parameters": {}} after text',  # bare JSON only opens
    "3 < 5 and [TOOL] and <b>bold</b>",  # marker-like text
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Par',  # cut off: given back
    "",
])
def test_what_is_not_a_call_is_given_back_as_text(text):
    assert parse(text, 2) == (text, [])


def test_a_partial_marker_is_held_until_it_is_decided():
    parser = ToolCallParser(["get_weather"])
    assert parser.feed("Hello <tool") == "Hello "
    assert parser.feed("_cal") == ""
    assert parser.feed("l>{}") == ""
    parser = ToolCallParser(["get_weather"])
    assert parser.feed("Hello <tool") == "Hello "
    assert parser.feed("box>") == "<toolbox>"


def test_calls_have_distinct_ids():
    parser = ToolCallParser(["f"])
    parser.feed('<tool_call>{"name": "f"}</tool_call><tool_call>{"name": "f"}</tool_call>')
    ids = [c["id"] for c in parser.take()]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


def test_split_calls_names_calls_after_a_prefix_when_given_one():
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    shown, calls = split_calls(text, ["get_weather"], "call_job1_")
    assert shown == "" and [c["id"] for c in calls] == ["call_job1_0"]


def test_call_schema_puts_the_name_first_and_offers_each_forced_function():
    one = call_schema([WEATHER, TIME], ["get_time"])
    assert list(one["properties"]) == ["name", "arguments"]
    assert one["properties"]["name"] == {"const": "get_time"}
    both = call_schema([WEATHER, TIME], ["get_weather", "get_time"])
    assert [o["properties"]["name"]["const"] for o in both["oneOf"]] == ["get_weather",
                                                                         "get_time"]


# ---- templates ----------------------------------------------------------------------------

ROUND_TRIP = [
    *ASK,
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "18 degrees", "tool_name": "get_weather",
     "tool_call_id": "call_1"},
]


def test_go_template_sees_tools_tool_calls_and_tool_turns_as_ollamas_do():
    prompt = render_chat(Template(HERMES), ROUND_TRIP, [WEATHER])
    function = json.dumps(WEATHER["function"], separators=(",", ":"))
    assert f'{{"type": "function", "function": {function}}}\n</tools>' in prompt
    assert ('<|im_start|>assistant\n<tool_call>\n'
            '{"name": "get_weather", "arguments": {"city":"Paris"}}\n</tool_call><|im_end|>\n'
            ) in prompt
    assert prompt.endswith('<|im_start|>user\n<tool_response name="get_weather" id="call_1">\n'
                           "18 degrees\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_go_template_without_tools_shows_none():
    prompt = render_chat(Template(HERMES), ASK)
    assert "<tools>" not in prompt
    assert prompt == ("<|im_start|>user\nWhat is the weather in Paris? Use the tool.<|im_end|>\n"
                      "<|im_start|>assistant\n")


def test_jinja_template_sees_tools_and_tool_calls_as_transformers_passes_them():
    prompt = render_jinja(QWEN_JINJA, ROUND_TRIP, "", "", [WEATHER])
    assert json.dumps(WEATHER) in prompt  # tojson as transformers': no HTML escapes
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<tool_response>\n18 degrees\n</tool_response>" in prompt
    assert "<tools>" not in render_jinja(QWEN_JINJA, ASK, "", "")


def _model(template: str | None) -> SimpleNamespace:
    return SimpleNamespace(template=template)


@pytest.mark.parametrize(("template", "jinja", "choice", "expected"), [
    (HERMES, None, "auto", ToolPlan([WEATHER, TIME], [], "hermes")),
    (HERMES, None, "required", ToolPlan([WEATHER, TIME], ["get_weather", "get_time"],
                                        "hermes")),
    (HERMES, None, {"type": "function", "function": {"name": "get_time"}},
     ToolPlan([WEATHER, TIME], ["get_time"], "hermes")),
    (HERMES, None, "none", None),
    ("<|im_start|>user\n{{ .Prompt }}<|im_end|>\n", None, "required", None),  # no .Tools
    (None, QWEN_JINJA, "auto", ToolPlan([WEATHER, TIME], [], "hermes")),
    (None, "{% for m in messages %}{{ m.content }}{% endfor %}", "auto", None),
    (None, '{{ tools | tojson }}{"name": ...}', "required",
     ToolPlan([WEATHER, TIME], ["get_weather", "get_time"], "json")),
])
def test_tool_plan_follows_the_template_and_tool_choice(template, jinja, choice, expected):
    request = {"tools": [WEATHER, TIME], "tool_choice": choice}
    engine = SimpleNamespace(chat_template=jinja)
    assert tool_plan(_model(template), request, engine) == expected


# ---- requests -----------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "field"), [
    ({"tools": {"x": 1}}, "tools"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"description": "x"}}]},
     "tools[0].function.name"),
    ({"tools": [{"function": {"name": "f", "parameters": {"type": "thing"}}}]},
     "tools[0].function.parameters.type"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"messages": [{"role": "assistant", "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{not json"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "user", "content": "", "tool_calls": []}]},
     "messages[0].tool_calls"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": 7}]},
     "messages[0].tool_call_id"),
])
def test_bad_tool_fields_are_a_400_naming_the_field_on_both_faces(client, body, field):
    body = {"model": PLAIN, "messages": ASK, **body}
    ollama_error = client.post("/api/chat", json=body)
    assert ollama_error.status_code == 400
    assert f"invalid field '{field}'" in ollama_error.get_json()["error"]
    openai_error = client.post("/v1/chat/completions", json=body)
    assert openai_error.status_code == 400
    error = openai_error.get_json()["error"]
    assert f"invalid field '{field}'" in error["message"]
    assert field.startswith(error["param"]) and error["type"] == "invalid_request_error"


# ---- end to end, with SmolLM2 -------------------------------------------------------------

@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    """The store: SmolLM2 as it comes, and with HERMES as its TEMPLATE (as `corral create`
    with a Modelfile TEMPLATE makes it)."""
    store = ModelStore(tmp_path_factory.mktemp("models"))
    weights = store.import_file(model_file)
    store.create(PLAIN, weights)
    store.create(TOOLS_MODEL, weights, template=HERMES, parameters={"stop": ["<|im_end|>"]})
    return store.root


def assert_valid(arguments: dict[str, Any], schema: dict[str, Any]) -> None:
    """Check arguments against the flat object schemas these tests use."""
    assert set(schema["required"]) <= set(arguments) <= set(schema["properties"])
    for name, value in arguments.items():
        rule = schema["properties"][name]
        assert isinstance(value, str) if rule["type"] == "string" else True
        assert value in rule.get("enum", [value])


def test_required_call_matches_its_schema_on_the_openai_face(worker, api):
    answer = api.chat.completions.create(model=TOOLS_MODEL, messages=ASK, tools=[WEATHER, TIME],
                                         tool_choice="required", temperature=0, max_tokens=96)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id == f"call_{answer.id.split('-', 1)[1]}_0"
    schema = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    assert_valid(json.loads(call.function.arguments), schema[call.function.name])


def test_named_call_streams_deltas_the_openai_client_reassembles(worker, api):
    named = {"type": "function", "function": {"name": "get_weather"}}
    with api.chat.completions.stream(model=TOOLS_MODEL, messages=ASK, tools=[WEATHER, TIME],
                                     tool_choice=named, temperature=0, max_tokens=96) as stream:
        deltas = [e.chunk for e in stream if e.type == "chunk"]
        final = stream.get_final_completion()
    pieces = [c.choices[0].delta.tool_calls for c in deltas if c.choices[0].delta.tool_calls]
    assert pieces and all(p[0].index == 0 for p in pieces)
    assert deltas[-1].choices[0].finish_reason == "tool_calls"
    [call] = final.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert_valid(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    assert final.choices[0].finish_reason == "tool_calls"


def test_two_turn_round_trip_through_the_ollama_client(worker, local, api):
    first = api.chat.completions.create(model=TOOLS_MODEL, messages=ASK, tools=[WEATHER],
                                        tool_choice="required", temperature=0, max_tokens=96)
    [openai_call] = first.choices[0].message.tool_calls
    # The call goes back as Ollama's clients send it: arguments an object, then the result
    # as a `tool` turn naming the function.
    call = {"function": {"name": openai_call.function.name,
                         "arguments": json.loads(openai_call.function.arguments)}}
    turns = [*ASK, {"role": "assistant", "content": "", "tool_calls": [call]},
             {"role": "tool", "content": "18 degrees and sunny", "tool_name": "get_weather"}]
    answer = local.chat(model=TOOLS_MODEL, messages=turns, tools=[WEATHER], options=SHORT)
    assert answer.done_reason in ("stop", "length")
    assert answer.message.content.strip() and not answer.message.tool_calls

    streamed = list(local.chat(model=TOOLS_MODEL, messages=turns, tools=[WEATHER],
                               options=SHORT, stream=True))
    assert "".join(c.message.content or "" for c in streamed).strip()
    assert streamed[-1].done and not any(c.message.tool_calls for c in streamed)


def test_ollama_face_answers_calls_as_ollama_does(worker, client):
    body = {"model": TOOLS_MODEL, "messages": ASK, "tools": [WEATHER], "stream": False,
            "tool_choice": "required", "options": SHORT}
    whole = client.post("/api/chat", json=body).get_json()
    assert whole["done_reason"] == "stop"
    [call] = whole["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and call["function"]["index"] == 0
    assert_valid(call["function"]["arguments"], WEATHER["function"]["parameters"])
    lines = [json.loads(x) for x in
             client.post("/api/chat", json={**body, "stream": True}).get_data(as_text=True)
             .splitlines()]
    assert [line for line in lines if "error" in line] == []
    calls = [c for line in lines for c in line.get("message", {}).get("tool_calls", [])]
    assert [c["function"] for c in calls] == [call["function"]]
    assert "tool_calls" not in lines[-1]["message"] and lines[-1]["done"]


def test_a_model_without_tool_support_answers_tools_as_a_plain_chat(worker, api):
    answer = api.chat.completions.create(model=PLAIN, messages=ASK, tools=[WEATHER],
                                         tool_choice="auto", temperature=0, max_tokens=16)
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length") and choice.message.content
    assert not choice.message.tool_calls


def test_tools_on_the_openai_face_no_longer_refused(worker, api):
    """What Open WebUI sends (its built-in tools with every message) on a tool model."""
    with pytest.raises(openai.BadRequestError):  # still a 400 for what is bad
        api.chat.completions.create(model=TOOLS_MODEL, messages=ASK, tools=[{"type": "x"}])
    answer = api.chat.completions.create(model=TOOLS_MODEL, messages=ASK, tools=[WEATHER],
                                         temperature=0, max_tokens=24)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")


# ---- the lazy call grammar (tool_choice "auto"), on SmolLM2's vocabulary ------------------

@pytest.fixture(scope="module")
def vocab(model_file: Path):
    import llama_cpp

    from workers.llama_loader import Vocab, load_model

    model = load_model(str(model_file))
    yield Vocab(model)
    llama_cpp.llama_model_free(model)


def allowed_after(vocab, grammar: str, trigger: int | None, tokens: list[int]) -> list[str]:
    """The pieces `grammar` (lazy from `trigger`, if given) lets follow `tokens`."""
    import llama_cpp

    from workers.sampling import grammar_sampler

    sampler = grammar_sampler(vocab.ptr, grammar, trigger)
    try:
        for token in tokens:
            llama_cpp.llama_sampler_accept(sampler, token)
        data = (llama_cpp.llama_token_data * vocab.n_tokens)()
        for i in range(vocab.n_tokens):
            data[i].id, data[i].logit, data[i].p = i, 0.0, 0.0
        candidates = llama_cpp.llama_token_data_array(data, vocab.n_tokens, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return [vocab.piece(d.id).decode("utf-8", "replace") for d in data
                if d.logit != float("-inf")]
    finally:
        llama_cpp.llama_sampler_free(sampler)


def test_lazy_grammar_binds_only_once_its_trigger_token_is_written(vocab):
    """SmolLM2 has no <tool_call> token, so its own special token <|im_start|> stands in."""
    from workers.sampling import trigger_token

    opener = trigger_token(vocab.ptr, "<|im_start|>")
    grammar = 'root ::= "<|im_start|>" "celsius"'
    text = vocab.tokenize("The weather in Paris is warm", False, False)
    assert len(allowed_after(vocab, grammar, opener, text)) > vocab.n_tokens * 0.9
    bound = allowed_after(vocab, grammar, opener, [*text, opener])
    assert bound and all("celsius".startswith(piece) for piece in bound)


def test_without_a_tag_token_auto_runs_without_a_grammar(vocab):
    """SmolLM2 spells <tool_call> in five tokens: no lazy grammar, so no regex per token."""
    import llama_cpp

    from workers.sampling import Options, build_sampler, free_sampler, trigger_token

    assert trigger_token(vocab.ptr, "<tool_call>") is None
    options = Options(grammar='root ::= "<tool_call>"', grammar_trigger="<tool_call>",
                      repeat_penalty=1.0, temperature=0)
    chain = build_sampler(vocab.ptr, vocab.n_tokens, options, [])
    try:
        assert llama_cpp.llama_sampler_chain_n(chain) == 1  # greedy alone, no grammar
    finally:
        free_sampler(chain)
