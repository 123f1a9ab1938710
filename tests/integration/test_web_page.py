"""The web page in a real browser: Debian's chromium, headless, driven by Playwright, against the real app.

One server for the module, in the cheapest configuration that still runs the page's real paths: the tiny ColQwen2
retriever, the echo engine behind Ray Serve LLM's LLMServer (instant, deterministic answers), no dense text model
and no ingestion service (so uploads meet the "not enabled" path); the sample PDF and video are ingested in this
process with the warm stages (no Ray Data start-up). Timings are read from the page's own performance marks.

``WEB_SCREENSHOTS=docs/screenshots`` also writes the main views there (how the README's pictures were made).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest

from mmrag.config import load_config

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DATA = Path(__file__).resolve().parents[1] / "data"
SHOTS = os.environ.get("WEB_SCREENSHOTS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str | None:
    """Debian's chromium (``deploy/setup.sh test`` installs it), or ``CHROMIUM_PATH``."""
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    pw = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra (deploy/setup.sh test)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no chromium: `apt-get install chromium` (deploy/setup.sh test does)")
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(ray_local, mmrag_home: str, tmp_path_factory: pytest.TempPathFactory):
    """The app with the sample PDF and video in collection ``docs``; yields its base URL."""
    from ray import serve

    from mmrag.ingest.pipeline import ingest
    from mmrag.ingest.warm import WarmStages
    from mmrag.serve.run import run_app
    from mmrag.store import LanceStore

    d = tmp_path_factory.mktemp("web")
    for name in ("coin.pdf", "cup.mp4"):
        shutil.copy(DATA / name, d / name)
    cfg = load_config(
        "local-cpu",
        {
            "store": {"uri": str(d / "db")},
            "ingest": {"ocr": "never"},
            "server": {"port": _free_port()},
            "generator": {"engine": "echo"},
            "ingestor": {"enabled": False},
            "retriever": {"num_replicas": 1, "autoscaling": None},
            "models": {
                "text": None,
                "generator": {"model": "tiny:qwen2-vl", "max_model_len": 1024, "max_tokens": 32,
                              "max_prompt_tokens": None},
            },
        },
    )  # fmt: skip
    store = LanceStore.from_config(cfg.store)
    ingest([str(d / "coin.pdf"), str(d / "cup.mp4")], cfg, collection="docs", store=store, calibrate=False,
           optimize=False, runner=WarmStages(cfg))  # fmt: skip
    url = run_app(cfg)
    yield url
    serve.shutdown()


@pytest.fixture
def page(browser, site):
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # (a video's range requests are aborted by the player itself, and when the page closes)
    pg.on("requestfailed", lambda r: r.failure == "net::ERR_ABORTED" or errors.append(f"failed: {r.url} {r.failure}"))
    pg.goto(site + "/")
    yield pg
    ctx.close()
    assert not errors, errors  # no script error, nothing the page asked for failed (nothing fetched from elsewhere)


def _until(pg, js: str, timeout_s: float = 15.0) -> None:
    """Poll ``js`` in the page until it is truthy. (``wait_for_function`` evaluates strings with eval, which the
    page's Content-Security-Policy rightly forbids; ``evaluate`` is not subject to it.)"""
    deadline = time.monotonic() + timeout_s
    while not pg.evaluate(js):
        assert time.monotonic() < deadline, f"never true: {js}"
        time.sleep(0.05)


def _mark(pg, name: str) -> float:
    return pg.evaluate(f"performance.getEntriesByName({name!r})[0].startTime")


def _shot(pg, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def test_the_page_loads_offline_fast_and_lists_the_collections(page, site) -> None:
    pg = page
    pg.wait_for_selector("#collection option[value=docs]", state="attached")
    assert pg.locator("#collection").input_value() == "docs"  # the only one is chosen
    ready = _mark(pg, "mmrag:ready")
    fcp = pg.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null")
    assert ready <= 1000, f"the page was usable after {ready:.0f} ms"
    assert fcp is None or fcp <= 1000
    # nothing but the gateway's own three files
    urls = pg.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(site) for u in urls), urls
    # the page needs no key, and says what it does to a server with auth on
    r = httpx.get(site + "/")
    assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
    assert httpx.get(site + "/ui/nothing.js").status_code == 404
    print(f"\npage: usable {ready:.0f} ms after navigation start, first contentful paint {fcp} ms")


def test_ask_streams_the_answer_with_citation_links_and_evidence(page) -> None:
    pg = page
    pg.wait_for_selector("#collection option[value=docs]", state="attached")
    # the echo engine repeats the question's first words, so a question that names [1] gets a cited answer
    pg.fill("#query", "coin [1] toss probability")
    pg.keyboard.press("Enter")  # the form is keyboard-usable
    pg.wait_for_selector("#answer a.cite")
    pg.wait_for_selector("#sources .card")
    assert "echo" in pg.inner_text("#answer")
    arrived, shown = _mark(pg, "mmrag:token-arrived"), _mark(pg, "mmrag:token-shown")
    assert 0 <= shown - arrived <= 100, f"the first token showed {shown - arrived:.0f} ms after it arrived"
    print(f"\nfirst token shown {shown - arrived:.1f} ms after it arrived")
    cards = pg.locator("#sources .card")
    assert cards.count() >= 2
    assert pg.locator("#sources .badge.cited").count() >= 1
    assert "random-weight" in pg.inner_text("#evidence-note")  # the tiny model's regions are noise: the page says so
    pg.wait_for_selector("#answer-meta:has-text('first token')")
    _shot(pg, "answer")
    # [1] goes to source card 1
    pg.click("#answer a.cite >> nth=0")
    assert pg.evaluate("document.activeElement.closest('.card').id") == "src-1"
    # open a page: its image with the evidence boxes
    page_card = pg.locator("#sources .card", has_text="page").first
    page_card.locator("button.thumb").click()
    pg.wait_for_selector("#viewer[open] .figure img")
    _until(pg, "document.querySelector('#viewer .figure img').naturalWidth > 0")
    assert pg.locator("#viewer .box").count() >= 1
    box = pg.locator("#viewer .box").first.bounding_box()
    img = pg.locator("#viewer .figure img").bounding_box()
    assert box and img and img["x"] - 1 <= box["x"] and box["x"] + box["width"] <= img["x"] + img["width"] + 1
    assert "random-weight" in pg.inner_text("#viewer-note")
    _shot(pg, "evidence")
    pg.keyboard.press("Escape")
    assert not pg.locator("#viewer").evaluate("d => d.open")


def test_a_clip_shows_its_frames_with_times_and_plays_from_its_start(page) -> None:
    pg = page
    pg.wait_for_selector("#collection option[value=docs]", state="attached")
    pg.check("input[value=search]")
    pg.select_option("#mode", "visual")
    pg.fill("#k", "20")  # every item of the small collection: the clip is among them
    pg.fill("#query", "a cup on a table")
    pg.click("#go")
    pg.wait_for_selector("#sources .card")
    clip = pg.locator("#sources .card", has_text="clip").first
    clip.locator("button.thumb").click()
    pg.wait_for_selector("#viewer[open] .frames figure")
    assert pg.locator("#viewer .frames figure").count() >= 2
    assert "at 0:0" in pg.inner_text("#viewer .frames figcaption >> nth=0")
    # the video was ingested from a file that is still there unchanged: the player starts at the clip's start
    pg.wait_for_selector("#viewer video")
    _until(pg, "document.querySelector('#viewer video').readyState >= 1")
    _shot(pg, "clip")
    # the clip's video summarised from the viewer: its one chapter, with the clip's times, then the summary
    pg.click("#viewer button.summarize")
    pg.wait_for_selector("#viewer .chapters li")
    assert pg.inner_text("#viewer .chapters li >> nth=0").startswith("0:00–0:08.1 echo: ")
    _until(pg, "/^(Made in|From the cache)/.test(document.querySelector('#viewer .summary .meta').textContent)")
    assert pg.inner_text("#viewer .summary-text").startswith("echo: ")


def test_search_only_lists_results_with_highlighted_words(page) -> None:
    pg = page
    pg.wait_for_selector("#collection option[value=docs]", state="attached")
    pg.check("input[value=search]")
    assert pg.inner_text("#go") == "Search"
    pg.select_option("#mode", "text")
    pg.fill("#query", "coin")
    pg.click("#go")
    pg.wait_for_selector("#sources .card mark")
    assert pg.locator("#answer-box").is_hidden()
    assert pg.inner_text("#sources .card mark >> nth=0").lower().startswith("coin")
    _shot(pg, "search")
    pg.set_viewport_size({"width": 390, "height": 844})  # a phone
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(pg, "phone")


def _refuse(status: int, code: str):
    def handler(route, request) -> None:
        body = {"error": {"code": code, "message": "(test)", "field": None}}
        route.fulfill(status=status, json=body, headers={"Retry-After": "3"})

    return handler


def test_errors_are_said_plainly_instead_of_a_spinner(page) -> None:
    pg = page
    pg.wait_for_selector("#collection option[value=docs]", state="attached")
    # a real refusal from the server: this deployment does not ingest over the API
    pg.set_input_files("#files", files=[{"name": "a.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4"}])
    pg.click("#upload button[type=submit]")
    pg.wait_for_selector("#jobs li:has-text('not enabled')")
    # the statuses a deployment with keys and quotas gives, as the server words them
    for status, code, expect in [
        (401, "unauthorized", "needs an API key"),
        (429, "rate_limited", "Too many requests"),
        (503, "overloaded", "busy"),
        (500, "internal", "server failed"),
    ]:
        pg.route("**/v1/answer", _refuse(status, code))
        pg.fill("#query", "anything")
        pg.click("#go")
        pg.wait_for_selector(f"#error:has-text('{expect}')")
        assert pg.locator("#go").is_enabled()  # nothing left spinning
        pg.unroute("**/v1/answer")
        # a missing key sends the focus to the key field, any other refusal to the message
        assert pg.evaluate("document.activeElement.id") == ("key" if status == 401 else "error")


def test_evidence_over_the_api_is_off_by_default_and_real_when_asked(site) -> None:
    """The API the page uses: evidence only when asked, in search results and answer/chat citations; the item's
    media routes (info, frames, the source video in ranges, the drawn evidence view)."""
    body = {"query": "coin toss", "k": 4, "collection": "docs", "mode": "visual"}
    plain = httpx.post(site + "/v1/search", json=body, timeout=60).json()
    assert all(r["evidence"] is None for r in plain["results"]) and "evidence" not in plain["timings_ms"]
    asked = httpx.post(site + "/v1/search", json={**body, "evidence": True}, timeout=60).json()
    assert asked["timings_ms"]["evidence"] > 0
    for r in asked["results"]:
        ev = r["evidence"]
        assert ev["method"] == "maxsim" and ev["regions"] and "random-weight" in ev["note"]
        assert all(0 <= g["x0"] < g["x1"] <= 1 and 0 <= g["y0"] < g["y1"] <= 1 for g in ev["regions"])
        assert all((g["frame"] is None) == (r["modality"] != "clip") for g in ev["regions"])
    ans = httpx.post(site + "/v1/answer", json={**body, "evidence": True}, timeout=60).json()
    assert ans["citations"] and all(c["evidence"]["regions"] for c in ans["citations"])
    assert "evidence" in ans["timings"]
    chat = httpx.post(site + "/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": "coin toss"}], "mmrag": {"collection": "docs", "evidence": True},
    }).json()  # fmt: skip
    assert chat["citations"] and all(c["evidence"] is not None for c in chat["citations"])
    # the item routes
    clips = {**body, "evidence": True, "filters": {"modalities": ["clip"]}}
    clip = httpx.post(site + "/v1/search", json=clips, timeout=60).json()["results"][0]
    assert {g["frame"] for g in clip["evidence"]["regions"]} <= set(range(8))
    info = httpx.get(site + clip["image_url"].removesuffix("/image"), timeout=30).json()
    assert len(info["frame_ts"]) == len(info["frame_urls"]) >= 2 and info["video_url"]
    assert httpx.get(site + info["frame_urls"][1], timeout=30).content[:2] == b"\xff\xd8"
    part = httpx.get(site + info["video_url"], headers={"Range": "bytes=0-99"}, timeout=30)
    assert part.status_code == 206 and len(part.content) == 100
    view = httpx.get(site + info["evidence_url"], params={"query": "coin toss", "frame": 1}, timeout=60)
    assert view.status_code == 200 and view.content[:2] == b"\xff\xd8"
    assert httpx.get(site + info["evidence_url"], params={"query": " "}, timeout=30).status_code == 400
    assert httpx.get(site + info["frame_urls"][0].rsplit("/", 1)[0] + "/99", timeout=30).status_code == 404
