"""The front door: requests a local service refuses before any handler sees them, as Ollama does.

A web page the user visits can make the browser send requests to 127.0.0.1:11434. Two checks
keep such pages out while leaving curl, the SDKs and allowed front ends as they are:

- Host: while the API listens on loopback only, the Host header must name this machine.
  A DNS-rebinding page (evil.example resolving to 127.0.0.1) reaches the port, but its
  requests carry `Host: evil.example`, so they are refused. This is Ollama's
  allowedHostsMiddleware/allowedHost (server/routes.go): loopback, private and unspecified
  addresses, the machine's own addresses, "localhost", the machine's hostname and names ending
  in .localhost, .local or .internal pass. A bind to 0.0.0.0 or a public address serves
  other names on purpose, so it checks nothing (Ollama too).
- Origin: a state-changing request (POST, PUT, PATCH, DELETE) from a page whose origin the CORS
  allowlist does not admit is refused. CORS alone only hides the answer from the page; a
  "simple" cross-site POST (text/plain, no preflight) would still queue work or delete a
  model. Requests without Origin (curl, SDKs, server-side front ends) are not browsers' and
  pass.

Refusals are CorralErrors, so each face's error handlers answer them in its own shape.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable

from flask import Flask, request

from service.core.errors import Forbidden
from service.http import cors

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOCAL_SUFFIXES = (".localhost", ".local", ".internal")  # Ollama's local top-level domains
# Go's netip.Addr.IsPrivate (RFC 1918 and RFC 4193), which Ollama uses; Python's is_private
# also covers documentation and benchmarking ranges, so it is not the same rule.
PRIVATE = tuple(ipaddress.ip_network(n)
                for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))


def install(app: Flask, bind_host: str, origins: Iterable[str]) -> None:
    """Check every request's Host (on a loopback bind) and Origin before its handler runs."""
    guard_host = loopback_bind(bind_host)
    extra = tuple(origins)

    @app.before_request
    def front_door() -> None:
        if guard_host:
            check_host(request.headers.get("Host", ""), bind_host)
        check_origin(request.method, request.headers.get("Origin"), extra)


def check_host(header: str, bind_host: str) -> None:
    """403 unless the Host header names this machine (only called on a loopback bind)."""
    name = host_name(header)
    if not allowed_host(name):
        raise Forbidden(f"host '{name}' is not allowed: corral listens on {bind_host} only, "
                        "so it answers local names; set CORRAL_HOST=0.0.0.0 to serve others")


def check_origin(method: str, origin: str | None, extra: tuple[str, ...]) -> None:
    """403 for a state-changing request from a browser page the CORS allowlist does not admit."""
    if method in STATE_CHANGING and origin is not None and not cors.allowed(origin, extra):
        raise Forbidden(f"origin '{origin}' is not allowed to send {method} requests; "
                        "add it to CORRAL_ORIGINS to let that page use corral")


def loopback_bind(host: str) -> bool:
    """True when the API listens on a loopback address only, where Host is worth checking."""
    address = parse_address(host)
    return host.lower() == "localhost" if address is None else address.is_loopback


def host_name(header: str) -> str:
    """The name or address of a Host header without its port: "[::1]:11434" -> "::1".

    Like Go's net.SplitHostPort with Ollama's fallback: a value that is not host:port (a bare
    IPv6 address, say) is taken whole.
    """
    header = header.strip()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        return header.partition(":")[0]
    return header


def allowed_host(name: str) -> bool:
    """Ollama's rule: a local address, or a name that can only mean this machine."""
    name = name.lower()
    address = parse_address(name)
    if address is not None and local_address(address):
        return True
    return (name in ("", "localhost") or name == socket.gethostname().lower()
            or name.endswith(LOCAL_SUFFIXES))


def local_address(address: Address) -> bool:
    """Loopback, private, unspecified, or one of this machine's own addresses."""
    return (address.is_loopback or address.is_unspecified
            or any(address in network for network in PRIVATE) or address in own_addresses())


@functools.cache
def own_addresses() -> frozenset[Address]:
    """The addresses this machine's hostname resolves to, looked up once.

    Ollama lists its network interfaces' addresses; Python's standard library cannot, so the
    hostname's addresses stand in. Only a Host that is a public address reaches this.
    """
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return frozenset()
    found = (parse_address(str(info[4][0])) for info in infos)
    return frozenset(a for a in found if a is not None)


def parse_address(text: str) -> Address | None:
    """The IP address `text` spells (IPv4-mapped IPv6 as IPv4), or None for a name."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address
