"""What a model can do, decided as Ollama's Model.Capabilities does (server/images.go), from
the GGUF header and the template corral renders with.

    completion   every model that is not an embedding model
    embedding    the GGUF declares `<arch>.pooling_type`
    vision       the GGUF has `<arch>.vision.block_count`, or the model has a projector layer
    tools        the Go TEMPLATE refers to .Tools; a Jinja chat template mentions
                 "tools" or "tool_call"
    thinking     the Go TEMPLATE writes .Thinking of a message between an opening and a closing
                 tag (Ollama's thinking.InferTags); a Jinja chat template has <think> and
                 </think> (or strips prior reasoning with content.split('</think>'))
    insert       the Go TEMPLATE refers to .Suffix (Ollama's rule), or the vocabulary has
                 fill-in-the-middle tokens (llama.cpp's infill needs prefix, suffix and middle)

A model's own TEMPLATE wins over the GGUF's chat template, as it does when corral renders a
prompt (workers/prompt.py), so the capabilities are those of the template actually used.
"""

from __future__ import annotations

from typing import Any

from service.core.errors import InvalidRequest
from service.models.template import Template

COMPLETION, EMBEDDING, VISION = "completion", "embedding", "vision"
TOOLS, THINKING, INSERT = "tools", "thinking", "insert"

# (prefix, suffix, middle) token keys: llama.cpp's current names, then their older spelling
_FIM_KEYS = (
    ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id",
     "tokenizer.ggml.fim_mid_token_id"),
    ("tokenizer.ggml.prefix_token_id", "tokenizer.ggml.suffix_token_id",
     "tokenizer.ggml.middle_token_id"),
)


def capabilities(meta: dict[str, Any], template: str | None, projector: bool) -> list[str]:
    """A model's capabilities from its GGUF header, its TEMPLATE (None: the GGUF's chat
    template applies) and whether it has a projector layer, in Ollama's order: those a Jinja
    chat template declares, completion or embedding, vision, then a Go TEMPLATE's."""
    found: list[str] = []
    arch = meta.get("general.architecture", "")
    if template is None:
        found += jinja_capabilities(meta.get("tokenizer.chat_template") or "")
    found.append(EMBEDDING if f"{arch}.pooling_type" in meta else COMPLETION)
    if f"{arch}.vision.block_count" in meta or projector:
        found.append(VISION)
    if template is not None:
        found += go_template_capabilities(template)
    if has_fim_tokens(meta):
        found.append(INSERT)
    return list(dict.fromkeys(found))  # each once, first place kept


def jinja_capabilities(source: str) -> list[str]:
    """Tools and thinking as Ollama reads them off a GGUF chat template: by its text."""
    found = []
    if "tools" in source or "tool_call" in source:
        found.append(TOOLS)
    split = "content.split('</think>')" in source or 'content.split("</think>")' in source
    if ("<think>" in source and "</think>" in source) or (
            split and "reasoning_content" not in source and "<SPECIAL_12>" not in source):
        found.append(THINKING)
    return found


def go_template_capabilities(text: str) -> list[str]:
    """Tools, insert and thinking as Ollama reads them off a Go TEMPLATE: by the fields it
    uses. A template that does not parse declares nothing (creating it was refused)."""
    try:
        template = Template(text)
    except InvalidRequest:
        return []
    found = []
    if "tools" in template.variables:
        found.append(TOOLS)
    if "suffix" in template.variables:
        found.append(INSERT)
    opening, closing = template.thinking_tags
    if opening and closing:
        found.append(THINKING)
    return found


def has_fim_tokens(meta: dict[str, Any]) -> bool:
    """Whether the vocabulary names fill-in-the-middle prefix, suffix and middle tokens."""
    return any(all(isinstance(meta.get(key), int) for key in keys) for keys in _FIM_KEYS)
