"""GET /metrics: corral in Prometheus' text format, for a scrape (an admin key when keys are on)."""

from __future__ import annotations

from flask import Blueprint, Response

from service.http import access
from service.http.services import services
from service.jobs.prometheus import CONTENT_TYPE, CorralCollector, exposition
from service.jobs.queue import queue_names

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@access.admin_only
def metrics() -> Response:
    """Every figure read now from Redis and the database, so any API process answers alike."""
    ctx = services()
    collector = CorralCollector(ctx.jobs.meter, ctx.jobs, ctx.queue,
                                queue_names(ctx.settings.queues))
    return Response(exposition(collector), content_type=CONTENT_TYPE)
