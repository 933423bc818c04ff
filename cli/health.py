"""`corral worker --check`: whether this host's worker is alive, for container health checks.

A worker is healthy when its heartbeat stands in the fleet registry (service.jobs.fleet), the
same record `corral workers` and the lease sweeps trust, so a worker counted healthy is one
that others would hand jobs to. The check runs where the worker runs (its container), so it
picks the workers whose host is this machine's name: in a container that name is the
container's own, and two replicas on one Docker host do not vouch for each other.
"""

from __future__ import annotations

import socket

import redis

from service.core.settings import Settings, safe_url
from service.jobs import fleet


def check_worker(settings: Settings, host: str | None = None) -> tuple[bool, str]:
    """Return (alive, a line saying why) for the workers on `host` (default: this machine)."""
    host = host or socket.gethostname()
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3,
                                  socket_timeout=3)
    try:
        here = [w for w in fleet.workers(client) if w.get("host") == host]
    except redis.RedisError as exc:
        where = safe_url(settings.redis_url or "")
        return False, f"unhealthy: Redis at {where} did not answer ({exc})"
    finally:
        client.close()
    live = [w for w in here if w.get("alive")]
    if live:
        names = ", ".join(f"{w['worker']} ({w.get('node') or 'starting'}, "
                          f"heartbeat {w['heartbeat_age']:.0f}s ago)" for w in live)
        return True, f"healthy: {names}"
    if here:
        ages = ", ".join(f"{w['worker']} {w['heartbeat_age']:.0f}s ago" for w in here)
        return False, f"unhealthy: its heartbeat stopped ({ages})"
    return False, f"unhealthy: no worker on {host} in the fleet"

