"""corral's native face: asynchronous jobs (/jobs), bulk files (/batches), the report, and
API keys (/keys)."""

from __future__ import annotations

from flask import Blueprint


def blueprint() -> Blueprint:
    """One blueprint holding /jobs, /jobs/report, /batches and /keys as nested blueprints."""
    from service.http.native import batches, jobs, keys, report

    face = Blueprint("native", __name__)
    for part in (report, jobs, batches, keys):
        face.register_blueprint(part.bp)
    return face
