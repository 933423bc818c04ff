"""The console in a real browser: Debian's headless Chromium driven by Playwright, against the
app over real HTTP with a real worker and model.

No browser can be downloaded here, so Playwright is pointed at the system's chromium. Without
one the tests skip, saying why, except where CORRAL_REQUIRE_BROWSER=1 (CI) makes that a
failure. Each test saves screenshots at desktop and phone widths under out/screenshots/.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_worker, serving
from tests.test_api_jobs import MODEL, submit, wait_finished
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "out" / "screenshots"
CHROMIUM = os.environ.get("CORRAL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
HOSTILE = '<img src=x onerror="window.__ran=1"><script>window.__ran=2</script> Say hi.'


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CORRAL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install -y chromium to run these")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=SIZES["desktop"])
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def shoot(page, name: str) -> None:
    """Screenshots of what the page shows now, at both widths."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size, viewport in SIZES.items():
        page.set_viewport_size(viewport)
        page.screenshot(path=str(SHOTS / f"{name}-{size}.png"), full_page=True)
    page.set_viewport_size(SIZES["desktop"])


def test_a_hostile_prompt_is_shown_as_text(app, client, worker, page):
    job_id = submit(client, prompt=HOSTILE)
    wait_finished(client, job_id)
    with serving(app) as url:
        page.goto(f"{url}/")  # a browser at the root lands in the console
        assert page.url == f"{url}/ui/"
        page.goto(f"{url}/ui/#/jobs/{job_id}")
        page.get_by_text("succeeded ·").wait_for()
        assert page.locator("#job-prompt").inner_text() == HOSTILE
        assert page.locator("main img, main script").count() == 0
        shoot(page, "job")
        page.goto(f"{url}/ui/#/history")
        page.locator(f'a[href="#/jobs/{job_id}"]').wait_for()
        shoot(page, "history")
        assert page.evaluate("window.__ran") is None and page.dialogs == []


def test_an_answer_streams_in_survives_a_reload_and_is_cancelled(app, client, worker, page):
    # A count the model carries on to the token limit (greedy, raw): a sampled essay ended
    # after 380-630 tokens, sometimes before the page had seen its count grow.
    job_id = submit(client, prompt="1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,", raw=True,
                    options={"num_predict": 2000, "temperature": 0})
    with serving(app) as url:
        page.goto(f"{url}/ui/")
        page.locator(f'a[href="#/jobs/{job_id}"]').wait_for()  # the queue lists it live
        # Its tokens so far, in the queue's Tokens column, grow while it runs.
        row = page.locator("tr", has=page.locator(f'a[href="#/jobs/{job_id}"]'))
        tokens_cell = row.locator("td").nth(7)
        first = int(wait_until(tokens_cell.inner_text, 60, ready=str.isdigit,
                               message="the queue counting the job's tokens"))
        wait_until(tokens_cell.inner_text, 60, ready=lambda t: t.isdigit() and int(t) > first,
                   message="the queue's count growing")
        shoot(page, "queue")
        page.locator(f'a[href="#/jobs/{job_id}"]').click()
        output = page.locator("#job-output")
        # (Polled from here: the page's policy forbids the eval that wait_for_function uses.)
        before = wait_until(output.text_content, 60, ready=lambda text: len(text) > 20,
                            message="the answer streaming into the page")
        counted = page.locator("#job-tokens")
        so_far = wait_until(counted.inner_text, 30, ready=lambda t: t.endswith("tokens so far"),
                            message="the job page counting tokens")
        wait_until(counted.inner_text, 30,
                   ready=lambda t: t.endswith("so far") and int(t.split()[0]) > int(
                       so_far.split()[0]), message="the job page's count growing live")
        page.reload()
        # The reloaded page replays the answer from its start and goes on from there.
        after = wait_until(output.text_content, 60, ready=lambda text: len(text) > len(before),
                           message="the answer going on after the reload")
        assert after.startswith(before)
        shoot(page, "streaming")
        page.get_by_role("button", name="Cancel").click()
        page.get_by_text("cancelled ·").wait_for()
        job = client.get(f"/jobs/{job_id}").get_json()
        wait_until(counted.inner_text, 30, ready=lambda t: t == f"{job['eval_count']} tokens",
                   message="the job page showing the final count")
    assert job["status"] == "cancelled" and 0 < job["eval_count"] < 2000
    assert page.get_by_role("button", name="Cancel").is_disabled()


def test_a_batch_uploaded_from_the_page_runs_to_its_end_and_downloads(app, client, worker, page):
    lines = "".join(json.dumps({"custom_id": f"line-{n}", "prompt": f"Count to {n + 2}.",
                                "options": {"num_predict": 6, "temperature": 0}}) + "\n"
                    for n in range(3)) + "{not json\n"
    with serving(app) as url:
        page.goto(f"{url}/ui/#/batches")
        files = page.locator("#batch-file")
        files.set_input_files({"name": "empty.jsonl", "mimeType": "application/x-ndjson",
                               "buffer": b""})
        page.locator("#batch-model").fill(MODEL)
        page.get_by_role("button", name="Start batch").click()
        notice = page.locator("#notice")
        notice.wait_for()
        assert "not started" in notice.inner_text() and "empty" in notice.inner_text()
        shoot(page, "batch-refused")
        files.set_input_files({"name": "three.jsonl", "mimeType": "application/x-ndjson",
                               "buffer": lines.encode()})
        page.get_by_role("button", name="Start batch").click()
        page.wait_for_url("**/ui/#/batches/*")
        page.get_by_text("completed ·").wait_for(timeout=120_000)
        assert page.locator("#batch-counts").inner_text().startswith("3 done · 1 failed")
        page.locator("#batch-failures li").wait_for()  # the malformed line, and why
        assert "line 4" in page.locator("#batch-failures").inner_text()
        shoot(page, "batch")
        with page.expect_download() as downloading:
            page.get_by_role("button", name="Download results").click()
        rows = [json.loads(line) for line in
                Path(downloading.value.path()).read_text().splitlines()]
    assert [row["custom_id"] for row in rows] == ["line-0", "line-1", "line-2", None]
    assert [row["status"] for row in rows] == ["succeeded"] * 3 + ["failed"]


def test_a_pull_from_the_page_fills_its_progress_bar(settings, tmp_path, loopback, model_file,
                                                     page):
    from service.http.app import create_app

    fleet_settings = dataclasses.replace(  # an empty store, pulling from the loopback registry
        settings, models=tmp_path / "models", registry_mirrors=(("registry.ollama.ai",
                                                                  loopback.url),))
    loopback.add_model("library/smollm2", "135m", model_file)
    app = create_app({"TESTING": True}, settings=fleet_settings)
    try:
        with running_worker(fleet_settings) as worker, serving(app) as url:
            page.goto(f"{url}/ui/#/models")
            page.locator("#workers td", has_text=worker.node or worker.worker_id).wait_for()
            page.locator("#pull-name").fill("nothing:here")
            page.locator("#pull-insecure").check()
            page.get_by_role("button", name="Pull").click()
            page.locator("#notice").wait_for()
            assert "Could not pull nothing:here" in page.locator("#notice").inner_text()
            page.locator("#pull-name").fill(MODEL)
            page.get_by_role("button", name="Pull").click()
            page.get_by_text(f"{MODEL}: pulled").wait_for(timeout=120_000)
            bar = page.locator("#pull-progress")
            assert int(bar.get_attribute("max")) >= model_file.stat().st_size
            assert bar.evaluate("node => node.value === node.max")
            page.locator("#store td", has_text=MODEL).wait_for()  # the store lists it now
            shoot(page, "models")
    finally:
        app.extensions["corral"].close()


def test_the_throughput_chart_is_drawn_from_the_history(app, client, worker, page):
    ids = [submit(client, prompt=f"Name a colour number {n}.") for n in range(3)]
    jobs = [wait_finished(client, job_id) for job_id in ids]
    tokens = sum(job["eval_count"] for job in jobs)
    with serving(app) as url:
        page.goto(f"{url}/ui/#/throughput")
        page.locator("#throughput-chart circle").first.wait_for()
        rows = page.locator("#report tbody tr", has_text=MODEL)
        rows.first.wait_for()
        cells = [row.locator("td").all_inner_texts() for row in rows.all()]
        # The table is the report's: every token of these jobs, by concurrency level.
        assert {c[0] for c in cells} == {MODEL} and sum(int(c[3]) for c in cells) == tokens
        legend = page.locator("#throughput-chart figcaption").inner_text()
        assert MODEL in legend and "tokens/s" in legend
        # Queue wait, from the same jobs: a chart of its own and a column of the table.
        page.locator("#wait-chart circle").first.wait_for()
        assert "queue wait" in page.locator("#wait-chart figcaption").inner_text()
        assert all(c[10].endswith(" ms") for c in cells)
        shoot(page, "throughput")


def test_a_playground_answer_streams_goes_on_after_a_reload_and_stops(app, client, worker,
                                                                      page):
    with serving(app) as url:
        page.goto(f"{url}/ui/#/playground")
        page.locator("#play-model option", has_text=MODEL).wait_for(state="attached")
        page.locator("#play-system").fill("You are a poet.")
        page.locator("#play-predict").fill("2000")
        page.locator("#play-prompt").fill("Write a long poem about the sea.")
        page.get_by_role("button", name="Send").click()
        page.wait_for_url("**/ui/#/playground?jobs=*")
        [job_id] = page.url.split("jobs=")[1].split(",")
        answer = page.locator(".play-output")
        before = wait_until(answer.text_content, 60, ready=lambda text: len(text) > 10,
                            message="the answer streaming into the playground")
        page.reload()  # the same answer, replayed and going on
        wait_until(answer.text_content, 60, ready=lambda text: len(text) > len(before),
                   message="the answer going on after the reload")
        assert page.locator(".play-tokens").inner_text().endswith("tokens so far")
        shoot(page, "playground")
        page.get_by_role("button", name="Stop").click()
        page.get_by_text(f"{MODEL} · cancelled").wait_for()
    job = client.get(f"/jobs/{job_id}").get_json()
    assert (job["kind"], job["status"]) == ("chat", "cancelled")  # an ordinary job, stopped
    assert job["request"]["messages"][0] == {"role": "system", "content": "You are a poet."}
    assert 0 < job["eval_count"] < 2000


def test_with_keys_on_the_page_asks_for_one_and_offers_a_user_key_only_what_it_may_do(
        make_app, browser):
    from service.access.keys import Role

    app = make_app(auth="required")
    user = app.extensions["corral"].keys.create("ann", Role.USER)[1]
    admin = app.extensions["corral"].keys.create("root", Role.ADMIN)[1]
    throughput = 'nav a[href="#/throughput"]'
    with serving(app) as url:
        page = browser.new_context(viewport=SIZES["desktop"]).new_page()
        page.goto(f"{url}/ui/")
        page.locator("#key-input").wait_for()  # GET /keys/me answered 401
        assert page.locator(throughput).is_hidden()  # nothing admin-only before the role
        shoot(page, "key")
        page.locator("#key-input").fill(user)
        page.get_by_role("button", name="Use key").click()
        page.get_by_text("No jobs here.").wait_for()
        assert page.locator("#key-form").is_hidden()
        assert page.locator("#who").inner_text() == "key ann · user"
        assert "other keys' jobs are for an admin key" in page.locator("#jobs-whose").inner_text()
        assert page.locator(throughput).is_hidden()
        shoot(page, "user-jobs")
        page.goto(f"{url}/ui/#/models")
        page.locator("#store td", has_text=MODEL).wait_for()  # a user may use every model
        assert page.locator("#pull-form").is_hidden()
        assert page.locator("#store button").count() > 0  # drawn, and not offered:
        assert all(b.is_hidden() for b in page.locator("#store button").all())
        shoot(page, "user-models")
        page.goto(f"{url}/ui/#/throughput")  # typed in: the report is for admins
        assert "needs an admin key" in page.locator("#report-admin").inner_text()
        assert page.locator("#report").count() == 0  # and it was not asked for
        page.context.close()

        page = browser.new_context(viewport=SIZES["desktop"]).new_page()
        page.goto(f"{url}/ui/#/models")
        page.locator("#key-input").fill(admin)
        page.get_by_role("button", name="Use key").click()
        page.locator("#store td", has_text=MODEL).wait_for()
        assert page.locator("#who").inner_text() == "key root · admin"
        assert page.locator("#pull-form").is_visible()
        assert page.locator(throughput).is_visible()
        copy = page.locator("#store button", has_text="Copy")
        delete = page.locator("#store button", has_text="Delete")
        assert copy.first.is_visible() and delete.first.is_visible()
        shoot(page, "admin-models")
        page.context.close()
