"""GET /jobs/report: throughput by model and concurrency level, from the job history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Blueprint, jsonify, request

from service.core.errors import InvalidRequest
from service.core.settings import FOREVER, parse_span
from service.history import report
from service.http import access
from service.http.inputs import query_int
from service.http.services import services

bp = Blueprint("report", __name__)


def _since() -> datetime | None:
    """?since= as an ISO 8601 time, or a span ("1h", "30m", "7d", "90") meaning that long ago."""
    value = request.args.get("since", "").strip()
    if not value:
        return None
    try:
        since = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return since if since.tzinfo else since.replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        seconds = parse_span(value)
    except ValueError:
        seconds = FOREVER
    try:
        if seconds != FOREVER:
            return datetime.now(UTC) - timedelta(seconds=seconds)
    except OverflowError:  # further back than a datetime reaches
        pass
    raise InvalidRequest("invalid parameter 'since': expected an ISO 8601 time or a "
                         "duration such as 1h")


@bp.get("/jobs/report")
@access.admin_only
def job_report():
    """Rows per (model, concurrency), and tokens/s over time:
    ?since=<time or span>&model=<name>&bucket=<seconds per point of the series>."""
    since = _since()
    bucket = query_int("bucket", _bucket(since), 1, 86_400)
    history = report.load(services().jobs, services().rollups, since,
                          request.args.get("model") or None)
    return jsonify({"rows": [row.to_dict() for row in report.report_of(history)],
                    "concurrency": "mean number of the model's jobs running during each job",
                    "series": [point.to_dict() for point in report.series_of(history, bucket)],
                    "bucket_s": bucket})


def _bucket(since: datetime | None) -> int:
    """The series' default step: a minute over the last two hours, a quarter hour over two
    days, an hour beyond (and over all time), so a chart gets at most a few hundred points
    per model."""
    span = (datetime.now(UTC) - since).total_seconds() if since else float("inf")
    return 60 if span <= 7200 else 900 if span <= 2 * 86400 else 3600
