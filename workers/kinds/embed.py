"""Embed jobs: load (or reuse) the model's embedding context, embed, record, report.

The request is {"input": [str, ...], "truncate": bool, "keep_alive": seconds | None}. The
vectors travel in the `done` event; the job row keeps a summary, not the vectors.
"""

from __future__ import annotations

from typing import Any

from service.jobs.events import Publisher
from service.jobs.records import Job, JobStatus
from service.models.store import Model
from workers.embedder import Embedder, Embeddings, InputTooLong
from workers.job_context import JobContext


def run(job: Job, ctx: JobContext, events: Publisher) -> None:
    """Embed every input of the job.

    An input too long with truncate off fails the job with status 400 in its error event, so
    the API answers 400 rather than 500.
    """
    model = ctx.store.resolve(job.model)
    key = f"{model.name}@{model.digest}#embed"
    info = {"name": model.name.display(), "digest": model.digest, "kind": "embed"}
    settings = ctx.settings

    def load(spec: Model) -> Embedder:
        return Embedder(str(spec.model_path), n_ctx=settings.num_ctx, n_threads=ctx.threads(),
                        n_gpu_layers=settings.gpu_layers)

    embedder, load_ns = ctx.pool.acquire(key, model, info, loader=load)
    try:
        result = embedder.embed(
            list(job.request.get("input") or []), job.request.get("truncate", True) is not False
        )
    except InputTooLong as exc:
        if ctx.finish(job.id, JobStatus.FAILED, error=str(exc),
                      metrics={"load_duration": load_ns, "total_duration": job.elapsed_ns()}):
            events.emit("error", error=str(exc), status=400)
        return
    finally:
        ctx.pool.release(key, job.request.get("keep_alive"))
    _succeed(job, ctx, events, result, load_ns)


def _succeed(job: Job, ctx: JobContext, events: Publisher, result: Embeddings,
             load_ns: int) -> None:
    """Record the job (a summary, not the vectors), then send the vectors in `done`."""
    metrics = {
        "prompt_eval_count": result.prompt_eval_count,
        "prompt_eval_duration": result.prompt_eval_duration,
        "load_duration": load_ns,
        "total_duration": job.elapsed_ns(),
    }
    dims = len(result.vectors[0]) if result.vectors else 0
    summary = f"{len(result.vectors)} embedding(s) of {dims} dimensions"
    if ctx.finish(job.id, JobStatus.SUCCEEDED, output=summary, done_reason="stop",
                  metrics=metrics):
        vectors: list[Any] = [v.tolist() for v in result.vectors]
        events.emit("done", done_reason="stop", embeddings=vectors, **metrics)
