"""`corral run` driven in a real terminal (a pty): the interactive chat a user types into,
against the API served over HTTP with a real worker and SmolLM2; and the one-shot forms."""

from __future__ import annotations

import dataclasses
import os
import re
import select
import subprocess
import sys
import threading
import time

import pytest
from werkzeug.serving import make_server

from service.models.store import ModelStore
from tests.conftest import running_worker

MODEL = "smollm2:135m"


class Terminal:
    """A process on the slave side of a pty; the test types and reads on the master side."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                                        start_new_session=True)
        os.close(slave)
        self.output = ""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """Wait for `pattern` in what the terminal shows after the last match."""
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.output)):
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in terminal output:\n{self.output}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.output += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the process closed the terminal
                    assert self.process.poll() is not None
        self.output = self.output[match.end():]
        return match

    def close(self) -> int:
        code = self.process.wait(30)
        os.close(self.master)
        return code


@pytest.fixture
def served(settings, tmp_path, model_file):
    """The API on a loopback port with one real worker, over a store this test may write."""
    from service.http.app import create_app

    store = ModelStore(tmp_path / "models")
    store.create(MODEL, store.import_file(model_file))
    settings = dataclasses.replace(settings, models=store.root)
    app = create_app({"TESTING": True}, settings=settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(CORRAL_HOST=f"127.0.0.1:{server.server_port}", TERM="dumb")
    with running_worker(settings):
        yield app, env
    server.shutdown()
    app.extensions["corral"].close()


def chats(app) -> list[dict]:
    """The chat requests the service received, oldest first."""
    jobs = app.extensions["corral"].jobs.recent()
    return [j.request for j in reversed(jobs) if j.kind == "chat" and j.request["messages"]]


def test_interactive_run_chats_over_turns_with_set_parameter_and_bye(served):
    app, env = served
    term = Terminal([sys.executable, "-m", "cli.main", "run", MODEL], env)
    term.expect(">>> ")
    term.type("/set parameter temperature 0\n")
    term.expect(r"Set parameter 'temperature' to '0'")
    term.type("/set parameter num_predict 12\n")
    term.expect(r"Set parameter 'num_predict' to '12'")
    term.type("/set parameter warmth 3\n")
    term.expect(r"Couldn't set parameter: unknown parameter 'warmth'")
    term.type("/set system You answer in one word.\n")
    term.expect(r"Set system message\.")
    term.expect(">>> ")

    term.type("What is the capital of France?\n")
    answer = term.expect(r"(?s)France\?(.*?)>>> ").group(1)
    assert "paris" in answer.lower()
    term.type('"""Now name\n')
    term.expect(r"\.\.\. ")
    term.type('a colour."""\n')
    second = term.expect(r'(?s)colour\."""(.*?)>>> ').group(1)
    assert second.strip()

    first, then = chats(app)
    assert first["options"] == {"temperature": 0.0, "num_predict": 12}
    assert [m["role"] for m in then["messages"]] == ["system", "user", "assistant", "user"]
    assert then["messages"][0]["content"] == "You answer in one word."
    assert then["messages"][2]["content"].strip() == answer.replace("\r\n", "\n").strip()
    assert then["messages"][3]["content"] == "Now name\na colour."

    term.type("/show info\n")
    term.expect(r"architecture\s+llama")
    term.type("/clear\n")
    term.expect("Cleared session context")
    term.type("/save terse\n")
    term.expect("Created new model 'terse'")
    term.type("/load terse\n")
    term.expect("Loading model 'terse'")
    term.type("/bogus\n")
    term.expect(r"Unknown command '/bogus'")
    term.type("/bye\n")
    assert term.close() == 0

    saved = app.test_client().post("/api/show", json={"model": "terse"}).get_json()
    assert saved["system"] == "You answer in one word."
    assert "num_predict" in saved["parameters"] and "messages" not in saved  # cleared first


def test_run_answers_once_from_piped_input(served):
    _, env = served
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "run", MODEL, "--temperature", "0",
         "--num-predict", "8", "--system", "You answer in one word."],
        input="What is the capital of France?", capture_output=True, text=True, env=env,
        timeout=120)
    assert result.returncode == 0, result.stderr
    assert "paris" in result.stdout.lower() and ">>>" not in result.stdout
