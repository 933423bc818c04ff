"""Quantize jobs: write a model's full-precision weights at a smaller file type, then the
model's manifest, as `ollama create --quantize` does.

The API read the create request, checked the source and the type (service.models.quantize)
and queued this job with the rest of the manifest; here llama.cpp's llama_model_quantize
does the work, into a file beside the blobs that becomes a blob only once it is whole, so a
worker killed halfway leaves no model naming half a file.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
import time
from pathlib import Path

import llama_cpp

from service.core.errors import InvalidRequest
from service.jobs.events import Publisher
from service.jobs.records import Job, JobStatus
from service.models import gguf
from service.models.quantize import TARGETS
from service.models.store import MEDIA, Layer
from workers.cores import usable_cores
from workers.job_context import JobContext


def run(job: Job, ctx: JobContext, events: Publisher) -> None:
    """Quantize the job's source weights and create its model; progress, then `done`."""
    started = time.perf_counter_ns()
    request = job.request
    store, goal = ctx.store, request["quantize"]
    source = store.blob_path(request["source"])
    level = gguf.quantization_level(gguf.read_metadata(source))
    events.emit("progress", status=f"quantizing {level} model to {goal}")
    blobs = store.root / "blobs"
    with tempfile.TemporaryDirectory(dir=blobs, prefix=".quantize-") as scratch:
        out = Path(scratch) / "model.gguf"
        _quantize(source, out, TARGETS[goal])
        layer = store.import_file(out)
    events.emit("progress", status=f"creating new layer {layer.digest}")
    manifest = request.get("manifest") or {}
    adapters, projectors = ([Layer(MEDIA[kind], x["digest"], x["size"])
                             for x in manifest.get(f"{kind}s") or []]
                            for kind in ("adapter", "projector"))
    events.emit("progress", status="writing manifest")
    model = store.create(request["model"], layer, template=manifest.get("template"),
                         system=manifest.get("system"), parameters=manifest.get("parameters"),
                         license=manifest.get("license") or [],
                         messages=manifest.get("messages"), adapters=adapters,
                         projectors=projectors)
    name = model.name.display()
    metrics = {"total_duration": time.perf_counter_ns() - started}
    if ctx.finish(job.id, JobStatus.SUCCEEDED, output=name, metrics=metrics):
        events.emit("done", model=name, **metrics)


def _quantize(source: Path, out: Path, ftype: int) -> None:
    """llama_model_quantize with every usable core; a failure is the request's fault (the
    API checked the type, so what is left is weights llama.cpp cannot read)."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = usable_cores()
    code = llama_cpp.llama_model_quantize(os.fsencode(source), os.fsencode(out),
                                          ctypes.byref(params))
    if code != 0:
        with contextlib.suppress(OSError):
            out.unlink()
        raise InvalidRequest(f"llama.cpp could not quantize {source.name} (code {code})")
