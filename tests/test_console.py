"""The console's page and files, through the app: who gets the page at `/`, what the page is
allowed to run, and that its files need no key while every API it reads still does."""

from __future__ import annotations

from pathlib import Path

import service.http.console.pages as pages

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_browser_at_the_root_is_sent_to_the_console(client):
    res = client.get("/", headers={"Accept": BROWSER})
    assert res.status_code == 302 and res.headers["Location"].endswith("/ui/")


def test_other_clients_at_the_root_still_see_that_corral_runs(client):
    for accept in (None, "*/*", "application/json", "text/plain, text/html"):
        res = client.get("/", headers={"Accept": accept} if accept else {})
        assert res.status_code == 200, accept
        assert res.get_data(as_text=True) == "corral is running", accept
    assert client.head("/").status_code == 200


def test_the_page_may_run_only_its_own_script(client):
    for path in ("/ui/", "/ui/jobs/abc"):  # the shell answers every route inside the console
        res = client.get(path)
        assert res.status_code == 200 and res.mimetype == "text/html"
        policy = res.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "default-src 'none'" in policy
        assert b"/ui/static/console.js" in res.data


def test_the_files_are_served_from_the_package(client):
    for name, mimetype in (("console.js", "text/javascript"), ("console.css", "text/css")):
        res = client.get(f"/ui/static/{name}")
        assert res.status_code == 200 and res.mimetype == mimetype
        assert res.data == (Path(pages.STATIC) / name).read_bytes()
    assert client.get("/ui/static/nothing.js").status_code == 404


def test_with_keys_on_the_page_is_open_and_the_apis_are_not(make_app):
    client = make_app(auth="required").test_client()
    assert client.get("/ui/").status_code == 200
    assert client.get("/ui/static/console.js").status_code == 200
    res = client.get("/jobs")
    assert res.status_code == 401 and "API key" in res.get_json()["error"]


def test_the_script_never_writes_html():
    script = (Path(pages.STATIC) / "console.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
