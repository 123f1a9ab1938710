"""A question's image: how it may come (base64, data URL, multipart), what is refused and how it is said."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from PIL import Image

from mmrag.config import load_config
from mmrag.serve.http_layer import ApiError, install_error_handlers
from mmrag.serve.query_image import generator_image, image_bytes, parse_body, prepare_query_image, with_image
from mmrag.serve.schemas import AnswerRequest, SearchRequest

pytestmark = pytest.mark.unit


def _png(w: int = 64, h: int = 48, mode: str = "RGB", **kw: object) -> bytes:
    buf = io.BytesIO()
    arr = (np.arange(w * h * 3) % 251).astype(np.uint8).reshape(h, w, 3)
    Image.fromarray(arr).convert(mode).save(buf, format="PNG", **kw)
    return buf.getvalue()


def _code(e: pytest.ExceptionInfo[ApiError]) -> tuple[int, str]:
    return e.value.status, e.value.code


def test_base64_and_data_urls_give_the_bytes() -> None:
    raw = _png()
    b64 = base64.b64encode(raw).decode()
    assert image_bytes(b64, max_bytes=1 << 20) == raw
    assert image_bytes(f"data:image/png;base64,{b64}", max_bytes=1 << 20) == raw
    assert image_bytes(b64[:40] + "\n" + b64[40:].rstrip("="), max_bytes=1 << 20) == raw  # wrapped, unpadded


@pytest.mark.parametrize(
    ("value", "status", "code", "needle"),
    [
        ("https://example.com/cat.png", 400, "remote_image_refused", "not fetched"),
        ("file:///etc/passwd", 400, "remote_image_refused", "not fetched"),
        ("s3://bucket/key.png", 400, "remote_image_refused", "not fetched"),
        ("data:text/html;base64,PGI+", 400, "invalid_image", "not an image"),
        ("data:image/png,rawbytes", 400, "invalid_image", "must be base64"),
        ("data:image/png;base64", 400, "invalid_image", "no ','"),
        ("not base64 at all!", 400, "invalid_image", "not valid base64"),
        ("   ", 400, "invalid_image", "empty"),
        ("A" * 4000, 413, "image_too_large", "max_query_image_bytes"),
    ],
)
def test_refusals_say_what_is_wrong(value: str, status: int, code: str, needle: str) -> None:
    with pytest.raises(ApiError) as e:
        image_bytes(value, max_bytes=1024)
    assert _code(e) == (status, code) and needle in e.value.message


def test_the_image_is_decoded_safely_and_scaled_for_the_encoder() -> None:
    png = prepare_query_image(_png(800, 600), max_pixels=10_000_000, encoder_pixels=50_000)
    with Image.open(io.BytesIO(png)) as img:
        assert img.mode == "RGB" and img.width * img.height <= 50_000 and abs(img.width / img.height - 4 / 3) < 0.05
    # 16-bit greyscale and transparency come out as 8-bit RGB, not white or black
    grey16 = Image.fromarray((np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16))
    buf = io.BytesIO()
    grey16.save(buf, format="PNG")
    with Image.open(io.BytesIO(prepare_query_image(buf.getvalue(), max_pixels=10**7, encoder_pixels=50_000))) as img:
        lo, hi = img.convert("L").getextrema()
        assert img.mode == "RGB" and hi - lo > 200


def test_bombs_and_garbage_are_refused_before_decoding() -> None:
    big = _png(500, 400)  # 200,000 pixels over a 100,000 limit: refused from the header
    with pytest.raises(ApiError) as e:
        prepare_query_image(big, max_pixels=100_000, encoder_pixels=50_000)
    assert _code(e) == (413, "image_too_large") and "max_query_image_pixels" in e.value.message
    with pytest.raises(ApiError) as e:
        prepare_query_image(b"%PDF-1.7 not an image", max_pixels=10**7, encoder_pixels=50_000)
    assert _code(e) == (400, "invalid_image")
    truncated = _png(200, 200)[:300]
    with pytest.raises(ApiError) as e:
        prepare_query_image(truncated, max_pixels=10**7, encoder_pixels=50_000)
    assert _code(e) == (400, "invalid_image")


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/s")
    async def s(request: Request) -> dict:
        req = await parse_body(request, SearchRequest)
        return {"query": req.query, "k": req.k, "image": req.image and base64.b64decode(req.image).hex()[:8]}

    return TestClient(app)


def test_json_and_multipart_bodies_parse_to_the_same_request(client: TestClient) -> None:
    raw = _png()
    b64 = base64.b64encode(raw).decode()
    head = raw[:4].hex()
    assert client.post("/s", json={"query": "cup", "k": 3, "image": b64}).json() == {
        "query": "cup",
        "k": 3,
        "image": head,
    }
    files = {"image": ("cup.png", raw, "image/png")}
    r = client.post("/s", data={"request": '{"k": 3}', "query": "cup"}, files=files)
    assert r.json() == {"query": "cup", "k": 3, "image": head}
    assert client.post("/s", files=files).json() == {"query": "", "k": 10, "image": head}  # an image alone


@pytest.mark.parametrize(
    ("kw", "field", "needle"),
    [
        ({"json": {"k": 3}}, "query", "must not be empty"),
        ({"data": {"request": "[1]"}, "files": {"image": ("a.png", b"x")}}, "request", "JSON object"),
        ({"data": {"request": "{bad"}, "files": {"image": ("a.png", b"x")}}, "request", "not valid JSON"),
        ({"data": {"kk": "3"}, "files": {"image": ("a.png", b"x")}}, "kk", "unknown multipart"),
        ({"data": {"request": '{"k": "3"}'}, "files": {"image": ("a.png", b"x")}}, "k", ""),
    ],
)
def test_bad_bodies_are_400_naming_the_field(client: TestClient, kw: dict, field: str, needle: str) -> None:
    r = client.post("/s", **kw)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["field"] == field and needle in err["message"]


def test_answer_takes_an_image_without_words() -> None:
    req = AnswerRequest.model_validate_json('{"image": "iVBORw0KGgo="}')
    assert req.query == "" and req.image


def test_a_vision_generator_sees_the_image_a_text_one_gets_a_note() -> None:
    from mmrag.serve.prompt import estimate_prompt_tokens

    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "what is it?"}]
    image = base64.b64encode(_png()).decode()
    notes: list[str] = []
    assert generator_image(image, load_config("local-cpu"), notes) is None  # SmolLM2: text only
    assert "reads text only" in notes[0]
    vl = load_config("local-cpu", {"models": {"generator": {"model": "tiny:qwen2-vl", "max_model_len": 1024}}})
    notes = []
    got = generator_image(image, vl, notes)
    assert notes == [] and got is not None and got[0].startswith("data:image/")
    out = with_image(msgs, got[0])
    assert out[0] == msgs[0] and out[-1]["content"][1] == {"type": "image_url", "image_url": {"url": got[0]}}
    assert out[-1]["content"][-1] == {"type": "text", "text": "what is it?"}
    # what the sources leave room for covers what the image adds to the prompt
    assert estimate_prompt_tokens(out) - estimate_prompt_tokens(msgs) <= got[1]
