"""Reasoning in a model's output: a streaming parser that splits what a thinking model writes
between its opening and closing tags (`<think>` ... `</think>` unless its template says
otherwise) from the answer, as Ollama's thinking parser does.

    "<think>I should greet.</think>\n\nHello!"  ->  thinking "I should greet.", content "Hello!"

Whitespace before the opening tag is allowed and dropped, and so is whitespace between the
closing tag and the answer. A template that writes the opening tag itself at the end of the
prompt (DeepSeek-R1's and Qwen3's generation prompts do) puts the model inside its reasoning
from the first token: `started_inside` says so. An output that never opens a tag is all
answer; one that opens and never closes is all reasoning.

Pure text in, text out: the worker feeds it the decoded text as it streams, and the tool-call
parser sees only the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.models.tool_calls import partial_marker

DEFAULT_TAGS = ("<think>", "</think>")

# looking: nothing written yet; opened: inside the tags, no reasoning yet; after: past the
# closing tag, no answer yet (whitespace is dropped in those three)
_LOOKING, _OPENED, _THINKING = "looking", "opened", "thinking"
_AFTER, _ANSWER = "after", "answer"


@dataclass(frozen=True)
class Piece:
    """What one fed chunk gave: reasoning text and answer text (either may be empty)."""

    thinking: str = ""
    content: str = ""


class ThinkingParser:
    """Split a stream of text into reasoning and answer; holds back only what may be the
    start of a tag, so both stream as they are written."""

    def __init__(self, opening: str = DEFAULT_TAGS[0], closing: str = DEFAULT_TAGS[1], *,
                 started_inside: bool = False) -> None:
        self.opening, self.closing = opening, closing
        self._state = _OPENED if started_inside else _LOOKING
        self._held = ""
        self.thinking = ""  # all the reasoning so far

    def feed(self, text: str) -> Piece:
        """Take the next chunk of output; return what of it is sure to be reasoning or answer."""
        self._held += text
        thinking, content = [], []
        while self._held:
            if not self._step(thinking, content):
                break
        piece = Piece("".join(thinking), "".join(content))
        self.thinking += piece.thinking
        return piece

    def close(self) -> Piece:
        """The output ended: what was held back is reasoning while inside the tags, answer
        otherwise (a half-written opening tag is text the model wrote)."""
        held, self._held = self._held, ""
        if self._state in (_OPENED, _THINKING):
            self.thinking += held
            return Piece(thinking=held)
        if self._state == _AFTER:
            return Piece()  # only whitespace was held
        return Piece(content=held)

    def _step(self, thinking: list[str], content: list[str]) -> bool:
        """Consume what the state allows from the held text; False when it must wait."""
        if self._state == _LOOKING:
            return self._look()
        if self._state == _THINKING:
            return self._think(thinking)
        if self._state in (_OPENED, _AFTER):
            stripped = self._held.lstrip()
            if not stripped:
                self._held = ""
                return False
            self._held = stripped
            self._state = _THINKING if self._state == _OPENED else _ANSWER
            return True
        content.append(self._held)
        self._held = ""
        return False

    def _look(self) -> bool:
        """Before anything is written: the opening tag (after whitespace) starts reasoning;
        anything else makes the whole output an answer."""
        stripped = self._held.lstrip()
        if stripped.startswith(self.opening):
            self._held, self._state = stripped[len(self.opening):], _OPENED
            return True
        if self.opening.startswith(stripped):
            return False  # empty, or a tag still being written
        self._state = _ANSWER
        return True

    def _think(self, thinking: list[str]) -> bool:
        at = self._held.find(self.closing)
        if at >= 0:
            thinking.append(self._held[:at])
            self._held, self._state = self._held[at + len(self.closing):], _AFTER
            return True
        keep = partial_marker(self._held, (self.closing,))
        thinking.append(self._held[:len(self._held) - keep])
        self._held = self._held[len(self._held) - keep:]
        return False


def prompt_opens(prompt: str, opening: str) -> bool:
    """Whether the rendered prompt ends inside an opened reasoning block (the template wrote
    the opening tag for the model), so the parser starts inside it."""
    stripped = prompt.rstrip()
    return bool(opening) and stripped.endswith(opening)
