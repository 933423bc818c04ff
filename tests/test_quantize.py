"""`create --quantize`: full-precision weights written at a smaller type by a real worker with
llama.cpp, then the model answers; through the official ollama client, the CLI's flag, and
the 400s for what cannot be quantized.

No package ships a small F16 GGUF, so the fixture makes one: SmolLM2's Q4_1 weights written
out at F16 by llama.cpp itself (the one place a requantize is allowed, here, as a test's
helper)."""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import pytest

from service.models import gguf
from service.models.store import ModelStore
from tests.conftest import serving

PLAIN = "smollm2:135m"


@pytest.fixture(scope="module")
def f16_file(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    import llama_cpp

    out = tmp_path_factory.mktemp("f16") / "smollm2-f16.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize = 1, True  # LLAMA_FTYPE_MOSTLY_F16
    assert llama_cpp.llama_model_quantize(os.fsencode(model_file), os.fsencode(out),
                                          ctypes.byref(params)) == 0
    assert gguf.quantization_level(gguf.read_metadata(out)) == "F16"
    return out


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    """This module's own store: quantizing writes to it."""
    store = ModelStore(tmp_path_factory.mktemp("models"))
    store.create(PLAIN, store.import_file(model_file))
    return store.root


def test_the_ollama_client_quantizes_f16_weights_into_a_model_that_answers(
        app, local, worker, f16_file):
    lines = list(local.create(model="smol:q4km", from_=str(f16_file), quantize="q4_K_M",
                              system="Answer briefly.", stream=True))
    statuses = [line.status for line in lines]
    assert statuses[0] == "quantizing F16 model to Q4_K_M", statuses
    assert statuses[-2:] == ["writing manifest", "success"]
    shown = local.show("smol:q4km")
    assert shown.details.quantization_level == "Q4_K_M" and "Answer briefly." in shown.modelfile
    store = app.extensions["corral"].store
    size = store.resolve("smol:q4km").model_path.stat().st_size
    print(f"\nF16 {f16_file.stat().st_size / 1e6:.0f} MB -> Q4_K_M {size / 1e6:.0f} MB")
    assert size < f16_file.stat().st_size / 2
    answer = local.generate(model="smol:q4km", prompt="Say hi.",
                            options={"num_predict": 8, "temperature": 0})
    assert answer.response.strip() and answer.eval_count > 0
    [job] = [j for j in app.extensions["corral"].jobs.recent() if j.kind == "quantize"]
    assert job.status == "succeeded" and job.output == "smol:q4km"


def test_unstreamed_create_answers_success_once_the_model_exists(client, worker, f16_file):
    res = client.post("/api/create", json={"model": "smol:q8", "from": str(f16_file),
                                           "quantize": "Q8_0", "stream": False})
    assert res.status_code == 200 and json.loads(res.get_data()) == {"status": "success"}
    show = client.post("/api/show", json={"model": "smol:q8"}).get_json()
    assert show["details"]["quantization_level"] == "Q8_0"


def test_the_cli_passes_quantize(app, worker, f16_file, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    (tmp_path / "Modelfile").write_text(f"FROM {f16_file}\n")
    with serving(app) as url:
        result = CliRunner().invoke(cli, ["create", "smol:q5", "-f",
                                          str(tmp_path / "Modelfile"), "--quantize", "q5_0"],
                                    env={"CORRAL_HOST": url.removeprefix("http://")})
    assert result.exit_code == 0, result.output
    assert "quantizing F16 model to Q5_0" in result.output


@pytest.mark.parametrize(("body", "words"), [
    ({"from": PLAIN, "quantize": "q4_K_M"}, "the weights are Q4_1"),
    ({"quantize": "q9_X"}, "unsupported quantization type 'q9_X'"),
    ({"quantize": "f16"}, "the weights are F16 already"),
])
def test_what_cannot_be_quantized_is_a_400_before_any_job(app, client, f16_file, body, words):
    res = client.post("/api/create", json={"model": "nope", "from": str(f16_file), **body})
    assert res.status_code == 400
    error = res.get_json()["error"]
    assert "invalid field 'quantize'" in error and words in error, error
    assert app.extensions["corral"].jobs.recent() == []
