"""The ingestion stages kept loaded in one process, for small uploads that must not pay Ray Data's start-up.

:func:`mmrag.ingest.pipeline.ingest` takes a ``runner``: by default Ray Data's actor pools (:class:`ReadStage`,
:class:`EmbedStage`, :class:`TextEmbedStage`, each its own pool), which pays for itself on a folder of files but
costs ~30 s of actor and model start-up per run. :class:`WarmStages` holds one instance of each of the same
callable classes and runs a job's files through them in order, in the calling thread, yielding the same tables Ray
Data would: reading and embedding have one code path, only the scheduling differs. The ingestion service
(:mod:`mmrag.serve.ingestor`) builds one at start and reuses it for every job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from mmrag.config import MmragConfig


class WarmStages:
    def __init__(self, cfg: MmragConfig) -> None:
        from mmrag.ingest.speech import SpeechStage
        from mmrag.ingest.stages import EmbedStage, ReadStage, TextEmbedStage

        if cfg.models.uses_tiny():
            from mmrag.models.tiny import build_tiny

            build_tiny(cfg.models.tiny_dir)
        t0 = time.perf_counter()
        self.fingerprint = _fingerprint(cfg)
        self.read = ReadStage(
            cfg.ingest.model_dump(),
            cfg.models.retriever.max_image_pixels,
            rows_per_table=cfg.ingest.embed.batch_size,
        )
        self.embed = EmbedStage(
            cfg.models.model_dump(),
            token_pooling_factor=cfg.ingest.token_pooling_factor,
            batch_size=cfg.ingest.embed.batch_size,
        )
        self.text = TextEmbedStage(cfg.models.text.model_dump()) if cfg.models.text is not None else None
        self.speech = SpeechStage(cfg.ingest.speech.model_dump()) if cfg.ingest.speech.enabled else None
        self.load_s = time.perf_counter() - t0

    def __call__(self, tasks: list[dict[str, Any]], cfg: MmragConfig, *, text: bool = True) -> Iterator[pa.Table]:
        """The pipeline's ``runner``: each task's rows, read a few at a time, embedded, and text-embedded unless
        ``text=False`` (then the pipeline adds text vectors after publishing, with :attr:`text`)."""
        if _fingerprint(cfg) != self.fingerprint:
            raise ValueError("these warm stages were loaded for other models or ingest settings; build new ones")
        for task in tasks:
            for table in self.read(pa.Table.from_pylist([task])):
                out = self.embed(table)
                if self.speech is not None:
                    out = self.speech(out)  # the words join the text before it is published or text-embedded
                yield self.text(out) if self.text is not None and text else out

    def without_text(self, tasks: list[dict[str, Any]], cfg: MmragConfig) -> Iterator[pa.Table]:
        """The runner for ``ingest(..., text_after_publish=self.text)``."""
        return self(tasks, cfg, text=False)


def _fingerprint(cfg: MmragConfig) -> str:
    import json

    return json.dumps(
        {"ingest": cfg.ingest.model_dump(mode="json"), "models": cfg.models.model_dump(mode="json")}, sort_keys=True
    )


__all__ = ["WarmStages"]
