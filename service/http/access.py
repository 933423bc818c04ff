"""Who is asking: the API key on each request, and what its role and allowlist let it do.

Keys are off while the API listens on loopback and CORRAL_AUTH is unset: everyone who can
reach 127.0.0.1 is this machine's user, as with Ollama, and acts as `LOCAL` (an admin).
With CORRAL_AUTH=required, and always on a bind beyond loopback, every request but the few
marked `open_door` (health checks, the API description, CORS preflights) carries
`Authorization: Bearer <key>`, which the Ollama and OpenAI clients send.

Routes say what they need where they are declared: `@admin_only` (managing models, keys,
other people's work) or nothing (any valid key). Handlers then ask `check_model` before
running a model and `check_owner` before showing or changing a job, batch or file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, g, request

from service.access.keys import LOCAL, KeyStore, Principal, Role
from service.core.errors import Forbidden, Unauthorized
from service.core.settings import Settings
from service.http.front_door import loopback_bind

View = TypeVar("View", bound=Callable[..., Any])
_NEEDS = "corral_needs"  # attribute a route's view function carries: "admin" or "nothing"


def admin_only(view: View) -> View:
    """Mark a route as one only an admin key may call."""
    setattr(view, _NEEDS, Role.ADMIN.value)
    return view


def open_door(view: View) -> View:
    """Mark a route anyone may call without a key (it shows nothing private)."""
    setattr(view, _NEEDS, "nothing")
    return view


def keys_required(settings: Settings) -> bool:
    """Whether requests need a key: asked for, or the API is reachable beyond this machine."""
    return settings.auth == "required" or not loopback_bind(settings.host)


def install(app: Flask, settings: Settings, keys: KeyStore) -> None:
    """Find each request's principal before its handler runs (401/403 when it has none)."""
    required = keys_required(settings)

    @app.before_request
    def identify() -> None:
        g.corral_principal = LOCAL
        needs = getattr(current_app.view_functions.get(request.endpoint or ""), _NEEDS, "key")
        public = needs == "nothing" or request.endpoint in ("static", "console.static")
        if request.method == "OPTIONS" or public:
            return  # a CORS preflight carries no key; the console's files are public
        token = _token()
        if required:
            principal = keys.verify(bearer_token())
            if principal is None:
                raise Unauthorized("invalid API key: it is unknown or was revoked")
        else:
            # Keys are optional here; a valid one still says whose work this is. An unknown
            # one is ignored: OpenAI's client always sends some key ("unused", "ollama").
            principal = (keys.verify(token) if token else None) or LOCAL
        if needs == Role.ADMIN.value and not principal.admin:
            raise Forbidden(f"the key '{principal.name}' has the role 'user'; "
                            f"{request.method} {request.path} needs an admin key")
        g.corral_principal = principal


def _token() -> str | None:
    """The key in `Authorization: Bearer <key>`, if the request has one."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def bearer_token() -> str:
    """The request's key; 401 when there is none."""
    token = _token()
    if token is None:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' "
                           "(create one with `corral keys create`)")
    return token


def principal() -> Principal:
    """Who the current request acts as."""
    return g.get("corral_principal", LOCAL)


def owner() -> str | None:
    """The owner to record on what this request makes: its key's id (None without keys)."""
    return principal().key_id


def visible_to() -> str | None:
    """The owner whose rows a listing shows: None (all) for an admin, else the key's own."""
    who = principal()
    return None if who.admin else who.key_id


def check_model(model: str) -> None:
    """403 unless the key's allowlist covers `model`."""
    who = principal()
    if not who.may_use(model):
        raise Forbidden(f"the key '{who.name}' may not use the model '{model}'")


def check_owner(owner_id: str | None, what: str) -> None:
    """403 unless the current key made `what` (or is an admin's)."""
    who = principal()
    if not who.owns(owner_id):
        raise Forbidden(f"{what} belongs to another key")
