"""Cross-origin requests: local origins and CORRAL_ORIGINS get CORS headers, others do not."""

import dataclasses

import pytest

from service.http.app import create_app


@pytest.fixture
def cors_client(settings):
    app = create_app({"TESTING": True},
                     settings=dataclasses.replace(settings, origins=("https://ui.example",)))
    yield app.test_client()
    app.extensions["corral"].close()


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:8080",
                                    "https://ui.example"])
def test_allowed_origins_get_headers_and_preflight(cors_client, origin):
    res = cors_client.get("/api/version", headers={"Origin": origin})
    assert res.headers["Access-Control-Allow-Origin"] == origin
    pre = cors_client.options("/api/chat", headers={"Origin": origin,
                                                    "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and pre.headers["Access-Control-Allow-Origin"] == origin


def test_other_origins_get_no_cors_headers(cors_client):
    res = cors_client.get("/api/version", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in res.headers
