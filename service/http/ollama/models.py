"""The Ollama-compatible model face: blobs, create, show, copy, delete.

Requests and answers have the shapes of Ollama's api/types.go (CreateRequest, ShowResponse,
CopyRequest, DeleteRequest); the store does the work. A model's blobs are never loaded here:
/api/show reads the GGUF header only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request

from service.core.errors import InvalidRequest, NotFound
from service.core.fields import field
from service.http import access
from service.http.inputs import json_body
from service.http.relay import follow, progress
from service.http.services import services
from service.jobs import control
from service.jobs.kinds import JobKind
from service.jobs.requests import QuantizeRequest
from service.models import gguf, quantize
from service.models.modelfile import Modelfile, coerce_options, parse_modelfile
from service.models.names import parse_name
from service.models.store import MEDIA, Layer, Model, ModelStore, check_digest
from service.models.template import Template

bp = Blueprint("models", __name__)


@bp.route("/blobs/<digest>", methods=["HEAD"])
@access.admin_only
def blob_exists(digest: str):
    if not services().store.has_blob(check_digest(digest)):
        raise NotFound(f"blob {digest} not found")
    return Response(status=200)


@bp.post("/blobs/<digest>")
@access.admin_only
def blob_upload(digest: str):
    """Store an uploaded blob; 400 if its content does not match the digest in the URL."""
    store = services().store
    expected = check_digest(digest)
    if store.has_blob(expected):
        return Response(status=200)
    store.write_blob(request.stream, expected)
    return Response(status=201)


def _model_name(body: dict[str, Any]) -> str:
    name = field(body, "model", str) or field(body, "name", str)
    if not name:
        raise InvalidRequest("missing required field 'model'")
    return name


def _modelfile_from_fields(body: dict[str, Any]) -> Modelfile:
    """A Modelfile from the legacy `modelfile` text and Ollama's newer fields, which win."""
    text = field(body, "modelfile", str)
    modelfile = parse_modelfile(text) if text else Modelfile()
    source, files = field(body, "from", str), field(body, "files", dict, {})
    if source:
        modelfile.from_ = source
    elif files:  # the weights and any projector: told apart by their GGUFs (_split_projectors)
        ggufs = [d for n, d in files.items() if str(n).endswith(".gguf")] or list(files.values())
        modelfile.from_, modelfile.projectors = str(ggufs[0]), [str(d) for d in ggufs[1:]]
    adapters = field(body, "adapters", dict, {})
    if adapters:
        modelfile.adapters = [str(d) for d in adapters.values()]
    template, system = field(body, "template", str), field(body, "system", str)
    if template is not None:
        modelfile.template = _checked_template(template)
    if system is not None:
        modelfile.system = system
    modelfile.parameters.update(coerce_options(field(body, "parameters", dict, {})))
    license_ = field(body, "license", (str, list))
    if license_:
        modelfile.license += [license_] if isinstance(license_, str) else list(license_)
    messages = field(body, "messages", list)
    if messages:
        modelfile.messages = [_message(i, m) for i, m in enumerate(messages)]
    if not modelfile.from_:
        raise InvalidRequest("neither 'from' nor 'files' was specified (or a FROM line in "
                             "'modelfile')")
    return modelfile


def _checked_template(text: str) -> str:
    """Parse the `template` field now (a Modelfile's TEMPLATE is parsed with the Modelfile),
    so an unknown function or a syntax error is a 400 naming it when the model is created
    rather than on every request to it."""
    try:
        Template(text)
    except InvalidRequest as exc:
        raise InvalidRequest(f"invalid field 'template': {exc.message}") from None
    return text


def _message(index: int, message: Any) -> dict[str, str]:
    role = message.get("role") if isinstance(message, dict) else None
    if role not in ("system", "user", "assistant", "tool"):
        raise InvalidRequest(f"invalid field 'messages[{index}].role': expected system, user, "
                             "assistant or tool")
    content = message.get("content") or ""
    if not isinstance(content, str):
        raise InvalidRequest(f"invalid field 'messages[{index}].content': expected a string")
    return {"role": role, "content": content}


def _blob_or_file(store: ModelStore, source: str, what: str, media_type: str) -> Layer | None:
    """Resolve a blob digest or a GGUF path on this machine; None if it is neither."""
    if source.lstrip("@").startswith(("sha256:", "sha256-")):
        digest = check_digest(source.lstrip("@"))
        if not store.has_blob(digest):
            raise NotFound(f"blob {digest} not found; upload it with POST /api/blobs/{digest}")
        path = store.blob_path(digest)
    else:
        path = Path(source).expanduser()
        if path.suffix != ".gguf" and not path.is_file():
            return None
        if not path.is_file():
            raise InvalidRequest(f"invalid {what}: no such file {source}")
    try:
        gguf.read_metadata(path)
    except (ValueError, OSError):
        raise InvalidRequest(f"invalid {what}: {source} is not in GGUF format") from None
    if path.parent == store.root / "blobs":
        return Layer(media_type, check_digest(path.name), path.stat().st_size)
    return store.import_file(path, media_type)


def _split_projectors(store: ModelStore, sources: list[str]) -> tuple[str, list[Layer]]:
    """Of a Modelfile's FROMs (in order), the one that names the weights (or a model), the
    last such as ever, and the vision projectors: GGUFs whose architecture is "clip", as
    Ollama tells them apart (llama.cpp's converters write mmproj files so)."""
    main, projectors = [], []
    for source in sources:
        layer = _blob_or_file(store, source, "FROM", MEDIA["projector"])
        if layer is not None and _architecture(store, layer) == "clip":
            projectors.append(layer)
        else:
            main.append(source)
    if not main:
        raise InvalidRequest("invalid FROM: every FROM is a vision projector (a GGUF of "
                             "architecture clip); one must name the model's weights")
    return main[-1], projectors


def _architecture(store: ModelStore, layer: Layer) -> str | None:
    return gguf.read_metadata(store.blob_path(layer.digest)).get("general.architecture")


def _manifest(store: ModelStore, modelfile: Modelfile) -> tuple[Layer, dict[str, Any]]:
    """The weights a Modelfile names, and the rest of the manifest (ModelStore.create's
    keywords); FROM an existing model inherits its layers (template and system unless
    replaced, parameters merged, licenses added, its projectors unless others are named,
    as Ollama)."""
    base = None
    projectors: list[Layer] = []
    source = modelfile.from_
    if modelfile.projectors:
        source, projectors = _split_projectors(store, [*modelfile.projectors, source])
    layer = _blob_or_file(store, source, "FROM", MEDIA["model"])
    if layer is None:
        base = store.resolve(source)
        layer = base.layer("model")
        if layer is None:
            raise InvalidRequest(f"invalid FROM: model '{source}' has no weights")
    adapters = []
    for source in modelfile.adapters:
        adapter = _blob_or_file(store, source, "ADAPTER", MEDIA["adapter"])
        if adapter is None:
            raise InvalidRequest(f"invalid ADAPTER: {source} is neither a blob digest nor a "
                                 ".gguf file")
        adapters.append(adapter)
    if len(adapters) > 1:
        raise InvalidRequest("only one adapter is currently supported")
    template, system, messages = modelfile.template, modelfile.system, modelfile.messages
    parameters, licenses = dict(modelfile.parameters), list(modelfile.license)
    if base is not None:
        template = base.template if template is None else template
        system = base.system if system is None else system
        parameters = {**base.parameters, **parameters}
        licenses = base.license + licenses
        messages = messages or base.messages
        adapters = adapters or [x for x in [base.layer("adapter")] if x is not None]
        projectors = projectors or [x for x in base.layers if x.media_type == MEDIA["projector"]]
    return layer, {"template": template, "system": system, "parameters": parameters or None,
                   "license": licenses, "messages": messages or None, "adapters": adapters,
                   "projectors": projectors}


@bp.post("/create")
@access.admin_only
def create():
    """Create a model from a Modelfile or Ollama's fields, answering with status lines; with
    `quantize`, a worker writes the weights at that type first (see workers/kinds/quantize)."""
    body = json_body()
    name = parse_name(_model_name(body))
    modelfile = _modelfile_from_fields(body)
    stream = field(body, "stream", bool, True)
    store = services().store
    before = {p.name for p in (store.root / "blobs").glob("sha256-*")}
    layer, manifest = _manifest(store, modelfile)
    goal = field(body, "quantize", str) or field(body, "quantization", str)
    if goal:
        return _quantized(store, name.display(), layer, manifest, goal, stream)
    model = store.create(name.display(), layer, **manifest)
    statuses = ["parsing GGUF"]
    for layer in model.layers:
        new = layer.digest.replace(":", "-") not in before
        statuses.append(f"{'creating new' if new else 'using existing'} layer {layer.digest}")
    statuses += ["writing manifest", "success"]
    if stream:
        lines = "".join(json.dumps({"status": s}) + "\n" for s in statuses)
        return Response(lines, mimetype="application/x-ndjson")
    return jsonify({"status": "success"})


def _quantized(store: ModelStore, name: str, layer: Layer, manifest: dict[str, Any],
               goal: str, stream: bool) -> Response:
    """Queue the quantize job (400 first for a type or weights it cannot do) and relay its
    progress lines; it goes on if the client hangs up, as a pull does."""
    kind = quantize.target(goal)
    quantize.check_source(gguf.read_metadata(store.blob_path(layer.digest)), kind)
    layers = {k: [{"digest": x.digest, "size": x.size} for x in manifest[k]]
              for k in ("adapters", "projectors")}
    req = QuantizeRequest(model=name, source=layer.digest, quantize=kind,
                          manifest={**manifest, **layers}, stream=stream)
    return progress(follow(JobKind.QUANTIZE, req, resolve=False).events, stream)


@bp.post("/show")
def show():
    """Ollama's ShowResponse: the Modelfile, parameters, template and the GGUF's header."""
    body = json_body()
    name = _model_name(body)
    access.check_model(name)
    model = services().store.resolve(name)
    system = field(body, "system", str)
    if system:
        model.system = system
    try:
        meta = gguf.read_metadata(model.model_path)
    except (ValueError, OSError) as exc:
        raise InvalidRequest(f"model '{model.name.display()}' has no readable GGUF: {exc}"
                             ) from None
    return jsonify(show_response(model, meta))


def show_response(model: Model, meta: dict[str, Any]) -> dict[str, Any]:
    """Build /api/show's answer; empty strings are left out, as Go's omitempty does."""
    modelfile = Modelfile(from_=str(model.model_path),
                          projectors=[str(p) for p in model.projectors],
                          parameters=dict(model.parameters),
                          template=model.template, system=model.system,
                          adapters=[str(p) for p in model.adapters],
                          license=list(model.license), messages=list(model.messages))
    answer = {
        "license": "\n".join(model.license),
        "modelfile": modelfile.render(name=model.name.display()),
        "parameters": parameters_text(model.parameters),
        "template": model.template or meta.get("tokenizer.chat_template") or "{{ .Prompt }}",
        "system": model.system or "",
        "details": model.details(),
        "messages": model.messages or None,
        "model_info": gguf.model_info(meta),
        "capabilities": model.capabilities(meta),
        "modified_at": model.modified_at.isoformat().replace("+00:00", "Z"),
    }
    return {k: v for k, v in answer.items() if v not in ("", None)}


def parameters_text(parameters: dict[str, Any]) -> str:
    """PARAMETERs as `ollama show --parameters` prints them: name padded to 30, Go's %#v."""
    lines = []
    for key, value in parameters.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key:<30} {_go_value(item)}")
    return "\n".join(lines)


def _go_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


@bp.post("/copy")
@access.admin_only
def copy():
    body = json_body()
    source = field(body, "source", str, required=True)
    destination = field(body, "destination", str, required=True)
    services().store.copy(source, parse_name(destination))
    return Response(status=200)


@bp.delete("/delete")
@access.admin_only
def delete():
    """Delete a model: unload it on every worker first, then remove its unshared blobs."""
    ctx = services()
    model = ctx.store.resolve(_model_name(json_body()))
    control.send(ctx.redis, "unload", model=model.name.display())
    ctx.store.delete(model.name)
    return Response(status=200)
