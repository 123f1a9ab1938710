"""The gateway's prompt sources: each hit's whole text and, for the first ones, its prompt-ready image.

From an in-memory cache keyed by item id (ids hash the collection, file and content, so an entry is never stale,
and a hit can only name an item of the collection its request may read), else one store call for all that are
missing, with the images resized in parallel threads; then cached, up to ``server.prompt_cache_items``. The store
is the gateway's :class:`~mmrag.store.scoped.ScopedStore`, so a fetch is the request's principal's too.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import threading
from typing import Any

from mmrag.config import MmragConfig


class PromptSources:
    def __init__(self, cfg: MmragConfig, store: Any, pool: concurrent.futures.Executor) -> None:
        self.cfg = cfg
        self.store = store
        self.pool = pool
        #: (item id, with image) -> {"text", "prepared_image"}; an entry with the image has the text too
        self.entries: collections.OrderedDict[tuple[str, bool], dict[str, Any]] = collections.OrderedDict()
        self.lock = threading.Lock()  # requests build prompts in worker threads

    @functools.cached_property
    def n_images(self) -> int:
        """How many of the first sources go into a prompt as images: none for a text-only generator."""
        from mmrag.serve.generator import is_vision_model

        return self.cfg.models.generator.max_images_per_prompt if is_vision_model(self.cfg) else 0

    def _key(self, item_id: str, with_image: bool) -> tuple[str, bool] | None:
        """The cache key that serves ``item_id``, or None; hold ``lock``."""
        for key in ((item_id, with_image), (item_id, True)):
            if key in self.entries:
                return key
        return None

    def all_cached(self, hits: list[dict[str, Any]]) -> bool:
        """Whether every source of ``hits`` (with its image where the prompt takes one) is in the cache: the
        gateway then builds the prompt inline, with no thread hop."""
        n_img = self.n_images
        with self.lock:
            return all(self._key(h["id"], i < n_img) is not None for i, h in enumerate(hits))

    def get(self, hits: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """item id -> {text, prepared_image} for ``hits`` (an item deleted since the search is left out)."""
        from mmrag.imaging import prepare_image

        n_img = self.n_images
        out: dict[str, dict[str, Any]] = {}
        missing: list[tuple[str, bool]] = []
        with self.lock:
            for i, h in enumerate(hits):
                key = self._key(h["id"], i < n_img)
                if key is None:
                    missing.append((h["id"], i < n_img))
                else:
                    got = self.entries[key]
                    self.entries.move_to_end(key)
                    out[h["id"]] = got if key[1] == (i < n_img) else {"text": got.get("text")}
        if not missing:
            return out
        rows = self.store.get_items(
            [k[0] for k in missing], ["image", "text"] if any(k[1] for k in missing) else ["text"]
        )
        todo = [k[0] for k in missing if k[1] and rows.get(k[0], {}).get("image")]
        px = self.cfg.models.generator.image_max_pixels
        prepared = dict(zip(todo, self.pool.map(lambda i: prepare_image(rows[i]["image"], px), todo), strict=True))
        limit = self.cfg.server.prompt_cache_items
        with self.lock:
            for key in missing:
                row = rows.get(key[0])
                if row is None:  # deleted since the search: the hit keeps its snippet, no image
                    continue
                value = {k: v for k, v in (("text", row.get("text")), ("prepared_image", prepared.get(key[0]))) if v}
                out[key[0]] = value
                if limit:
                    self.entries[key] = value
            while len(self.entries) > limit:
                self.entries.popitem(last=False)
        return out


__all__ = ["PromptSources"]
