"""schemathesis against the real app, over every operation of GET /openapi.json: no answer
is a 5xx, and every answer matches the document (its status is one the operation lists, its
JSON the schema given for that status).

Everything is real: the app, a redis-server, a migrated SQLite database, and a Celery worker
running SmolLM2, so generated requests go as far as they can. What each operation meets:

- Inference (/api/generate, /api/chat, /api/embed, /api/embeddings, /v1/chat/completions,
  /v1/completions, /v1/embeddings, POST /jobs): a generated `model` is almost never a model
  in the store, so a body whose `model` is a string is given the real one (except a pull
  job's). Everything else in it is as generated (options, format, keep_alive, stop,
  messages, stream ...) and runs on the worker; only the length is bounded so the run stays
  short: num_predict (when absent or within -2..N) and max_tokens are capped at a few tokens,
  and the context at CORRAL_NUM_CTX=256. Out-of-range values are left as generated.
- Pulls go to a loopback registry (and Hugging Face endpoint) that has nothing: a pull ends
  in an error line, as it would offline.
- The model store is this module's own copy, so /api/delete and /api/create touch nothing
  another test reads. Ids of jobs, batches and files are generated, so those operations
  mostly meet their 404s.

schemathesis runs its coverage and fuzzing phases (the document gives no examples) with
positive and negative data; hypothesis is derandomized (the same cases every run) and capped
at 12 fuzzed examples per operation. About a minute on two cores.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from service.core.db import upgrade
from service.core.settings import Settings
from service.http.openapi import document
from service.models.store import ModelStore
from tests.conftest import running_worker
from tests.registry_server import Loopback

MODEL = "smollm2:135m"
MAX_TOKENS = 4
INFERENCE = {"/api/generate", "/api/chat", "/api/embed", "/api/embeddings",
             "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
             "/jobs"}


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory, redis_server, model_file: Path
               ) -> Iterator[Any]:
    """The app with a worker, on a home, store and Redis of this module's own."""
    from service.http.app import create_app

    home = tmp_path_factory.mktemp("fuzz-home")
    store = ModelStore(home / "models")
    store.create(MODEL, store.import_file(model_file))
    database = f"sqlite:///{home / 'corral.db'}"
    upgrade(database)
    registry = Loopback().start()
    flush = redis.Redis.from_url(redis_server.url)
    flush.flushall()
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith("CORRAL_") and not name.startswith("CORRAL_TEST_"):
                env.delenv(name)
        env.setenv("CORRAL_HOME", str(home))
        config = dataclasses.replace(
            Settings.from_env(), redis_url=redis_server.url, database_url=database,
            models=home / "models", load_timeout=60.0, num_ctx=256,
            registry_mirrors=(("registry.ollama.ai", registry.url),),
            hf_endpoint=registry.url)
        app = create_app({"TESTING": True}, settings=config)
        try:
            with running_worker(config):
                yield app
        finally:
            app.extensions["corral"].close()
            registry.stop()
            flush.flushall()
            flush.close()


# The document is built from the code alone (the app serves this same dict), so it can be
# read here, before the module's app exists; each call goes to that app (`app=` below).
schema = schemathesis.openapi.from_dict(document())
# POST /batches takes a JSONL file as its body: sent as the text it is.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


def _short_response(body: dict[str, Any]) -> None:
    """/v1/responses refuses fields it does not know (`options`, `max_tokens`): its cap is
    max_output_tokens."""
    if isinstance(body.get("model"), str):
        body["model"] = MODEL
    value = body.get("max_output_tokens")
    if value is None or isinstance(value, int) and not isinstance(value, bool) and value > 0:
        body["max_output_tokens"] = min(value or MAX_TOKENS, MAX_TOKENS)


def _short(body: dict[str, Any]) -> None:
    """Give an inference body the real model and a few tokens to generate."""
    if isinstance(body.get("model"), str) and body.get("kind") != "pull":
        body["model"] = MODEL
    options = body.get("options")
    if options is None:
        options = body["options"] = {}
    if isinstance(options, dict):
        value = options.get("num_predict")
        if value is None or isinstance(value, int) and not isinstance(value, bool) and value >= -2:
            options["num_predict"] = min(value, MAX_TOKENS) if value and value > 0 else MAX_TOKENS
    for name in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(name), int) and body[name] > MAX_TOKENS:
            body[name] = MAX_TOKENS
    if not any(isinstance(body.get(n), int) for n in ("max_tokens", "max_completion_tokens")):
        body["max_tokens"] = MAX_TOKENS


@schema.parametrize()
@settings(max_examples=12, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_5xx_and_every_answer_as_documented(case, fuzzed_app):
    if case.path == "/v1/responses" and isinstance(case.body, dict):
        _short_response(case.body)
    elif case.path in INFERENCE and isinstance(case.body, dict):
        _short(case.body)
    case.call_and_validate(app=fuzzed_app, checks=[not_a_server_error, status_code_conformance,
                                   response_schema_conformance])
