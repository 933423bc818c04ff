"""The schema exists only through Alembic: upgrade an empty database, downgrade, upgrade again."""

import pytest
from sqlalchemy import create_engine, inspect, text

from service.core.db import downgrade, upgrade

COLUMNS = {
    "id", "kind", "model", "status", "queue", "priority", "batch_id", "request", "output", "error",
    "done_reason", "created_at", "started_at", "finished_at", "prompt_eval_count",
    "prompt_eval_duration", "eval_count", "eval_duration", "load_duration", "total_duration",
    "first_token_at", "worker_host", "worker_node", "device", "idempotency_key",
    "attempts", "lease_owner", "lease_expires_at", "lost_by", "owner", "reply",
}


def _columns(url):
    engine = create_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("jobs")}
    finally:
        engine.dispose()


def _tables(url):
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def check_round_trip(url):
    upgrade(url)
    assert _columns(url) == COLUMNS
    assert {"batches", "batch_lines", "files", "api_keys"} <= _tables(url)
    downgrade(url, "0004")
    assert "owner" not in _columns(url) and "api_keys" not in _tables(url)
    downgrade(url, "0003")
    assert "lease_owner" not in _columns(url) and "idempotency_key" in _columns(url)
    downgrade(url, "0001")
    assert "idempotency_key" not in _columns(url) and "batches" not in _tables(url)
    downgrade(url, "base")
    assert "jobs" not in _tables(url)
    upgrade(url)
    assert _columns(url) == COLUMNS


def test_migrate_blank_sqlite(tmp_path):
    check_round_trip(f"sqlite:///{tmp_path / 'blank.db'}")


def test_sqlite_uses_wal(tmp_path):
    from service.core.db import make_engine

    url = f"sqlite:///{tmp_path / 'wal.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


@pytest.mark.postgres
def test_migrate_blank_postgres(postgres_url):
    check_round_trip(postgres_url)
