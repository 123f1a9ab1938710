"""The gateway's prompt sources: one store call per answer, then the cache; limits and deleted items."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from mmrag.config import load_config
from mmrag.serve.gateway import Gateway
from mmrag.serve.metrics import GatewayMetrics

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _in_a_request():
    """The gateway reads the store as a request's principal (here: no auth, every collection)."""
    from mmrag.auth import context
    from mmrag.auth.keys import ANONYMOUS

    token = context.PRINCIPAL.set(ANONYMOUS)
    yield
    context.PRINCIPAL.reset(token)


def _jpeg(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (600, 800), color).save(buf, format="JPEG")
    return buf.getvalue()


class FakeStore:
    def __init__(self, n: int) -> None:
        self.rows = {
            f"{i:032x}": {"image": _jpeg("white"), "text": f"full text of item {i} " * 20, "collection": "docs"}
            for i in range(n)
        }
        self.calls: list[tuple[list[str], list[str]]] = []

    def get_items(self, ids: list[str], columns: list[str]) -> dict[str, dict[str, Any]]:
        self.calls.append((list(ids), list(columns)))
        return {i: {"id": i, **{c: self.rows[i][c] for c in columns}} for i in ids if i in self.rows}


#: The vision-language generator (images in the prompt); local-cpu's default SmolLM2 reads text only.
VLM = {"model": "tiny:qwen2-vl", "vision": True, "max_model_len": 1024, "max_tokens": 32, "max_prompt_tokens": None}


def _gateway(store: FakeStore, cache: int = 512, generator: dict[str, Any] | None = None) -> Any:
    over = {"server": {"prompt_cache_items": cache}, "models": {"generator": VLM if generator is None else generator}}
    cfg = load_config("local-cpu", over, use_env=False)
    # @serve.ingress wraps the class (its __init__ becomes async); the class underneath is ours
    cls = next(c for c in Gateway.func_or_class.__mro__ if "_build_prompt" in vars(c))
    return cls(cfg.model_dump(mode="json"), None, None, None, store=store, metrics=GatewayMetrics(enabled=False))


def _hits(ids: list[int]) -> list[dict[str, Any]]:
    return [
        {"id": f"{i:032x}", "score": 1.0, "modality": "page", "source_uri": f"/d{i}.pdf", "page": 1,
         "start_s": None, "end_s": None, "text": "snippet"}
        for i in ids
    ]  # fmt: skip


def _images(messages: list[dict[str, Any]]) -> int:
    return sum(1 for p in messages[1]["content"] if p["type"] == "image_url")


def test_one_store_call_then_the_cache() -> None:
    store = FakeStore(10)
    gw = _gateway(store)
    n_img = gw.cfg.models.generator.max_images_per_prompt
    msgs, n = gw._build_prompt("q", _hits([0, 1, 2, 3]), 16)
    assert n == 4 and _images(msgs) == n_img
    assert len(store.calls) == 1 and set(store.calls[0][1]) == {"image", "text", "collection"}
    text = " ".join(p.get("text", "") for p in msgs[1]["content"])
    assert "full text of item 0" in text, "the whole text from the store, not the hit's snippet"
    again, _ = gw._build_prompt("q", _hits([0, 1, 2, 3]), 16)
    assert again == msgs and len(store.calls) == 1, "asked again: nothing fetched"
    # item 2 now ranks first, so its image is needed: fetched, the others come from the cache
    gw._build_prompt("q", _hits([2, 0, 1, 3]), 16)
    assert len(store.calls) == 2 and store.calls[1][0] == ["0" * 31 + "2"]


def test_cache_is_bounded_and_can_be_off() -> None:
    store = FakeStore(10)
    gw = _gateway(store, cache=3)
    gw._build_prompt("q", _hits([0, 1, 2, 3]), 16)
    assert len(gw.sources.entries) == 3
    off = _gateway(store, cache=0)
    for _ in range(2):
        off._build_prompt("q", _hits([0, 1]), 16)
    assert len(off.sources.entries) == 0 and len(store.calls) == 3


def test_an_item_deleted_since_the_search_keeps_its_snippet() -> None:
    store = FakeStore(2)
    gw = _gateway(store)
    msgs, n = gw._build_prompt("q", _hits([0, 7]), 16)
    assert n == 2 and _images(msgs) == 1
    assert "snippet" in " ".join(p.get("text", "") for p in msgs[1]["content"])


def test_sources_cached_says_when_a_prompt_needs_no_store_call() -> None:
    """The gateway builds a prompt inline (no thread hop) only when this is true, so it must match PromptSources.get."""
    store = FakeStore(10)
    gw = _gateway(store)
    n_img = gw.cfg.models.generator.max_images_per_prompt
    assert not gw.sources.all_cached(_hits([0, 1, 2, 3]))
    gw._build_prompt("q", _hits([0, 1, 2, 3]), 16)
    assert gw.sources.all_cached(_hits([0, 1, 2, 3]))
    assert gw.sources.all_cached(_hits([1, 0, 3])), "items cached with their image serve text-only places too"
    # an item cached without its image now ranks where the prompt takes one: not cached
    assert not gw.sources.all_cached(_hits([n_img, 0]))
    calls = len(store.calls)
    gw._build_prompt("q", _hits([n_img, 0]), 16)
    assert len(store.calls) == calls + 1 and gw.sources.all_cached(_hits([n_img, 0]))
    assert not gw.sources.all_cached(_hits([0, 9]))


def test_text_only_generator_gets_text_and_no_image_is_fetched() -> None:
    """local-cpu's SmolLM2 takes no images: the store is asked for text only, and the prompt is one string."""
    store = FakeStore(10)
    gw = _gateway(store, generator={"max_prompt_tokens": None})  # no counter here: the byte bound, uncapped
    assert gw.cfg.models.generator.model == "real:smollm2-135m-instruct" and gw.sources.n_images == 0
    msgs, n = gw._build_prompt("q", _hits([0, 1, 2, 3]), 16)
    assert n == 4 and store.calls == [([f"{i:032x}" for i in range(4)], ["text", "collection"])]
    user = msgs[1]["content"]
    assert isinstance(user, str) and "full text of item 3" in user and user.endswith("Question: q")
    assert gw.sources.all_cached(_hits([0, 1, 2, 3]))
