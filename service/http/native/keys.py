"""API keys over HTTP, for admins: GET /keys, POST /keys (the secret is in this answer
only), DELETE /keys/<id or name>. `corral keys` does the same on the server's machine.
GET /keys/me is for any key: who it is, so a client (the console) shows only what it may do."""

from __future__ import annotations

from flask import Blueprint, jsonify

from service.access.keys import parse_role
from service.core.fields import field
from service.http import access
from service.http.inputs import json_body
from service.http.services import services

bp = Blueprint("keys", __name__, url_prefix="/keys")


@bp.get("")
@access.admin_only
def list_keys():
    return jsonify({"keys": [key.to_dict() for key in services().keys.list()]})


@bp.get("/me")
def me():
    """The key this request carries: its name, role and models (null: every model), and
    whether keys are required at all (false: the console need not ask for one)."""
    who = access.principal()
    return jsonify({"id": who.key_id, "name": who.name, "role": who.role.value,
                    "models": list(who.models) if who.models is not None else None,
                    "keys_required": access.keys_required(services().settings)})


@bp.post("")
@access.admin_only
def create_key():
    """201 with the new key's record and its `key`, which is never shown again."""
    body = json_body()
    role = parse_role(field(body, "role", str, "user"))
    models = field(body, "models", list)
    key, secret = services().keys.create(field(body, "name", str, required=True), role, models)
    return jsonify({**key.to_dict(), "key": secret}), 201


@bp.delete("/<name_or_id>")
@access.admin_only
def revoke_key(name_or_id: str):
    return jsonify(services().keys.revoke(name_or_id).to_dict())
