"""``mmrag demo``: the whole product once, on the embedded default.

Prepares the offline models (``mmrag models build``), ingests the bundled sample (a real PDF and a real video,
``deploy/sample``) into a demo store, starts the app on a local Ray, asks a question through ``/v1/answer``, prints
the streamed answer and its citations, and shuts everything down. Ray's, Serve's and vLLM's own output goes to a
log file (:func:`output_to_log`) unless asked for.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mmrag.config import REAL_GENERATOR, REAL_PREFIX, TINY_PREFIX, MmragConfig, sample_dir
from mmrag.constants import mmrag_home

DEFAULT_QUESTION = "How do I plot data from a file with gnuplot?"
COLLECTION = "demo"

#: Printed when the generator is a tiny random-weight model (``tiny:qwen2-vl``).
NOISE_NOTICE = (
    "The generator here is a tiny random-weight Qwen2-VL built offline: its words are noise, by design (no "
    "vision-language weights can be downloaded on this machine). Retrieval, citations and the serving path are real. "
    f"For real answers use the default {REAL_PREFIX}{REAL_GENERATOR} (real weights, text only), a real "
    "vision-language model (e.g. MMRAG_MODELS__GENERATOR__MODEL=Qwen/Qwen2.5-VL-3B-Instruct), or --profile gpu."
)
#: Printed when the generator has real weights but is small and reads text only (the local-cpu default).
SMALL_MODEL_NOTICE = (
    "The generator is SmolLM2-135M-Instruct with real weights: it answers from the sources' text (never their "
    "images) and, at 135M parameters, its answers are short and sometimes wrong. For better answers use a larger "
    "model, e.g. MMRAG_MODELS__GENERATOR__MODEL=Qwen/Qwen2.5-VL-3B-Instruct, or --profile gpu."
)

_KNOWN = {
    f"{TINY_PREFIX}qwen2-vl": "tiny random Qwen2-VL (its words are noise)",
    f"{TINY_PREFIX}colqwen2": "tiny random ColQwen2 (its scores are noise and calibration switches it off)",
    f"{REAL_PREFIX}{REAL_GENERATOR}": "SmolLM2-135M-Instruct (real weights, text only)",
}


def describe_models(cfg: MmragConfig) -> list[str]:
    """One line per model role, saying which weights are real and which are tiny random stand-ins."""
    lines = []
    for role, ref in (("generator", cfg.models.generator.model), ("visual retriever", cfg.models.retriever.model)):
        lines.append(f"{role}: {_KNOWN.get(ref, f'{ref} (real weights)')}")
    if cfg.generator.engine == "echo":
        lines[0] = "generator: the echo debug engine, no model (it repeats the prompt: its words are noise)"
    elif cfg.generator.engine == "none":
        lines[0] = "generator: none (search only)"
    text = getattr(cfg.models, "text", None)  # the dense text channel, where this build has one
    if text is not None:
        lines.append(f"text retriever: {text.model} (real weights)")
    return lines


def generator_is_noise(cfg: MmragConfig) -> bool:
    """Whether the answer's words mean nothing: a tiny random-weight generator, or the echo engine."""
    return cfg.generator.engine == "echo" or cfg.models.generator.model.startswith(TINY_PREFIX)


def default_log_path() -> Path:
    return mmrag_home() / "demo" / "logs" / time.strftime("demo-%Y%m%d-%H%M%S.log")


@contextlib.contextmanager
def output_to_log(path: Path) -> Iterator[tuple[TextIO, TextIO]]:
    """Point this process's stdout and stderr (file descriptors 1 and 2, so C++ and child-process output too) at
    ``path``; yield ``(out, err)``: files on the original stdout and stderr, for the progress lines and the answer.

    Ray's and vLLM's workers write to Ray's session logs (``log_to_driver`` is off); what reaches the terminal from
    the driver (Ray's start-up, Serve's deploy lines, Ray Data's progress, library warnings) lands in ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    err = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    with path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield out, err
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        out.close()
        err.close()


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
    from mmrag.models.prepare import prepare_models
    from mmrag.serve.run import run_app

    cfg = demo_config(cfg, db)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    say("preparing the models (offline; the first run converts SmolLM2 and builds the tiny ones) ...")
    for info in prepare_models(cfg):
        say(f"  {info['model']}: {info['kind']}, in {info['path']}")
    seconds["models"] = time.perf_counter() - t0
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
        from mmrag import lifetime

        lifetime.shutdown()  # under `mmrag demo`'s guard: bounded, and nothing left running
    return DemoResult(url=url, question=question, answer=answer, ingest=summary.to_dict(), seconds=seconds)
