"""GET /openapi.json documents every route of the app, and nothing that is not one."""

from __future__ import annotations

import re

from service.http.openapi import OPEN, document
from service.http.openapi.schemas import request_schema
from service.jobs.requests import GenerateRequest

# Flask answers OPTIONS on every route and HEAD on every GET route by itself; a HEAD is
# documented only where it is the route's own (HEAD /api/blobs/<digest>, HEAD /).
AUTOMATIC = {"OPTIONS"}


def routes(app) -> set[tuple[str, str]]:
    """(path in OpenAPI's {param} form, method) of every rule in the app's URL map."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "console.static"):  # files, not operations
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - AUTOMATIC:
            found.add((path, method.lower()))
    return found


def documented() -> set[tuple[str, str]]:
    return {(path, method) for path, ops in document()["paths"].items() for method in ops}


def test_every_route_is_documented(app):
    missing = {r for r in routes(app) - documented()
               if r[1] != "head" or (r[0], "get") not in documented()}
    assert not missing, f"routes without an operation in service/http/openapi: {missing}"


def test_nothing_documented_is_not_a_route(app):
    stale = documented() - routes(app)
    assert not stale, f"operations for routes the app does not have: {stale}"


def test_openapi_json_is_served(client):
    res = client.get("/openapi.json")
    assert res.status_code == 200
    doc = res.get_json()
    assert doc["openapi"].startswith("3.")
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": "an API key, as `Authorization: Bearer <key>`"}
    for path, ops in doc["paths"].items():
        for op in ops.values():
            if path in OPEN:
                assert op["security"] == [{}] and "401" not in op["responses"], path
            else:
                assert op["security"] == [{}, {"bearerAuth": []}], path
                assert "401" in op["responses"], path


def test_the_routes_documented_as_keyless_are_the_open_door_ones(app):
    """OPEN in the document is the set of routes marked @access.open_door, no more, no less."""
    keyless = set()
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if getattr(view, "corral_needs", None) == "nothing":
            keyless.add(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
    assert keyless == set(OPEN)


def test_errors_are_documented_as_json_with_their_4xx_status():
    for path, ops in document()["paths"].items():
        for method, op in ops.items():
            statuses = {int(s) for s in op["responses"]}
            assert 403 in statuses, (method, path)
            expected = "OpenAIError" if path.startswith("/v1/") else "Error"
            for status in statuses - set(range(200, 400)):  # a 3xx is no error
                schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{expected}"}, (method, path)


def test_request_schemas_come_from_the_request_types():
    schema = request_schema(GenerateRequest)
    assert schema["required"] == ["model"]
    assert set(schema["properties"]) == {f for f in GenerateRequest.__dataclass_fields__}
    assert schema["properties"]["stream"]["default"] is True
    assert schema["properties"]["truncate"]["description"].startswith("a prompt too long")
    options = document()["components"]["schemas"]["Options"]["properties"]
    assert options["num_ctx"] == {"anyOf": [{"type": "integer", "minimum": 4,
                                             "maximum": 2**31 - 1}, {"type": "null"}]}
