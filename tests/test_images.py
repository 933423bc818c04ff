"""Images for a model without a projector are refused with a 400 naming the model, never
dropped and answered blind; models with one answer them (tests/test_vision.py).

Against the real app (real Redis, SQLite); nothing reaches a worker, because the refusal
comes before the job is queued. A batch line with images is refused by the worker's check.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import openai
import pytest

from service.core.errors import InvalidRequest
from service.jobs.images import check_images, count_images, from_image_url, read_images
from service.models.store import MEDIA, ModelStore
from tests.test_gguf import STRING, write_gguf

MODEL = "smollm2:135m"
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
NO_VISION = '"smollm2:135m" does not support images'


def jobs(app) -> list:
    return app.extensions["corral"].jobs.recent()


def test_ollama_generate_with_images_is_a_400_naming_the_model(app, client):
    answer = client.post("/api/generate", json={"model": MODEL, "prompt": "What is this?",
                                                "images": [PIXEL]})
    assert answer.status_code == 400
    assert NO_VISION in answer.get_json()["error"]
    assert jobs(app) == []


def test_ollama_chat_with_an_image_in_a_message_is_a_400(app, client):
    messages = [{"role": "user", "content": "What is this?", "images": [PIXEL]}]
    answer = client.post("/api/chat", json={"model": MODEL, "messages": messages})
    assert answer.status_code == 400 and NO_VISION in answer.get_json()["error"]
    queued = client.post("/jobs", json={"kind": "chat", "model": MODEL, "messages": messages})
    assert queued.status_code == 400 and NO_VISION in queued.get_json()["error"]
    assert jobs(app) == []


@pytest.mark.parametrize(("images", "field"), [("abc", "images"), ([7], "images[0]"),
                                               (["not base64!"], "images[0]")])
def test_malformed_images_are_400s_naming_the_field(client, images, field):
    answer = client.post("/api/generate", json={"model": MODEL, "prompt": "x", "images": images})
    assert answer.status_code == 400
    assert f"'{field}'" in answer.get_json()["error"]


def test_empty_images_are_no_images(app, client):
    answer = client.post("/jobs", json={"model": MODEL, "prompt": "hi", "images": []})
    assert answer.status_code == 202


def test_openai_image_parts_are_refused_in_openais_shape(app, api):
    part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, part]}])
    assert NO_VISION in caught.value.message
    remote = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [remote]}])
    assert caught.value.param == "messages[0].content[0]"
    assert "fetches no URLs" in caught.value.message
    assert jobs(app) == []


def test_a_model_with_a_projector_passes_the_check(tmp_path: Path, model_file: Path):
    store = ModelStore(tmp_path / "models")
    weights = store.import_file(model_file)
    model, plain = store.create("seeing", weights), store.create("plain", weights)
    mmproj = write_gguf(tmp_path / "mmproj.gguf", [("general.architecture", STRING, "clip")], [])
    manifest = json.loads(model.name.manifest_path(store.root).read_bytes())
    manifest["layers"].append(store.import_file(mmproj, MEDIA["projector"]).to_json())
    store.write_manifest_bytes(model.name, json.dumps(manifest).encode())
    check_images(1, store.resolve("seeing"), "seeing")  # answered (tests/test_vision.py)
    with pytest.raises(InvalidRequest, match='"plain:latest" does not support images'):
        check_images(1, plain)
    check_images(0, plain)  # no images: nothing to refuse


def test_the_readers_count_images_on_requests_and_messages():
    assert read_images(None, "images") == []
    assert from_image_url({"image_url": {"url": f"data:image/png;base64,{PIXEL}"}}, "p") == PIXEL
    job = {"images": [PIXEL], "messages": [{"images": [PIXEL, PIXEL]}, {"content": "x"}]}
    assert count_images(job) == 3 and count_images({}) == 0
