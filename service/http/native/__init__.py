"""corral's native face: asynchronous jobs (/jobs), bulk files (/batches), the report, API
keys (/keys) and Prometheus metrics (/metrics)."""

from __future__ import annotations

from flask import Blueprint


def blueprint() -> Blueprint:
    """One blueprint holding /jobs, /jobs/report, /batches, /keys and /metrics as nested
    blueprints."""
    from service.http.native import batches, jobs, keys, metrics, report

    face = Blueprint("native", __name__)
    for part in (report, jobs, batches, keys, metrics):
        face.register_blueprint(part.bp)
    return face
