"""Turn a sequence's token bytes into text that is safe to show, honouring stop strings.

Tokens are byte pieces: one UTF-8 character can span several tokens, and a stop string can span
several pieces. `TextAssembler` holds back both until they are resolved, so a client never sees
half a character or the first half of a stop string that later turns out to be one.
"""

from __future__ import annotations

import codecs


class TextAssembler:
    """Assemble one sequence's output text from token pieces, cutting at the first stop string."""

    def __init__(self, stops: list[str] | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in (stops or []) if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self._stopped = False

    def feed(self, piece: bytes) -> tuple[str, bool]:
        """Add one token's bytes; return (text now safe to emit, whether a stop string matched).

        On a match the returned text ends just before the stop string and nothing more should be
        fed.
        """
        text = self._held + self._decoder.decode(piece)
        if not self._stops:
            self._held = ""
            return text, False
        cut = self._first_stop(text)
        if cut >= 0:
            self._held = ""
            self._stopped = True
            return text[:cut], True
        keep = self._partial_stop_suffix(text)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """Return the held-back text at the end of a sequence ("" after a stop-string match)."""
        if self._stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _first_stop(self, text: str) -> int:
        """Index of the earliest stop-string occurrence in text, or -1."""
        hits = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        return min(hits, default=-1)

    def _partial_stop_suffix(self, text: str) -> int:
        """Length of the longest suffix of text that is the start of some stop string."""
        for k in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-k:]
            if any(s.startswith(tail) for s in self._stops):
                return k
        return 0
