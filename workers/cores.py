"""How many threads a worker decodes with: its share of the cores of its host.

A llama.cpp context runs a thread per core it is given, and two workers on one host that
each take every core thrash: measured, two workers on this 2-core host with 2 threads each
took 8 jobs of 64 tokens in 43 s (about 12 tok/s in all, against about 190 for one worker).
So a worker counts the live workers of its machine in the fleet registry (service.jobs.fleet)
and decodes with its share of the cores it may run on (its affinity mask), at least one;
it looks again every SHARE_EVERY_S and changes its loaded engines' threads between steps
when a worker joins or leaves. An explicit CORRAL_NUM_THREADS is kept as it is; either way
a worker warns when the host's workers together ask for more threads than it has cores.

"Its machine" is the running kernel (its boot id), not the host name: containers on one
machine each have a host name of their own, and share its cores all the same.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import redis

from service.jobs import fleet

log = logging.getLogger(__name__)

SHARE_EVERY_S = 5  # seconds between two looks at how many workers share the host


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def machine_id() -> str:
    """What the workers sharing this machine's cores have in common: the kernel's boot id
    (the same in every container and network namespace on it), else the host name."""
    try:
        return BOOT_ID.read_text().strip() or socket.gethostname()
    except OSError:
        return socket.gethostname()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, which os.cpu_count() ignores)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def share(cores: int, workers: int) -> int:
    """Each of `workers` workers' threads on `cores` cores: an even split, at least one."""
    return max(1, cores // max(1, workers))


class CoreShare:
    """This worker's thread count, kept to its share of the host as the fleet changes."""

    def __init__(self, client: redis.Redis, *, machine: str, worker_id: str,
                 configured: int = 0, cores: int | None = None) -> None:
        self.redis = client
        self.machine = machine
        self.worker_id = worker_id
        self.configured = configured  # CORRAL_NUM_THREADS; 0 = share the host
        self.cores = cores or usable_cores()
        self.threads = configured or self.cores
        self._warned: tuple[int, int] | None = None

    def update(self) -> int:
        """Look at the machine's live workers and return the threads to decode with now."""
        try:
            peers = [w for w in fleet.workers(self.redis)
                     if w.get("alive") and w.get("machine") == self.machine
                     and w["worker"] != self.worker_id]
        except (redis.RedisError, OSError):
            return self.threads  # the registry is away: keep what was decided
        if not self.configured:
            self.threads = share(self.cores, len(peers) + 1)
        asked = self.threads + sum(int(w.get("threads") or 0) for w in peers)
        self._warn(asked, len(peers) + 1)
        return self.threads

    def _warn(self, asked: int, workers: int) -> None:
        """Say once per change that the host is oversubscribed (more threads than cores)."""
        state = (asked, workers)
        if asked > self.cores and state != self._warned:
            log.warning("%d workers on this machine decode with %d threads on %d cores: they "
                        "slow each other down (set CORRAL_NUM_THREADS, or run fewer workers)",
                        workers, asked, self.cores)
        self._warned = state if asked > self.cores else None
