"""One thread per process runs every llama.cpp computation, whichever model it is for.

llama.cpp's CPU backend here is built with OpenMP, and libgomp keeps one team of helper threads
for each thread that calls into it. Once a process holds more helpers than it has cores (two
loaded models, each decoding from its own thread, or an embedding model beside a chat model),
libgomp stops letting idle helpers spin and puts them to sleep between the parallel regions of a
step. Measured on 2 cores: one engine alone decoded 97 tokens/s; the same engine with a second
model decoding from another thread of the process, idle at the time, decoded 35.

Running every llama_decode on this one thread keeps a single team in the process, so decoding
stays as fast as with one model; decodes of different models take turns, which on a CPU is
what they would do anyway. The hand-off costs tens of microseconds per step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_thread_ident: int | None = None


def run(fn: Callable[..., T], *args: object) -> T:
    """Call fn(*args) on the compute thread and return its result (or raise its error)."""
    if threading.get_ident() == _thread_ident:  # already there (a nested call)
        return fn(*args)
    return _get().submit(fn, *args).result()


def _get() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-compute",
                                           initializer=_remember_thread)
        return _executor


def _remember_thread() -> None:
    global _thread_ident
    _thread_ident = threading.get_ident()
