"""``mmrag demo``: the whole product once, on the embedded default.

Builds the tiny checkpoints, ingests the bundled sample (a real PDF and a real video, ``deploy/sample``) into a
demo store, starts the app on a local Ray, asks a question through ``/v1/answer``, prints the streamed answer
and its citations, and shuts everything down.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmrag.config import MmragConfig, sample_dir
from mmrag.constants import mmrag_home

DEFAULT_QUESTION = "How do I plot data from a file with gnuplot?"
COLLECTION = "demo"

NOISE_NOTICE = (
    "The generator here is a tiny random-weight Qwen2-VL built offline: its words are noise, by design (no model "
    "weights can be downloaded on this machine). Retrieval, citations and the serving path are real. For real "
    "answers switch the model, e.g. MMRAG_MODELS__GENERATOR__MODEL=Qwen/Qwen2.5-VL-3B-Instruct (and "
    "MMRAG_MODELS__RETRIEVER__MODEL=vidore/colqwen2.5-v0.2 with a fresh store), or use --profile gpu."
)


@dataclass
class DemoResult:
    url: str
    question: str
    answer: dict[str, Any]
    ingest: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def demo_config(cfg: MmragConfig, db: str | None = None) -> MmragConfig:
    """The demo's own store (``db``, else ``$MMRAG_HOME/demo/lancedb``) and a free port if the configured one is
    taken; everything else as configured."""
    over: dict[str, Any] = {"store": {"uri": db or str(mmrag_home() / "demo" / "lancedb")}}
    if not _port_free(cfg.server.host, cfg.server.port):
        over["server"] = {"port": _free_port(cfg.server.host)}
    return cfg.model_copy(update={k: getattr(cfg, k).model_copy(update=v) for k, v in over.items()})


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_demo(
    cfg: MmragConfig,
    *,
    db: str | None = None,
    question: str = DEFAULT_QUESTION,
    say: Callable[[str], None] = print,
    on_token: Callable[[str], None] | None = None,
    keep_serving: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the demo; ``say`` gets progress lines, ``on_token`` the answer as it streams. ``keep_serving(url)``,
    when given, is called before the shutdown (the CLI blocks there with --keep-serving)."""
    from mmrag.client import ask
    from mmrag.ingest.pipeline import ingest
    from mmrag.serve.run import run_app

    cfg = demo_config(cfg, db)
    seconds: dict[str, float] = {}
    if cfg.models.uses_tiny():
        from mmrag.models.tiny import build_tiny

        t0 = time.perf_counter()
        build_tiny(cfg.models.tiny_dir)
        seconds["models"] = time.perf_counter() - t0
        say(f"tiny checkpoints ready in {cfg.models.tiny_dir}")
    sample = sorted(p for p in sample_dir().iterdir() if p.suffix in (".pdf", ".mp4"))
    say(f"ingesting {', '.join(p.name for p in sample)} into {cfg.store.uri} (collection {COLLECTION}) ...")
    t0 = time.perf_counter()
    summary = ingest([str(p) for p in sample], cfg, collection=COLLECTION)
    seconds["ingest"] = time.perf_counter() - t0
    say(
        f"  {summary.pages} pages, {summary.clips} clips, {summary.skipped} files already there, "
        f"{len(summary.errors)} errors ({seconds['ingest']:.0f} s)"
    )
    say("starting the app on a local Ray (retriever, reranker, vLLM generator, gateway) ...")
    t0 = time.perf_counter()
    from ray import serve

    try:
        url = run_app(cfg)
        seconds["serve"] = time.perf_counter() - t0
        say(f"  serving on {url} ({seconds['serve']:.0f} s)")
        say(f"asking: {question}")
        t0 = time.perf_counter()
        answer = ask(url, question, collection=COLLECTION, on_token=on_token)
        seconds["answer"] = time.perf_counter() - t0
        if keep_serving is not None:
            keep_serving(url)
    finally:
        import ray

        serve.shutdown()
        ray.shutdown()
    return DemoResult(url=url, question=question, answer=answer, ingest=summary.to_dict(), seconds=seconds)
