"""The Ollama-compatible model face: blobs, create, show, copy, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request

from service.api.fields import field, json_body
from service.app import services
from service.errors import InvalidRequest, NotFound
from service.modelfile import Modelfile, coerce_options, parse_modelfile
from service.names import parse_name
from service.store import MEDIA, Layer, ModelStore, check_digest

bp = Blueprint("ollama_models", __name__, url_prefix="/api")


@bp.route("/blobs/<digest>", methods=["HEAD"])
def blob_exists(digest: str):
    if not services().store.has_blob(check_digest(digest)):
        raise NotFound(f"blob {digest} not found")
    return Response(status=200)


@bp.post("/blobs/<digest>")
def blob_upload(digest: str):
    """Store an uploaded blob; 400 if its content does not match the digest in the URL."""
    store = services().store
    expected = check_digest(digest)
    if not store.has_blob(expected):
        store.write_blob(request.stream, expected)
    return Response(status=201)


def _modelfile_from_fields(body: dict[str, Any]) -> Modelfile:
    """Ollama's newer create fields (from/files/template/system/parameters) as a Modelfile."""
    text = field(body, "modelfile", str)
    modelfile = parse_modelfile(text) if text else Modelfile()
    files = field(body, "files", dict, {})
    source = field(body, "from", str)
    if files:
        ggufs = [d for n, d in files.items() if str(n).endswith(".gguf")] or list(files.values())
        modelfile.from_ = ggufs[0]
    elif source:
        modelfile.from_ = source
    for key in ("template", "system"):
        value = field(body, key, str)
        if value is not None:
            setattr(modelfile, key, value)
    params = field(body, "parameters", dict)
    if params:
        modelfile.parameters.update(coerce_options(params))
    license_ = field(body, "license", (str, list))
    if license_:
        modelfile.license = [license_] if isinstance(license_, str) else list(license_)
    messages = field(body, "messages", list)
    if messages:
        modelfile.messages = messages
    if not modelfile.from_:
        raise InvalidRequest("missing required field 'from' (or a FROM line in 'modelfile')")
    return modelfile


def _model_layer(store: ModelStore, source: str) -> tuple[Layer, Any]:
    """Resolve FROM: a blob digest, a GGUF path on this machine, or an existing model."""
    if source.startswith(("sha256:", "sha256-", "@sha256:")):
        digest = check_digest(source.lstrip("@"))
        if not store.has_blob(digest):
            raise NotFound(f"blob {digest} not found; upload it with POST /api/blobs/{digest}")
        return Layer(MEDIA["model"], digest, store.blob_path(digest).stat().st_size), None
    path = Path(source).expanduser()
    if path.suffix == ".gguf" or path.is_file():
        if not path.is_file():
            raise InvalidRequest(f"invalid field 'from': no such file {source}")
        return store.import_file(path), None
    base = store.resolve(source)
    layer = next(x for x in base.layers if x.media_type == MEDIA["model"])
    return layer, base


@bp.post("/create")
def create():
    body = json_body()
    name = field(body, "model", str) or field(body, "name", str)
    if not name:
        raise InvalidRequest("missing required field 'model'")
    model_name = parse_name(name)
    modelfile = _modelfile_from_fields(body)
    store = services().store
    layer, base = _model_layer(store, modelfile.from_)
    parameters = {**(base.parameters if base else {}), **modelfile.parameters}
    store.create(
        model_name, layer,
        template=modelfile.template if modelfile.template is not None else (base and base.template),
        system=modelfile.system if modelfile.system is not None else (base and base.system),
        parameters=parameters or None,
        license=modelfile.license or (base.license if base else []),
        messages=modelfile.messages or (base.messages if base else None),
    )
    statuses = ["parsing modelfile", f"using existing layer {layer.digest}", "writing manifest",
                "success"]
    if field(body, "stream", bool, True):
        lines = "".join(json.dumps({"status": s}) + "\n" for s in statuses)
        return Response(lines, mimetype="application/x-ndjson")
    return jsonify({"status": "success"})


@bp.delete("/delete")
def delete():
    body = json_body()
    name = field(body, "model", str) or field(body, "name", str)
    if not name:
        raise InvalidRequest("missing required field 'model'")
    services().store.delete(name)
    return Response(status=200)
