"""The one way tests wait for something another thread or process does: poll until it holds.

Workers, decode threads and served processes change state on their own time, and most of what
they do is broadcast rather than awaited, so a test polls for the state it expects, and fails
with what it waited for and what it saw last instead of hanging or sleeping a guessed time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
               message: str | Callable[[T], str] | None = None, *,
               ready: Callable[[T], Any] = bool) -> T:
    """Call `condition` every `interval` seconds until `ready` accepts its value (by default:
    until the value is truthy), and return that value.

    The condition is called at least once, and its last call is at or after the deadline. When
    `timeout` seconds pass first, raise AssertionError saying what was awaited (`message`, a
    callable building it from the last value, or else where the condition was written) and
    the last value seen. An exception raised by the condition ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if ready(value):
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(interval, left))
    if callable(message):
        message = message(value)
    what = message or _where(condition)
    seen = repr(value)
    if len(seen) > 2000:
        seen = seen[:2000] + "..."
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last seen: {seen}")


def _where(condition: Callable) -> str:
    code = getattr(condition, "__code__", None)
    if code is None:
        return repr(condition)
    return f"{condition.__qualname__} ({code.co_filename}:{code.co_firstlineno})"
