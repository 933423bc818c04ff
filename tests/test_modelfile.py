"""Modelfile parsing and rendering, and the typed options of API requests."""

from __future__ import annotations

import pytest

from service.core.errors import InvalidRequest
from service.models.modelfile import PARAMETER_TYPES, Modelfile, coerce_options, parse_modelfile

SMOLLM2_MODELFILE = '''# A Modelfile like the one `ollama show smollm2 --modelfile` prints
FROM smollm2:135m
TEMPLATE """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
SYSTEM You are a helpful AI assistant named SmolLM, trained by Hugging Face
PARAMETER stop <|im_start|>
PARAMETER stop <|im_end|>
PARAMETER temperature 0.2
PARAMETER num_ctx 4096
PARAMETER use_mmap false
LICENSE """Apache License
Version 2.0"""
LICENSE MIT
MESSAGE user Is the sky blue?
MESSAGE assistant "Yes, on a clear day."
'''


def test_parses_every_instruction() -> None:
    mf = parse_modelfile(SMOLLM2_MODELFILE)
    assert mf.from_ == "smollm2:135m"
    assert mf.template is not None
    assert mf.template.startswith("{{- if .System }}<|im_start|>system\n")
    assert mf.template.endswith("<|im_start|>assistant\n")
    assert mf.system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert mf.parameters == {
        "stop": ["<|im_start|>", "<|im_end|>"],
        "temperature": 0.2,
        "num_ctx": 4096,
        "use_mmap": False,
    }
    assert mf.license == ["Apache License\nVersion 2.0", "MIT"]
    assert mf.messages == [
        {"role": "user", "content": "Is the sky blue?"},
        {"role": "assistant", "content": "Yes, on a clear day."},
    ]


def test_parameter_values_are_typed() -> None:
    mf = parse_modelfile(
        "FROM m\nPARAMETER seed -3\nPARAMETER top_p .9\nPARAMETER penalize_newline True\n"
        "PARAMETER repeat_penalty 1e0\nPARAMETER numa 1\n"
    )
    assert mf.parameters == {
        "seed": -3,
        "top_p": 0.9,
        "penalize_newline": True,
        "repeat_penalty": 1.0,
        "numa": True,
    }
    assert type(mf.parameters["seed"]) is int
    assert type(mf.parameters["repeat_penalty"]) is float


def test_instructions_ignore_case_and_indentation() -> None:
    mf = parse_modelfile("  from ./model.gguf\n\tsystem hi there\nParameter top_k 5\n")
    assert (mf.from_, mf.system, mf.parameters) == ("./model.gguf", "hi there", {"top_k": 5})


def test_comments_and_blank_lines_are_skipped() -> None:
    mf = parse_modelfile("# comment\n\n   # indented comment\nFROM m\n# SYSTEM not this\n")
    assert mf.from_ == "m" and mf.system is None


def test_hash_inside_a_value_is_kept() -> None:
    assert parse_modelfile("FROM m\nSYSTEM use # for comments\n").system == "use # for comments"


def test_quoted_values() -> None:
    mf = parse_modelfile('FROM m\nSYSTEM "  padded  "\nADAPTER "./my adapter.gguf"\n')
    assert mf.system == "  padded  "
    assert mf.adapters == ["./my adapter.gguf"]


def test_triple_quotes_keep_inner_newlines_and_quotes() -> None:
    mf = parse_modelfile('FROM m\nTEMPLATE """\n{{ if eq .Role "user" }}x{{ end }}\n"""\n')
    assert mf.template == '\n{{ if eq .Role "user" }}x{{ end }}\n'


def test_single_quotes_may_span_lines_as_in_ollama() -> None:
    assert parse_modelfile('FROM m\nSYSTEM "one\ntwo"\n').system == "one\ntwo"


def test_crlf_line_endings_and_bom() -> None:
    mf = parse_modelfile('\ufeffFROM m\r\nSYSTEM """a\r\nb"""\r\nPARAMETER num_ctx 8\r\n')
    assert (mf.from_, mf.system, mf.parameters) == ("m", "a\nb", {"num_ctx": 8})


def test_later_values_replace_earlier_ones() -> None:
    mf = parse_modelfile(
        "FROM a\nFROM b\nSYSTEM one\nSYSTEM two\nPARAMETER top_k 1\nPARAMETER top_k 2\n"
    )
    assert (mf.from_, mf.system, mf.parameters) == ("b", "two", {"top_k": 2})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM m\nPARAMETER foo 1\n", "Modelfile line 2: unknown parameter 'foo'"),
        (
            "FROM m\n\nPARAMETER num_ctx big\n",
            "Modelfile line 3: invalid value for parameter 'num_ctx': expected an integer",
        ),
        (
            "FROM m\nPARAMETER num_ctx 1.5\n",
            "Modelfile line 2: invalid value for parameter 'num_ctx': expected an integer",
        ),
        (
            "FROM m\nPARAMETER temperature hot\n",
            "Modelfile line 2: invalid value for parameter 'temperature': expected a number",
        ),
        (
            "FROM m\nPARAMETER use_mmap yes\n",
            "Modelfile line 2: invalid value for parameter 'use_mmap': expected a boolean",
        ),
        (
            "FROM m\nPARAMETER temperature\n",
            "Modelfile line 2: PARAMETER needs a parameter name and a value",
        ),
        (
            "FROM m\nPARAMETER top_p 2\n",
            "Modelfile line 2: invalid value for parameter 'top_p': must be between 0 and 1",
        ),
        (
            "FROM m\nPARAMETER num_ctx 1\n",
            "Modelfile line 2: invalid value for parameter 'num_ctx': must be at least 4",
        ),
        (
            "FROM m\nPARAMETER temperature 1e999\n",
            "Modelfile line 2: invalid value for parameter 'temperature': must be a finite",
        ),
        ("FROM m\nSTOP here\n", "Modelfile line 2: unknown instruction 'stop'"),
        (
            "FROM m\nMESSAGE tool hi\n",
            "Modelfile line 2: message role must be one of system, user, assistant",
        ),
        ("FROM m\nMESSAGE user\n", "Modelfile line 2: MESSAGE needs a message role and a value"),
        ("FROM m\nSYSTEM\n", "Modelfile line 2: missing value"),
        ('FROM m\nSYSTEM """never closed\nmore\n', "Modelfile line 2: unterminated quoted value"),
        ('FROM m\nSYSTEM "never closed\n', "Modelfile line 2: unterminated quoted value"),
        ("FROM m\nTEMPLATE {{ if .System }}x\n", "Modelfile line 2: template: "),
        ("SYSTEM hi\n", "Modelfile: no FROM line"),
        ("", "Modelfile: no FROM line"),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_modelfile(text)
    assert caught.value.message.startswith(message)
    assert caught.value.status == 400


def test_render_is_like_ollama_show() -> None:
    mf = parse_modelfile(SMOLLM2_MODELFILE)
    rendered = mf.render(name="smollm2:135m")
    assert rendered.startswith(
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        "# FROM smollm2:135m\n\nFROM smollm2:135m\n"
    )
    assert 'TEMPLATE "{{- if .System }}<|im_start|>system\n' in rendered  # newlines, no quote
    assert "SYSTEM You are a helpful AI assistant named SmolLM" in rendered
    assert "PARAMETER stop <|im_start|>\nPARAMETER stop <|im_end|>\n" in rendered
    assert "PARAMETER temperature 0.2\n" in rendered
    assert "PARAMETER use_mmap false\n" in rendered
    assert 'LICENSE "Apache License\nVersion 2.0"\n' in rendered  # newline, no quote
    assert "MESSAGE user Is the sky blue?\n" in rendered


def test_render_reads_back_to_the_same_modelfile() -> None:
    original = parse_modelfile(SMOLLM2_MODELFILE)
    again = parse_modelfile(original.render(name="smollm2:135m"))
    assert again == original


def test_render_quotes_values_that_would_not_read_back() -> None:
    mf = Modelfile(
        from_="m",
        template='{{ if eq .Role "user" }}\n{{ end }}',
        system=" lead",
        parameters={"stop": ['"quoted"', "x"], "num_ctx": 4096},
    )
    text = mf.render()
    assert text.startswith('FROM m\nTEMPLATE """{{ if eq .Role "user" }}\n{{ end }}"""\n')
    assert 'SYSTEM " lead"\n' in text
    assert parse_modelfile(text) == mf


def test_parameter_types_cover_ollama_options() -> None:
    names = """num_ctx num_batch num_gpu main_gpu use_mmap num_thread num_keep seed num_predict
        top_k top_p min_p typical_p repeat_last_n temperature repeat_penalty presence_penalty
        frequency_penalty stop penalize_newline numa low_vram mirostat mirostat_tau mirostat_eta"""
    for name in names.split():
        assert name in PARAMETER_TYPES
    assert PARAMETER_TYPES["stop"] is list
    assert PARAMETER_TYPES["temperature"] is float
    assert PARAMETER_TYPES["num_ctx"] is int


def test_coerce_options_converts_json_values() -> None:
    assert coerce_options(
        {"temperature": 1, "num_ctx": 4096.0, "stop": ["\n"], "use_mmap": True, "seed": None}
    ) == {"temperature": 1.0, "num_ctx": 4096, "stop": ["\n"], "use_mmap": True}


def test_coerce_options_ignores_unknown_keys() -> None:
    assert coerce_options({"not_an_option": "x", "top_k": 3}) == {"top_k": 3}
    assert coerce_options(None) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"temperature": "hot"}, "invalid option 'temperature': expected a number"),
        ({"temperature": True}, "invalid option 'temperature': expected a number"),
        ({"num_ctx": 2.5}, "invalid option 'num_ctx': expected an integer"),
        ({"num_ctx": "4096"}, "invalid option 'num_ctx': expected an integer"),
        ({"seed": False}, "invalid option 'seed': expected an integer"),
        ({"use_mmap": 1}, "invalid option 'use_mmap': expected a boolean"),
        ({"stop": "\n"}, "invalid option 'stop': expected an array of strings"),
        ({"stop": ["a", 1]}, "invalid option 'stop': expected an array of strings"),
        (["temperature"], "invalid options: expected an object"),
    ],
)
def test_coerce_options_refuses_ill_typed_values(raw: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        coerce_options(raw)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"num_ctx": 1}, "invalid option 'num_ctx': must be at least 4"),
        ({"num_ctx": 2**31}, "invalid option 'num_ctx': must be at most 2147483647"),
        ({"num_predict": -3}, "invalid option 'num_predict': must be at least -2"),
        ({"temperature": -1}, "invalid option 'temperature': must be at least 0"),
        ({"temperature": float("inf")}, "invalid option 'temperature': must be a finite number"),
        ({"top_p": float("nan")}, "invalid option 'top_p': must be a finite number"),
        ({"top_p": 1.01}, "invalid option 'top_p': must be between 0 and 1"),
        ({"min_p": -0.5}, "invalid option 'min_p': must be between 0 and 1"),
        ({"top_k": -1}, "invalid option 'top_k': must be at least 0"),
        ({"repeat_last_n": -2}, "invalid option 'repeat_last_n': must be at least -1"),
        ({"num_batch": 10**400}, "invalid option 'num_batch': must be at most 2147483647"),
        ({"repeat_penalty": 10**400}, "invalid option 'repeat_penalty': must be a finite number"),
    ],
)
def test_coerce_options_refuses_values_out_of_range(raw: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        coerce_options(raw)
    assert caught.value.message.startswith(message)


def test_coerce_options_takes_the_edges_of_each_range() -> None:
    edges = {"num_ctx": 4, "num_predict": -2, "temperature": 0, "top_k": 0, "top_p": 1,
             "min_p": 0, "repeat_last_n": -1, "seed": -1, "frequency_penalty": -2.5}
    assert coerce_options(edges) == edges
