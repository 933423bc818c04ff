"""Alembic migrations of corral's job history; run through `service.core.db.upgrade`."""
