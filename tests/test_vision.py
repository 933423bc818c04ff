"""Images answered through a vision projector, end to end with the real worker and SmolLM2.

No small real vision model ships in a package, so the projector is synthetic (tests/mmproj.py):
a LLaVA-style CLIP encoder with random weights whose rows are SmolLM2's 576 wide. Its answers
are noise; the tests show the plumbing: the image reaches the model (two images give two
different answers at temperature 0, the same image the same), its rows are counted in
prompt_eval_count, and a model without a projector still refuses images (tests/test_images.py).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import openai
import pytest

from service.models.store import MEDIA, ModelStore
from tests.mmproj import N_PATCHES, write_mmproj
from tests.test_engine import GREEDY, assert_logits_close
from workers.engine import Engine

pytest.importorskip("gguf")  # the projector is written with it (a test dependency)
PIL = pytest.importorskip("PIL.Image")

SEEING = "smollm2-seeing:135m"
OPTIONS = {"num_predict": 8, "temperature": 0, "seed": 1}


def png(color: tuple[int, int, int], size: int = 32) -> str:
    """A one-colour PNG with a pattern in one corner, base64-encoded."""
    image = PIL.new("RGB", (size, size), color)
    image.paste((255 - color[0], 255 - color[1], 255 - color[2]), (0, 0, size // 2, size // 2))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


RED, BLUE = png((220, 20, 20)), png((20, 20, 220))


def add_projector(store: ModelStore, name: str, mmproj: Path) -> None:
    """Append an Ollama projector layer to a model's manifest, as `ollama pull` gets it."""
    manifest = json.loads(store.existing_name(name).manifest_path(store.root).read_bytes())
    manifest["layers"].append(store.import_file(mmproj, MEDIA["projector"]).to_json())
    store.write_manifest_bytes(store.existing_name(name), json.dumps(manifest).encode())


@pytest.fixture(scope="module")
def mmproj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mmproj(tmp_path_factory.mktemp("mmproj") / "mmproj.gguf", 576)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, model_file: Path, mmproj: Path) -> Path:
    store = ModelStore(tmp_path_factory.mktemp("models"))
    weights = store.import_file(model_file)
    store.create("smollm2:135m", weights)
    store.create(SEEING, weights)
    add_projector(store, SEEING, mmproj)
    return store.root


# ---- the engine, directly ----------------------------------------------------------------

@pytest.fixture(scope="module")
def seeing_engine(model_file: Path, mmproj: Path):
    """Two slots with the prefix cache on, and the projector."""
    with Engine(str(model_file), n_parallel=2, n_ctx_per_seq=256,
                mmproj_path=str(mmproj)) as engine:
        yield engine


def image_prompt(engine: Engine, image: str, question: str = "What is this?"):
    text = (f"<|im_start|>user\n{engine.vision.marker}\n{question}<|im_end|>\n"
            "<|im_start|>assistant\n")
    return engine.vision.tokenize(text, [base64.b64decode(image)])


def first(engine: Engine, tokens, images=None) -> np.ndarray:
    stream = engine.submit(tokens, GREEDY, keep_logits=1, images=images)
    stream.result()
    return stream.logits[0]


def test_an_image_shares_no_cached_kv_with_another_image(seeing_engine: Engine):
    red, blue = image_prompt(seeing_engine, RED), image_prompt(seeing_engine, BLUE)
    assert red[1][0].start == blue[1][0].start and red[0] == blue[0]  # same ids, other rows
    first_red, first_blue = first(seeing_engine, *red), first(seeing_engine, *blue)
    assert float(np.abs(first_red - first_blue).max()) > 0.5
    assert_logits_close(first_red, first(seeing_engine, *red))  # after blue's cache: red again


def test_an_image_beside_a_text_prompt_leaves_its_logits_unchanged(seeing_engine: Engine):
    text = seeing_engine.tokenize("<|im_start|>user\nTell me about the sea.<|im_end|>\n"
                                  "<|im_start|>assistant\n")
    alone = first(seeing_engine, text)
    tokens, images = image_prompt(seeing_engine, RED)
    streams = [seeing_engine.submit(tokens, GREEDY, images=images),
               seeing_engine.submit(text, GREEDY, keep_logits=1)]
    for stream in streams:
        stream.result()
    assert_logits_close(alone, streams[1].logits[0])


def test_an_image_that_ends_the_prompt_is_refused(seeing_engine: Engine):
    tokens, images = seeing_engine.vision.tokenize(f"Look: {seeing_engine.vision.marker}",
                                                   [base64.b64decode(RED)])
    with pytest.raises(ValueError, match="must not end with an image"):
        seeing_engine.submit(tokens, GREEDY, images=images)


# ---- end to end, through the worker -------------------------------------------------------

def test_show_lists_vision_for_the_model_with_a_projector(worker, local):
    assert "vision" in local.show(SEEING).capabilities
    assert "vision" not in local.show("smollm2:135m").capabilities


def test_generate_with_an_image_counts_its_tokens(worker, local):
    plain = local.generate(model=SEEING, prompt="What is this?", options=OPTIONS)
    seen = local.generate(model=SEEING, prompt="What is this?", images=[RED], options=OPTIONS)
    assert seen.done and seen.response
    assert seen.prompt_eval_count - plain.prompt_eval_count in (N_PATCHES, N_PATCHES + 1)
    again = local.generate(model=SEEING, prompt="What is this?", images=[RED], options=OPTIONS)
    assert again.response == seen.response  # temperature 0, the same image: the same answer


def test_chat_with_an_image_in_a_message(worker, local):
    text = [{"role": "user", "content": "Describe the picture."}]
    plain = local.chat(model=SEEING, messages=text, options=OPTIONS)
    seen = local.chat(model=SEEING, messages=[{**text[0], "images": [RED]}], options=OPTIONS)
    assert seen.message.content
    assert seen.prompt_eval_count > plain.prompt_eval_count + N_PATCHES - 1


def test_two_images_give_different_first_token_logprobs(worker, local):
    def first(image: str):
        reply = local.chat(model=SEEING, messages=[
            {"role": "user", "content": "What colour is [img]?", "images": [image]}],
            options=OPTIONS, logprobs=True, top_logprobs=5)
        return reply.logprobs[0]

    red, blue, red_again = first(RED), first(BLUE), first(RED)
    assert red.logprob == pytest.approx(red_again.logprob, abs=1e-4)
    tops = [[t.logprob for t in entry.top_logprobs] for entry in (red, blue)]
    assert not np.allclose(tops[0], tops[1], atol=1e-3)


def test_two_images_in_one_chat_are_both_seen(worker, local):
    messages = [{"role": "user", "content": "Compare these.", "images": [RED, BLUE]}]
    reply = local.chat(model=SEEING, messages=messages, options=OPTIONS)
    one = local.chat(model=SEEING, messages=[{**messages[0], "images": [RED]}], options=OPTIONS)
    assert reply.prompt_eval_count >= one.prompt_eval_count + N_PATCHES


def test_the_openai_face_answers_an_image_url_part(worker, api):
    part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{RED}"}}
    answer = api.chat.completions.create(model=SEEING, max_tokens=8, temperature=0, messages=[
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}])
    assert answer.choices[0].message.content
    assert answer.usage.prompt_tokens > N_PATCHES


def test_bytes_that_are_no_image_are_a_400_naming_the_field(worker, client, api):
    junk = base64.b64encode(b"plain text, not a picture at all").decode()
    answer = client.post("/api/generate", json={"model": SEEING, "prompt": "x",
                                                "images": [junk]})
    assert answer.status_code == 400 and "'images[0]'" in answer.get_json()["error"]
    messages = [{"role": "user", "content": "x", "images": [RED, junk]}]
    answer = client.post("/api/chat", json={"model": SEEING, "messages": messages})
    assert answer.status_code == 400
    assert "'messages[0].images[1]'" in answer.get_json()["error"]
    part = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{junk}"}}
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model=SEEING, messages=[{"role": "user", "content": [part]}])
    assert "not an image" in caught.value.message


def test_a_corrupt_image_is_a_400_from_the_worker_naming_the_field(worker, client):
    broken = base64.b64encode(base64.b64decode(RED)[:24]).decode()  # a PNG cut short
    answer = client.post("/api/generate", json={"model": SEEING, "prompt": "x",
                                                "images": [broken], "stream": False})
    assert answer.status_code == 400, answer.get_json()
    assert "'images[0]'" in answer.get_json()["error"]


def test_the_model_without_a_projector_still_refuses_images(worker, client):
    answer = client.post("/api/generate", json={"model": "smollm2:135m", "prompt": "x",
                                                "images": [RED]})
    assert answer.status_code == 400 and "does not support images" in answer.get_json()["error"]


def test_a_modelfiles_second_from_names_the_projector(client, mmproj: Path):
    modelfile = f"FROM {mmproj}\nFROM smollm2:135m\nSYSTEM You see.\n"  # either order
    answer = client.post("/api/create", json={"model": "made-seeing", "modelfile": modelfile})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    shown = client.post("/api/show", json={"model": "made-seeing"}).get_json()
    assert "vision" in shown["capabilities"]
    assert shown["modelfile"].count("\nFROM ") == 2
    based = client.post("/api/create", json={"model": "still-seeing", "from": "made-seeing",
                                             "system": "Look."})
    assert based.status_code == 200  # FROM a model with a projector keeps it
    assert "vision" in client.post("/api/show", json={"model": "still-seeing"}).get_json()[
        "capabilities"]
    only = client.post("/api/create", json={"model": "x", "modelfile":
                                            f"FROM {mmproj}\nFROM {mmproj}\n"})
    assert only.status_code == 400 and "vision projector" in only.get_json()["error"]


def test_create_from_files_tells_the_projector_by_its_gguf(client, mmproj: Path,
                                                            model_file: Path):
    digests = {}
    for name, path in (("mmproj.gguf", mmproj), ("model.gguf", model_file)):
        data = path.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert client.post(f"/api/blobs/{digest}", data=data).status_code in (200, 201)
        digests[name] = digest
    answer = client.post("/api/create", json={"model": "files-seeing", "files": digests,
                                              "stream": False})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    shown = client.post("/api/show", json={"model": "files-seeing"}).get_json()
    assert "vision" in shown["capabilities"]
    assert shown["details"]["family"] != "clip"  # the weights are the model's, not the mmproj's
