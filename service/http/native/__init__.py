"""corral's native face: asynchronous jobs (/jobs), bulk files (/batches), the report."""

from __future__ import annotations

from flask import Blueprint


def blueprint() -> Blueprint:
    """One blueprint holding /jobs, /jobs/report and /batches as nested blueprints."""
    from service.http.native import batches, jobs, report

    face = Blueprint("native", __name__)
    for part in (report, jobs, batches):
        face.register_blueprint(part.bp)
    return face
