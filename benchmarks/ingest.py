"""Ingestion throughput (issue #3): the whole ``mmrag ingest`` pipeline, each of its stages alone, and byaldi,
in one run, on the same files with the same tiny ColQwen2 checkpoint.

    python -m benchmarks.ingest [--pdfs A.pdf ...] [--videos V.mp4 ...] [--large]
                                [--out benchmarks/results/ingest.json]

Measured, in this order (each rate is items per wall-clock second on this machine):

* stages alone, in this process, no Ray: PyMuPDF rendering at the profile's DPI (plain loop); decord sampling of
  the same clip frames; ``ColPaliEncoder.embed_images`` at the profile's batch size on the same pre-rendered pages
  (full size, and scaled to the encoder's pixel budget as the pipeline feeds it) and on the clips' frames; our
  ``ReadStage`` (render + text + thumbnail + JPEGs + encoder-sized frames) and ``EmbedStage`` alone;
* byaldi 0.0.7 indexing the same PDFs (a labelled re-implementation of its loop if byaldi cannot run);
* the pipeline (``mmrag.ingest.pipeline.ingest``, local-cpu profile) into a fresh LanceDB per run: PDFs, videos,
  and both together. ``ray.init`` is timed apart; each run's start-up (actors, model load, first rows) is
  separated from its steady state using the driver's progress callbacks.

Writes the JSON (numbers, exact command, machine, load, versions) and a Markdown report beside it (``.md``).

``--only speech`` measures ingestion with transcription instead (:mod:`benchmarks.ingest_speech`: Whisper's audio
seconds per second, the pipeline's clip rate with speech on vs its slowest stage alone) and adds it to both files
as their ``speech`` part; a run of the other parts keeps the last speech results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import io
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = Path("/work/shared/corpus")
DEFAULT_PDFS = ["coin.pdf", "timedep.pdf", "strucplot.pdf", "R-data.pdf"]
LARGE_PDFS = ["gnuplot.pdf"]
DEFAULT_VIDEOS = ["cup.mp4", "box.mp4", "vtest.avi"]
PROFILE = "local-cpu"
COLLECTION = "bench"
#: Targets of issue #3 (2 cores, tiny encoder).
TARGET_VS_SLOWEST_STAGE = 0.7
TARGET_VS_BYALDI = 3.0

VERSIONED = [
    "mmrag",
    "torch",
    "transformers",
    "colpali-engine",
    "ray",
    "lancedb",
    "pyarrow",
    "pymupdf",
    "decord",
    "pillow",
    "numpy",
    "byaldi",
    "pdf2image",
]


# ------------------------------------------------------------------------------------------------ helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rate(n: float, seconds: float) -> float | None:
    return round(n / seconds, 2) if seconds > 0 else None


def median_run(repeats: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a short measurement ``repeats`` times; keep the run with the median time, list all times.

    The machine is shared: the median of a few short runs is steadier than one, and kinder to the
    baseline than the best."""
    runs = [fn() for _ in range(repeats)]
    runs.sort(key=lambda r: r["seconds"])
    out = dict(runs[len(runs) // 2])
    out["runs_seconds"] = [r["seconds"] for r in runs]
    return out


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow what libraries print on stdout (byaldi prints a line per file)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    mem = ""
    if Path("/proc/meminfo").exists():
        mem = next((line.split(":", 1)[1].strip() for line in Path("/proc/meminfo").read_text().splitlines()), "")
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "simd": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
        "mem_total": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": "none",
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def resolve_inputs(args: argparse.Namespace) -> tuple[list[Path], list[Path], str]:
    """The PDFs and videos to use: as given, else the shared corpus, else what tests/data holds."""
    corpus = Path(args.corpus)
    if args.pdfs or args.videos:
        return [Path(p) for p in args.pdfs or []], [Path(v) for v in args.videos or []], "command line"
    names = DEFAULT_PDFS + (LARGE_PDFS if args.large else [])
    pdfs = [corpus / "pdf" / n for n in names]
    videos = [corpus / "video" / n for n in DEFAULT_VIDEOS]
    if all(p.is_file() for p in pdfs + videos):
        return pdfs, videos, str(corpus)
    data = ROOT / "tests" / "data"
    log(f"{corpus} is missing or incomplete; falling back to {data}")
    return sorted(data.glob("*.pdf")), sorted(data.glob("*.mp4")), str(data)


# ------------------------------------------------------------------------------------------- the inputs
def count_pages(pdfs: list[Path], max_pages: int) -> dict[str, int]:
    import pymupdf

    out = {}
    for p in pdfs:
        with pymupdf.open(p) as doc:
            out[str(p)] = min(doc.page_count, max_pages)
    return out


def clip_plan(videos: list[Path], cfg: Any) -> dict[str, list[list[int]]]:
    """Per video, the frame indices the reader samples for each clip (the reader's own functions)."""
    import numpy as np
    from decord import VideoReader, cpu

    from mmrag.ingest import shots
    from mmrag.ingest.video import clip_windows, sample_indices

    out = {}
    for v in videos:
        vr = VideoReader(str(v), ctx=cpu(0), num_threads=1)
        n = len(vr)
        ts = np.asarray(vr.get_frame_timestamp(list(range(n))), dtype=np.float64).reshape(n, 2)
        starts = ts[:, 0]
        windows = clip_windows(float(ts[-1, 1] - ts[0, 0]), cfg.clip_seconds, cfg.clip_overlap_seconds, ts[0, 0])
        if cfg.shots.enabled:  # the clips the reader makes: cut by content (benchmarks/ingest_shots.py for more)
            w, h = shots.SIZE
            small = functools.partial(VideoReader, str(v), ctx=cpu(0), width=w, height=h, num_threads=1)
            windows, _ = shots.content_windows(
                small, starts, float(ts[-1, 1]), cfg.clip_seconds, cfg.clip_overlap_seconds, cfg.shots, clip_windows
            )
        out[str(v)] = [sample_indices(starts, w, cfg.frames_per_clip) for w in windows]
    return out


def iter_rendered(pdfs: list[Path], dpi: int, max_pixels: int) -> Iterator[Any]:
    """Pages rendered exactly as the reader does (zoom from the page size, RGB, no alpha), as PIL images."""
    import pymupdf
    from PIL import Image

    from mmrag.ingest.pdf import render_zoom

    for p in pdfs:
        with pymupdf.open(p) as doc:
            for page in doc:
                z = render_zoom(page.rect.width, page.rect.height, dpi, max_pixels)
                pix = page.get_pixmap(matrix=pymupdf.Matrix(z, z), colorspace=pymupdf.csRGB, alpha=False)
                yield Image.frombytes("RGB", (pix.width, pix.height), pix.samples, "raw", "RGB", pix.stride)


# -------------------------------------------------------------------------------------- stages alone
def tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process and its descendants (subprocesses such as tesseract or
    pdftoppm; Ray's raylet, GCS and workers when Ray was started here), reaped ones included."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


class TreeCpu:
    """CPU seconds used by this process and its Ray descendants (raylet, GCS, workers) over a span.

    Ray's raylet does not collect the CPU time of workers that exit (an actor's process is gone when a
    dataset finishes), so each process is sampled while it lives, every ``interval`` seconds; what a process
    uses in its last interval is lost. Subprocesses of workers (tesseract) count through their parent."""

    def __init__(self, interval: float = 0.2) -> None:
        import threading

        self.interval = interval
        self.seconds = 0.0
        self._last: dict[tuple[int, float], float] = {}
        self._base: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                name = proc.name()
                if proc.pid != me.pid and name not in ("raylet", "gcs_server") and not name.startswith(("ray::", "py")):
                    continue
                t = proc.cpu_times()
                self._last[(proc.pid, proc.create_time())] = t.user + t.system + t.children_user + t.children_system

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeCpu:
        self._sample()
        self._base = dict(self._last)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = sum(v - self._base.get(k, 0.0) for k, v in self._last.items())


class Clock:
    """Wall and CPU seconds over the timed sections only (set-up such as rendering the encoder's input is not)."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        w, c = time.perf_counter(), tree_cpu_seconds()
        yield
        self.wall += time.perf_counter() - w
        self.cpu += tree_cpu_seconds() - c

    def result(self, unit: str, n: int, **extra: Any) -> dict[str, Any]:
        """``{unit: n, seconds, cpu_seconds, <unit>_per_s, cpu_ms_per_<unit[:-1]>}``."""
        return {
            unit: n,
            "seconds": round(self.wall, 3),
            "cpu_seconds": round(self.cpu, 3),
            f"{unit}_per_s": rate(n, self.wall),
            f"cpu_ms_per_{unit[:-1]}": round(1000 * self.cpu / n, 2) if n else None,
            **extra,
        }


def bench_render(pdfs: list[Path], cfg: Any) -> dict[str, Any]:
    """Plain PyMuPDF loop: open, get_pixmap at the profile's DPI for every page (one process, one thread)."""
    import pymupdf

    from mmrag.ingest.pdf import render_zoom

    pages, pixels, clock = 0, 0, Clock()
    with clock.timed():
        for p in pdfs:
            with pymupdf.open(p) as doc:
                for page in doc:
                    z = render_zoom(page.rect.width, page.rect.height, cfg.dpi, cfg.max_pixels)
                    pix = page.get_pixmap(matrix=pymupdf.Matrix(z, z), colorspace=pymupdf.csRGB, alpha=False)
                    pages += 1
                    pixels += pix.width * pix.height
    return {
        "what": f"PyMuPDF get_pixmap at {cfg.dpi} dpi, RGB, one thread",
        **clock.result("pages", pages, mean_megapixels=round(pixels / max(1, pages) / 1e6, 2)),
    }


def bench_decode(videos: list[Path], plan: dict[str, list[list[int]]]) -> dict[str, Any]:
    """Plain decord loop: open each video, read the frame timestamps, get_batch each clip's sampled frames."""
    import numpy as np
    from decord import VideoReader, cpu

    clips, clock = 0, Clock()
    with clock.timed():
        for v in videos:
            vr = VideoReader(str(v), ctx=cpu(0), num_threads=1)
            n = len(vr)
            np.asarray(vr.get_frame_timestamp(list(range(n))))
            for idx in plan[str(v)]:
                vr.get_batch(idx).asnumpy()
                clips += 1
    return {
        "what": "decord VideoReader(num_threads=1) + timestamps + get_batch of the reader's frame indices",
        **clock.result("clips", clips),
    }


def bench_encoder(
    pdfs: list[Path], videos: list[Path], plan: dict[str, list[list[int]]], cfg: Any, repeats: int
) -> dict[str, Any]:
    """``ColPaliEncoder.embed_images`` at the profile's batch size; only the embed calls are timed."""
    import numpy as np
    import torch
    from decord import VideoReader, cpu
    from PIL import Image

    from mmrag.imaging import fit_pixels
    from mmrag.models.encoder import ColPaliEncoder

    bs = cfg.ingest.embed.batch_size
    enc_pixels = cfg.models.retriever.max_image_pixels
    t0 = time.perf_counter()
    enc = ColPaliEncoder.from_config(cfg.models, batch_size=bs)
    load_s = time.perf_counter() - t0
    enc.embed_images([Image.new("RGB", (200, 260), "white")] * bs)  # warm-up
    out: dict[str, Any] = {"load_seconds": round(load_s, 2), "batch_size": bs, "torch_threads": torch.get_num_threads()}

    def timed_pages(small: bool) -> dict[str, Any]:
        batch: list[Any] = []
        n, tokens, clock = 0, 0, Clock()
        for img in [*iter_rendered(pdfs, cfg.ingest.dpi, cfg.ingest.max_pixels), None]:
            if img is not None:
                batch.append(fit_pixels(img, enc_pixels) if small else img)
            if batch and (len(batch) == bs or img is None):
                with clock.timed():
                    vecs = enc.embed_images(batch)
                n, tokens, batch = n + len(batch), tokens + sum(len(v) for v in vecs), []
        return clock.result("pages", n, mean_tokens=round(tokens / max(1, n), 1))

    out["pages"] = {
        "what": f"pages rendered at {cfg.ingest.dpi} dpi (full size)",
        **median_run(repeats, lambda: timed_pages(False)),
    }
    out["pages_encoder_sized"] = {
        "what": f"the same pages scaled to <= {enc_pixels} pixels first (what EmbedStage receives)",
        **median_run(repeats, lambda: timed_pages(True)),
    }
    clip_frames = []
    for v in videos:
        vr = VideoReader(str(v), ctx=cpu(0), num_threads=1)
        for idx in plan[str(v)]:
            clip_frames.append([fit_pixels(Image.fromarray(f), enc_pixels) for f in vr.get_batch(idx).asnumpy()])

    def timed_clips() -> dict[str, Any]:
        clock = Clock()
        with clock.timed():
            for frames in clip_frames:
                np.concatenate(enc.embed_images(frames))
        return clock.result("clips", len(clip_frames))

    out["clips"] = {
        "what": f"each clip's {cfg.ingest.frames_per_clip} sampled frames, scaled to <= {enc_pixels} pixels",
        **median_run(repeats, timed_clips),
    }
    return out


def bench_ocr(videos: list[Path], plan: dict[str, list[list[int]]], cfg: Any) -> dict[str, Any]:
    """tesseract on each clip's keyframe, as ``ingest.ocr: auto`` does (one call at a time, one thread)."""
    from decord import VideoReader, cpu
    from PIL import Image

    from mmrag.ingest.ocr import ocr_available, ocr_image

    if cfg.ingest.ocr == "never" or not ocr_available():
        return {"what": "OCR is off (ingest.ocr: never) or tesseract is missing", "clips_per_s": None}
    keys = []
    for v in videos:
        vr = VideoReader(str(v), ctx=cpu(0), num_threads=1)
        for idx in plan[str(v)]:
            keys.append(Image.fromarray(vr[idx[len(idx) // 2]].asnumpy()))
    clock = Clock()
    with clock.timed():
        for k in keys:
            ocr_image(k, cfg.ingest.ocr_lang)
    return {
        "what": "mmrag.ingest.ocr.ocr_image (tesseract, OMP_THREAD_LIMIT=1) on each clip's keyframe",
        **clock.result("clips", len(keys)),
    }


def _read_stage(cfg: Any) -> Any:
    from mmrag.ingest.stages import ReadStage

    return ReadStage(cfg.ingest.model_dump(), cfg.models.retriever.max_image_pixels)


def _embed_stage(cfg: Any) -> Any:
    from mmrag.ingest.stages import EmbedStage

    return EmbedStage(
        cfg.models.model_dump(),
        token_pooling_factor=cfg.ingest.token_pooling_factor,
        batch_size=cfg.ingest.embed.batch_size,
    )


def bench_read_stage(pdfs: list[Path], videos: list[Path], cfg: Any) -> tuple[dict[str, Any], list[Any]]:
    """Our ReadStage alone, in this process: the full read (render/decode, text, OCR, thumbnail, JPEGs, frames)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stage = _read_stage(cfg)
    tables: list[Any] = []
    out: dict[str, Any] = {}
    for label, files, kind, unit in (("pdf", pdfs, "pdf", "pages"), ("video", videos, "video", "clips")):
        n, clock = 0, Clock()
        with clock.timed():
            for f in files:
                row = {"collection": COLLECTION, "source_uri": str(f), "content_hash": "0" * 64, "doc_kind": kind}
                for tbl in stage(pa.Table.from_pylist([row])):
                    n += pc.sum(pc.equal(tbl["kind"], "item")).as_py() or 0
                    tables.append(tbl)
        out[label] = clock.result(unit, n)
    out["what"] = "ReadStage.__call__ on one document at a time, one process (incl. OCR of clip keyframes)"
    return out, tables


def bench_embed_stage(tables: list[Any], cfg: Any) -> dict[str, Any]:
    """Our EmbedStage alone on the ReadStage's output, in batches of the profile's embed batch size."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t0 = time.perf_counter()
    stage = _embed_stage(cfg)
    load_s = time.perf_counter() - t0
    rows = pa.concat_tables(tables)
    items = rows.filter(pc.equal(rows["kind"], "item"))
    bs = cfg.ingest.embed.batch_size
    stage(items.slice(0, bs))  # warm-up
    out: dict[str, Any] = {"load_seconds": round(load_s, 2), "what": "EmbedStage.__call__ on ReadStage output"}
    for modality, unit in (("page", "pages"), ("clip", "clips")):
        part = items.filter(pc.equal(items["modality"], modality))
        clock = Clock()
        with clock.timed():
            for i in range(0, part.num_rows, bs):
                stage(part.slice(i, bs))
        out[unit] = clock.result(unit, part.num_rows)
    return out


# ------------------------------------------------------------------------------------------------ byaldi
def bench_byaldi(pdfs: list[Path], checkpoint: Path, workdir: Path) -> dict[str, Any]:
    """byaldi 0.0.7 indexing the PDFs (a directory of links to them) with the same checkpoint, on CPU.

    byaldi loads a local checkpoint only when its path contains "colqwen2" and ``device="cpu"`` is passed. If
    byaldi cannot be imported or fails, its indexing loop is re-implemented (clearly labelled in the result).
    """
    src = workdir / "byaldi_input"
    src.mkdir(parents=True, exist_ok=True)
    for p in pdfs:
        (src / p.name).symlink_to(p.resolve())
    ckpt = checkpoint
    if "colqwen2" not in str(ckpt).lower():
        ckpt = workdir / "colqwen2"
        ckpt.symlink_to(checkpoint.resolve())
    n_pages = sum(count_pages(pdfs, 10**9).values())
    try:
        t0 = time.perf_counter()
        from byaldi import RAGMultiModalModel

        import_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with quiet():
            model = RAGMultiModalModel.from_pretrained(
                str(ckpt), device="cpu", verbose=0, index_root=str(workdir / "byaldi_index")
            )
        load_s = time.perf_counter() - t0
        clock = Clock()
        with quiet(), clock.timed():
            model.index(str(src), index_name="bench", overwrite=True)
        inner = model.model
        n = len(inner.indexed_embeddings)
        if n != n_pages:
            raise RuntimeError(f"byaldi indexed {n} pages, expected {n_pages}")
        return {
            "implementation": f"byaldi {metadata.version('byaldi')} (PyPI), RAGMultiModalModel.index",
            "import_seconds": round(import_s, 2),
            "load_seconds": round(load_s, 2),
            **clock.result("pages", n),
            "pages_per_s_with_load": rate(n, clock.wall + load_s),
            "dtype": str(inner.model.dtype),
            "notes": "pdf2image/pdftoppm at its default 200 dpi to PPM files (thread_count=cpu_count-1), "
            "one page per forward pass, weights forced to bfloat16, index exported with torch.save",
        }
    except Exception as e:
        reason = f"{type(e).__name__}: {e}"
        log(f"byaldi failed ({reason}); running the labelled re-implementation of its indexing loop")
        traceback.print_exc()
        out = _byaldi_like(pdfs, ckpt)
        out["byaldi_error"] = reason
        return out


def _byaldi_like(pdfs: list[Path], checkpoint: Path) -> dict[str, Any]:
    """byaldi 0.0.7's ``_process_and_add_to_index`` loop, re-implemented: pdf2image at 200 dpi to files,
    ColQwen2 in bfloat16, one page per ``process_images`` + forward, embeddings kept as CPU tensors."""
    import torch
    from colpali_engine.models import ColQwen2, ColQwen2Processor
    from pdf2image import convert_from_path
    from PIL import Image

    t0 = time.perf_counter()
    model = ColQwen2.from_pretrained(str(checkpoint), dtype=torch.bfloat16).eval()
    proc = ColQwen2Processor.from_pretrained(str(checkpoint))
    load_s = time.perf_counter() - t0
    embeddings: list[Any] = []
    clock = Clock()
    with clock.timed():
        for p in pdfs:
            with tempfile.TemporaryDirectory() as d:
                threads = max(1, (os.cpu_count() or 2) - 1)
                for path in convert_from_path(p, thread_count=threads, output_folder=d, paths_only=True):
                    batch = proc.process_images([Image.open(path)])
                    with torch.inference_mode():
                        batch = {
                            k: v.to(model.dtype) if v.dtype in (torch.float16, torch.bfloat16, torch.float32) else v
                            for k, v in batch.items()
                        }
                        embeddings.extend(torch.unbind(model(**batch).to("cpu")))
    return {
        "implementation": "RE-IMPLEMENTATION of byaldi 0.0.7's indexing loop (byaldi itself could not run)",
        "load_seconds": round(load_s, 2),
        **clock.result("pages", len(embeddings)),
        "pages_per_s_with_load": rate(len(embeddings), clock.wall + load_s),
        "dtype": "torch.bfloat16",
    }


# ---------------------------------------------------------------------------------------------- pipeline
def replicate(files: list[Path], copies: int, workdir: Path) -> list[Path]:
    """``copies`` of the file set under new names (distinct documents for the store, same content);
    the first copy is the original files themselves."""
    out = list(files)
    for i in range(1, copies):
        d = workdir / f"copy{i}"
        d.mkdir(parents=True, exist_ok=True)
        for f in files:
            dst = d / f.name
            if not dst.exists():
                try:
                    os.link(f, dst)
                except OSError:
                    shutil.copyfile(f, dst)
            out.append(dst)
    return out


def bench_pipeline(
    runs: list[tuple[str, list[Path], list[int]]], workdir: Path, overrides: dict[str, Any]
) -> dict[str, Any]:
    """``ray.init`` timed alone, then per modality one ``ingest`` per size (the file set x each replica count)
    into a fresh store. Steady state is the marginal rate between the two sizes: the extra items over the
    extra seconds, which cancels the start-up both runs share (actors, model load, the first rows)."""
    import ray

    from mmrag.config import load_config
    from mmrag.ingest import pipeline

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    init = getattr(pipeline, "init_ray", None) or pipeline._ray_init  # _ray_init: before issue #3's changes
    init()
    out["ray_init_seconds"] = round(time.perf_counter() - t0, 2)
    out["ray_cpus"] = ray.cluster_resources().get("CPU")
    for name, files, replicas in runs:
        sizes = []
        for r in replicas:
            inputs = replicate(files, r, workdir / name)
            db = workdir / f"lancedb-{name}-x{r}"
            cfg = load_config(PROFILE, {**overrides, "store": {"uri": str(db)}})
            timeline: list[tuple[float, int]] = []
            load_before = load_average()
            t0 = time.perf_counter()

            def progress(c: dict[str, int], t0: float = t0, timeline: list = timeline) -> None:
                timeline.append((time.perf_counter() - t0, c["pages"] + c["images"] + c["clips"]))

            with TreeCpu() as cpu_used:
                summary = pipeline.ingest([str(f) for f in inputs], cfg, collection=COLLECTION, progress=progress)
            wall = time.perf_counter() - t0
            cpu = cpu_used.seconds
            shutil.rmtree(db, ignore_errors=True)
            run = {
                "replicas": r,
                **_run_numbers(summary, wall, timeline),
                "cpu_seconds": round(cpu, 2),
                "load_average": [load_before, load_average()],
            }
            sizes.append(run)
            log(f"pipeline {name} x{r}: {json.dumps({k: v for k, v in run.items() if k != 'stage_seconds'})}")
        out[name] = {
            "runs": sizes,
            "config": {"read": cfg.ingest.read.model_dump(), "embed": cfg.ingest.embed.model_dump()},
        }
        out[name].update(_steady(sizes))
    return out


def _run_numbers(summary: Any, wall: float, timeline: list[tuple[float, int]]) -> dict[str, Any]:
    items = summary.pages + summary.images + summary.clips
    arrivals = [(t, n) for t, n in timeline if n > 0]
    first = arrivals[0][0] if arrivals else wall
    half = next((t for t, n in arrivals if n >= items / 2), wall)
    last = arrivals[-1][0] if arrivals else wall
    return {
        "pages": summary.pages,
        "clips": summary.clips,
        "images": summary.images,
        "items": items,
        "errors": len(summary.errors),
        "seconds": round(wall, 3),
        "items_per_s": rate(items, wall),
        "first_rows_seconds": round(first, 3),
        # rate over the second half of the items: close to steady state once the run is long
        "late_items_per_s": rate(items - items / 2, last - half),
        "stage_seconds": {k: round(v, 3) for k, v in summary.stage_seconds.items()},
        "batches": len(arrivals),
    }


def _steady(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Steady state from the two largest runs (both long enough that reading outlasts the encoder's start-up,
    which a small run hides entirely); start-up is what the largest run spent beyond its items at that rate."""
    out: dict[str, Any] = {"whole_call_items_per_s": sizes[0]["items_per_s"]}
    if len(sizes) < 2:
        return out
    small, big = sizes[-2], sizes[-1]
    if big["items"] <= small["items"] or big["seconds"] <= small["seconds"]:
        return out
    steady = (big["items"] - small["items"]) / (big["seconds"] - small["seconds"])
    out["steady_items_per_s"] = round(steady, 2)
    out["startup_seconds"] = round(big["seconds"] - big["items"] / steady, 2)
    # CPU per extra item (all processes of the run: driver, raylet, GCS, workers) does not depend on what
    # else the machine runs; the usable CPUs divided by it is what the pipeline could sustain alone here.
    cpu_per_item = (big["cpu_seconds"] - small["cpu_seconds"]) / (big["items"] - small["items"])
    out["cpu_ms_per_item"] = round(1000 * cpu_per_item, 2)
    out["startup_cpu_seconds"] = round(big["cpu_seconds"] - big["items"] * cpu_per_item, 2)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    out["cpu_bound_items_per_s"] = round(cpus / cpu_per_item, 1) if cpu_per_item > 0 else None
    return out


# ------------------------------------------------------------------------------------------------ report
def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Issue #3's targets: pipeline (steady state) >= 0.7x its slowest stage alone, and >= 3x byaldi (pages/s)."""
    alone = results["stages_alone"]
    pipe = results["pipeline"]
    out: dict[str, Any] = {}

    def judge(unit: str, run: str, stages: dict[str, float | None]) -> None:
        stages = {k: v for k, v in stages.items() if v}
        if run not in pipe or not stages or not pipe[run].get("steady_items_per_s"):
            return
        slowest = min(stages, key=lambda k: stages[k])
        steady, whole = pipe[run]["steady_items_per_s"], pipe[run]["whole_call_items_per_s"]
        out[unit] = {
            "stages_alone": stages,
            "slowest_stage": slowest,
            "pipeline_steady": steady,
            "pipeline_whole_call": whole,
            "ratio_steady": round(steady / stages[slowest], 2),
            "ratio_whole_call": round(whole / stages[slowest], 2),
            "target": TARGET_VS_SLOWEST_STAGE,
            "met": steady / stages[slowest] >= TARGET_VS_SLOWEST_STAGE,
        }

    if "render" in alone and "encoder" in alone:
        judge(
            "pages_per_s",
            "pdf",
            {"render": alone["render"]["pages_per_s"], "encoder": alone["encoder"]["pages"]["pages_per_s"]},
        )
        # Stricter: the encoder fed what the pipeline feeds it (pages scaled to its pixel budget).
        sized = alone["encoder"].get("pages_encoder_sized", {}).get("pages_per_s")
        judge("pages_per_s_encoder_sized_pages", "pdf", {"render": alone["render"]["pages_per_s"], "encoder": sized})
    if "read_stage" in alone and "embed_stage" in alone:
        rs, es = alone["read_stage"], alone["embed_stage"]
        judge(
            "pages_per_s_vs_our_stages", "pdf", {"read": rs["pdf"]["pages_per_s"], "embed": es["pages"]["pages_per_s"]}
        )
        judge(
            "clips_per_s_vs_our_stages",
            "video",
            {"read": rs["video"]["clips_per_s"], "embed": es["clips"]["clips_per_s"]},
        )
    if "decode" in alone and "encoder" in alone:
        stages = {"decode": alone["decode"]["clips_per_s"], "encoder": alone["encoder"]["clips"]["clips_per_s"]}
        judge("clips_per_s", "video", stages)
        if alone.get("ocr", {}).get("clips_per_s"):
            judge("clips_per_s_incl_ocr_stage", "video", {**stages, "ocr": alone["ocr"]["clips_per_s"]})
    by = results.get("byaldi", {})
    if "pdf" in pipe and by.get("pages_per_s") and pipe["pdf"].get("steady_items_per_s"):
        steady, whole = pipe["pdf"]["steady_items_per_s"], pipe["pdf"]["whole_call_items_per_s"]
        out["vs_byaldi_pages_per_s"] = {
            "byaldi": by["pages_per_s"],
            "pipeline_steady": steady,
            "pipeline_whole_call": whole,
            "ratio_steady": round(steady / by["pages_per_s"], 2),
            "ratio_whole_call": round(whole / by["pages_per_s"], 2),
            "target": TARGET_VS_BYALDI,
            "met": steady / by["pages_per_s"] >= TARGET_VS_BYALDI,
        }
    return out


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def _cell(x: Any) -> str:
    return "-" if x is None else str(x)


def markdown(r: dict[str, Any]) -> str:
    m, a, p, c = r["machine"], r["stages_alone"], r["pipeline"], r["config"]
    inp = r["inputs"]
    lines = [
        "# Ingestion benchmark",
        "",
        f"- date: {r['date']}",
        f"- command: `{r['command']}`",
        f"- machine: {m['cpus_usable']} CPUs ({m['cpu_model']}; {', '.join(m['simd'])}), {m['mem_total']}, no GPU",
        f"- load average (1/5/15 min): {r['load_average']['start']} at start, {r['load_average']['end']} at end "
        "(the machine is shared; see each pipeline run's load below)",
        f"- versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items() if v)}",
        f"- inputs ({inp['source']}): {inp['pages']} pages ({_counts(inp['pages_per_pdf'])}); "
        f"{inp['clips']} clips ({_counts(inp['clips_per_video'])})",
        f"- profile {PROFILE}: {c['dpi']} dpi, {c['frames_per_clip']} frames per {c['clip_seconds']} s clip, "
        f"OCR {c['ocr']}, encoder <= {c['encoder_pixels']} pixels, tiny ColQwen2 at {c['checkpoint']}; "
        f"read stage {c['read']}, embed stage {c['embed']}",
        "",
        "Rates are items per wall-clock second. Stages alone run in this process without Ray (median of "
        f"{r['repeats']} runs). The pipeline's steady state is the marginal rate between an ingest of the file set "
        "and one of several copies of it (extra items / extra seconds); its whole-call rate includes its start-up "
        "(actors, model load) but not `ray.init`.",
        "",
        "## Throughput",
        "",
        "| method | pages/s | clips/s | notes |",
        "|---|---:|---:|---|",
    ]

    def row(name: str, pages: Any, clips: Any, note: str) -> None:
        lines.append(f"| {name} | {_cell(pages)} | {_cell(clips)} | {note} |")

    pdf, vid = p.get("pdf", {}), p.get("video", {})
    if pdf or vid:
        row(
            "**pipeline, steady state**",
            pdf.get("steady_items_per_s"),
            vid.get("steady_items_per_s"),
            f"start-up of an ingest call: {pdf.get('startup_seconds')} s (PDFs), {vid.get('startup_seconds')} s "
            f"(videos); `ray.init` {p['ray_init_seconds']} s",
        )
        row(
            "pipeline, whole ingest call",
            pdf.get("whole_call_items_per_s"),
            vid.get("whole_call_items_per_s"),
            "the file set once, start-up included",
        )
    if "render" in a:
        row("PyMuPDF render alone", a["render"]["pages_per_s"], None, a["render"]["what"])
    if "decode" in a:
        row("decord sampling alone", None, a["decode"]["clips_per_s"], a["decode"]["what"])
    if "ocr" in a:
        row("OCR of keyframes alone", None, a["ocr"].get("clips_per_s"), a["ocr"]["what"])
    if "encoder" in a:
        e = a["encoder"]
        row(
            "encoder alone",
            e["pages"]["pages_per_s"],
            e["clips"]["clips_per_s"],
            f"ColPaliEncoder.embed_images, batch {e['batch_size']}, {e['torch_threads']} torch threads; "
            f"{e['pages']['what']}; {e['clips']['what']}",
        )
        row("encoder alone, encoder-sized pages", e["pages_encoder_sized"]["pages_per_s"], None, "what EmbedStage gets")
    if "read_stage" in a:
        rs = a["read_stage"]
        row("our ReadStage alone", rs["pdf"]["pages_per_s"], rs["video"]["clips_per_s"], rs["what"])
    if "embed_stage" in a:
        es = a["embed_stage"]
        row("our EmbedStage alone", es["pages"]["pages_per_s"], es["clips"]["clips_per_s"], es["what"])
    if r.get("byaldi"):
        b = r["byaldi"]
        row(
            "byaldi",
            b.get("pages_per_s"),
            None,
            f"{b.get('implementation', '')}; {b.get('notes', '')}; model load {b.get('load_seconds')} s not included "
            f"({b.get('pages_per_s_with_load')} pages/s with it)",
        )
    lines += ["", "## Targets", ""]
    for k, v in r["verdict"].items():
        met = "MET" if v.get("met") else "MISSED"
        lines.append(f"- **{k}: {met}** — {json.dumps({x: y for x, y in v.items() if x != 'met'})}")
    lines += [
        "",
        "How to read these: each stage alone had both cores to itself (the encoder runs 2 torch threads); the "
        "pipeline runs reading (render, text layer, thumbnail, JPEGs, OCR), embedding and the LanceDB writes at "
        "the same time on the same 2 cores, so on this machine its ceiling is the sum of the stages' CPU time, not "
        "the slowest stage. From the pipeline's own CPU seconds per extra item (all its processes), that ceiling "
        "is "
        + ", ".join(
            f"{p[k]['cpu_bound_items_per_s']} {unit}/s ({p[k]['cpu_ms_per_item']} CPU-ms per item)"
            for k, unit in (("pdf", "pages"), ("video", "clips"))
            if p.get(k, {}).get("cpu_bound_items_per_s")
        )
        + ". The first comparison is the issue's (render vs the encoder on the same rendered pages); "
        "`_encoder_sized_pages` feeds the encoder the small pages the pipeline actually gives it; "
        "`_vs_our_stages` compares with our own ReadStage and EmbedStage alone, which do all the work the pipeline "
        "does per item.",
    ]
    lines += ["", "## Pipeline runs", ""]
    lines.append("| run | items | seconds | items/s | first rows at | late items/s | busy seconds per stage | load |")
    lines.append("|---|---:|---:|---:|---:|---:|---|---|")
    for name in ("pdf", "video"):
        for x in p.get(name, {}).get("runs", []):
            lines.append(
                f"| {name} x{x['replicas']} | {x['items']} | {x['seconds']} | {x['items_per_s']} | "
                f"{x['first_rows_seconds']} s | {x['late_items_per_s']} | {x['stage_seconds']} | {x['load_average']} |"
            )
    lines += [
        "",
        "Busy seconds: `read` and `embed` summed over the stage's workers, `write`/`plan`/`index` on the driver. "
        "Late items/s: the rate over the second half of a run's items.",
        "",
        "Raw numbers: the JSON file of the same name.",
        "",
    ]
    lines += shots_section()
    return "\n".join(lines)


def shots_section() -> list[str]:
    """Clips that follow the content: the last ``benchmarks.ingest_shots`` run (its own file and command)."""
    path = ROOT / "benchmarks" / "results" / "ingest_shots.json"
    if not path.is_file():
        return []
    from benchmarks.ingest_shots import section

    return section(json.loads(path.read_text()))


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pdfs", nargs="*", help="PDFs to use (default: four vignettes of the shared corpus)")
    ap.add_argument("--videos", nargs="*", help="videos to use (default: cup.mp4, box.mp4, vtest.avi)")
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="corpus with pdf/ and video/ (default %(default)s)")
    ap.add_argument("--large", action="store_true", help="add gnuplot.pdf (311 pages) to the default PDFs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ingest.json"), help="JSON output")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each short stage-alone measurement")
    ap.add_argument(
        "--pdf-replicas",
        type=int,
        nargs="+",
        default=[1, 6, 12],
        metavar="N",
        help="the pipeline ingests the PDFs x N (copies under other names) for each N: the first run gives the "
        "whole-call rate, the marginal rate between the last two the steady state (default: %(default)s)",
    )
    ap.add_argument("--video-replicas", type=int, nargs="+", default=[1, 6, 12], metavar="N", help="likewise")
    ap.add_argument(
        "--only",
        nargs="*",
        choices=["stages", "byaldi", "pipeline", "speech"],
        help="run only these parts (for iterating; the Markdown report is written only for a full run)",
    )
    ap.add_argument("--speech-videos", type=int, default=8, help="videos with speech made for --only speech")
    ap.add_argument("--speech-seconds", type=float, default=60.0, help="length of each of them, seconds")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ingest.read.concurrency=2",
        help="config override for every measurement (dotted path = YAML value); repeatable",
    )
    ap.add_argument(
        "--rejudge",
        action="store_true",
        help="measure nothing: recompute the targets and the Markdown report of the existing --out JSON",
    )
    return ap.parse_args(argv)


def _overrides(pairs: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        node = out
        parts = key.split(".")
        for k in parts[:-1]:
            node = node.setdefault(k, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def rejudge(path: Path) -> None:
    """Recompute the verdict and the Markdown report of a finished run's JSON (no measurement is repeated)."""
    results = json.loads(path.read_text())
    results["verdict"] = verdict(results)
    path.write_text(json.dumps(results, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(results) + _speech_md(results))


def _speech_md(results: dict[str, Any]) -> str:
    """The speech section of the report, from the ``speech`` part of the results (kept across other runs)."""
    if "speech" not in results:
        return ""
    from benchmarks.ingest_speech import markdown as speech_markdown

    return "\n" + speech_markdown(results["speech"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rejudge:
        rejudge(Path(args.out))
        return 0
    only = set(args.only or ["stages", "byaldi", "pipeline"])
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = " ".join([shlex.quote(sys.executable), "-m", "benchmarks.ingest", *map(shlex.quote, sys.argv[1:])])
    if only == {"speech"}:
        from benchmarks.ingest_speech import run as run_speech

        speech = run_speech(args, _overrides(args.set), Path(args.out), command)
        print(json.dumps(speech["verdict"], indent=2))
        return 0
    if "speech" in only:
        raise SystemExit("--only speech runs alone (it adds its part to the existing results)")

    from mmrag.config import load_config
    from mmrag.models.tiny import build_tiny

    t_start = time.perf_counter()
    pdfs, videos, source = resolve_inputs(args)
    overrides = _overrides(args.set)
    cfg = load_config(PROFILE, overrides)
    build_tiny(cfg.models.tiny_dir)
    checkpoint = Path(cfg.models.resolve(cfg.models.retriever.model))
    pages = count_pages(pdfs, cfg.ingest.max_pages)
    plan = clip_plan(videos, cfg.ingest)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "load_average": {"start": load_average()},
        "versions": versions(),
        "repeats": args.repeats,
        "inputs": {
            "source": source,
            "pdfs": [str(p) for p in pdfs],
            "videos": [str(v) for v in videos],
            "pages": sum(pages.values()),
            "pages_per_pdf": {Path(k).name: v for k, v in pages.items()},
            "clips": sum(len(c) for c in plan.values()),
            "clips_per_video": {Path(k).name: len(v) for k, v in plan.items()},
        },
        "config": {
            "profile": PROFILE,
            "overrides": overrides,
            "checkpoint": str(checkpoint),
            "dpi": cfg.ingest.dpi,
            "clip_seconds": cfg.ingest.clip_seconds,
            "frames_per_clip": cfg.ingest.frames_per_clip,
            "ocr": cfg.ingest.ocr,
            "encoder_pixels": cfg.models.retriever.max_image_pixels,
            "read": cfg.ingest.read.model_dump(),
            "embed": cfg.ingest.embed.model_dump(),
        },
        "stages_alone": {},
        "pipeline": {},
    }
    log(f"inputs: {results['inputs']['pages']} pages, {results['inputs']['clips']} clips from {source}")
    workdir = Path(tempfile.mkdtemp(prefix="mmrag-bench-"))
    alone = results["stages_alone"]
    n = args.repeats

    def read_and_embed() -> None:
        alone["read_stage"], tables = bench_read_stage(pdfs, videos, cfg)
        alone["embed_stage"] = bench_embed_stage(tables, cfg)

    steps: list[tuple[str, Callable[[], Any]]] = []
    if "stages" in only:
        steps += [
            (
                "render alone",
                lambda: alone.__setitem__("render", median_run(n, lambda: bench_render(pdfs, cfg.ingest))),
            ),
            ("decode alone", lambda: alone.__setitem__("decode", median_run(n, lambda: bench_decode(videos, plan)))),
            ("ocr alone", lambda: alone.__setitem__("ocr", bench_ocr(videos, plan, cfg))),
            ("encoder alone", lambda: alone.__setitem__("encoder", bench_encoder(pdfs, videos, plan, cfg, n))),
            ("read/embed stages alone", read_and_embed),
        ]
    if "byaldi" in only:
        steps.append(("byaldi", lambda: results.__setitem__("byaldi", bench_byaldi(pdfs, checkpoint, workdir))))
    if "pipeline" in only:
        runs = [("pdf", pdfs, args.pdf_replicas), ("video", videos, args.video_replicas)]
        steps.append(("pipeline", lambda: results.__setitem__("pipeline", bench_pipeline(runs, workdir, overrides))))
    try:
        for name, step in steps:
            t0 = time.perf_counter()
            log(f"{name} ... (load {load_average()})")
            step()
            log(f"{name} done in {time.perf_counter() - t0:.1f} s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_average"]["end"] = load_average()
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["verdict"] = verdict(results)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # the speech part is measured apart (--only speech): keep it
        previous = json.loads(out.read_text())
        if "speech" in previous:
            results["speech"] = previous["speech"]
    out.write_text(json.dumps(results, indent=2) + "\n")
    if only == {"stages", "byaldi", "pipeline"}:
        out.with_suffix(".md").write_text(markdown(results) + _speech_md(results))
    log(f"wrote {out} ({results['seconds']} s in all)")
    print(json.dumps(results["verdict"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
