"""Supervision: while Redis is away, the API answers 503 with Retry-After, not 500."""

from __future__ import annotations

import dataclasses
import time

from service.core.redis_server import free_port
from tests.test_serve import MODEL


# The API's answer while Redis is unreachable --------------------------------------------
def test_an_unreachable_redis_is_a_503_with_retry_after_in_both_shapes(settings):
    from service.http.app import create_app

    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app({"TESTING": True}, settings=dataclasses.replace(settings, redis_url=nowhere))
    try:
        client = app.test_client()
        plain = client.post("/api/generate", json={"model": MODEL, "prompt": "Hi"})
        assert plain.status_code == 503 and plain.headers["Retry-After"] == "2"
        assert "Redis" in plain.get_json()["error"]
        openai = client.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
        assert openai.status_code == 503 and openai.headers["Retry-After"] == "2"
        assert openai.get_json()["error"]["type"] == "server_error"
    finally:
        app.extensions["corral"].close()


def test_celery_failing_to_send_a_task_is_a_503_too(settings):
    """Celery's send_task raises kombu's OperationalError, not redis-py's, once it gives up."""
    from service.http.app import create_app
    from service.http.services import services

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app({"TESTING": True}, settings=dataclasses.replace(settings, redis_url=nowhere))
    app.add_url_rule("/send", "send", methods=["POST"], view_func=lambda: str(
        services().queue.celery.send_task("corral.generate", args=["x"], queue="cpu")))
    try:
        started = time.monotonic()
        answer = app.test_client().post("/send")
        print(f"\nsend_task to a dead broker failed after {time.monotonic() - started:.1f} s")
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "2"
        assert "Redis" in answer.get_json()["error"]
    finally:
        app.extensions["corral"].close()
