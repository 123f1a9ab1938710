"""GPU check: the gpu profile's architectures, as tiny seeded checkpoints, measured on a CUDA GPU in one short run.

    bash benchmarks/gpu_check.sh                 # installs the .[gpu] extra if missing, then runs this
    python -m benchmarks.gpu_check [--device auto|cuda|cpu] [--items 100000] [--answers 20]

Runs the ``gpu-tiny`` profile (the gpu profile's deployments, autoscaling, image sizes and batch sizes, with tiny
random-weight ColQwen2.5 + PEFT adapter and Qwen2.5-VL checkpoints) moved onto the device:

1. **encoder**: pages of the bundled sample PDF rendered as ingestion renders them (144 dpi, at most 602,112 pixels)
   and embedded by the tiny ColQwen2.5 in the ingest batch size: pages/s and peak GPU memory; beside it, the real
   ColQwen2.5's pages/s estimated on paper from its FLOPs per page and the GPU's peak (stated assumptions);
2. **ingest**: ``mmrag ingest`` of the bundled sample (PDF + video) through Ray Data, the encoder actors on the GPU;
3. **search**: the in-memory search index over ``--items`` synthetic ColPali-like items (benchmarks/retrieval.py's
   generator): p50/p99 and recall@10 against exact MaxSim;
4. **answer**: the app deployed (vLLM serving the tiny Qwen2.5-VL on the GPU), ``--answers`` streamed answers over
   the ingested sample: time to first token p50/p99.

Writes ``<out>/gpu_check.json`` and ``.md``. Without CUDA (``--device cpu``, or auto on a machine without a GPU) it
runs the same steps on the CPU at toy sizes: that path is what CI tests; its figures say nothing about a GPU.
Targets (issue #20): ingestion ≥ 50 pages/s per GPU with the tiny ColQwen2.5 at production image sizes; search p50
at 100k items and answer TTFT reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "deploy" / "sample"
#: what is ingested and rendered: the bundled sample on a GPU; the 11-page test paper and the short test video on
#: the CPU fallback (the sample's 311 pages take minutes on 2 cores)
INPUTS = {
    "cuda": [SAMPLE / "gnuplot.pdf", SAMPLE / "cup.mp4"],
    "cpu": [ROOT / "tests/data/coin.pdf", SAMPLE / "cup.mp4"],
}

#: The real ColQwen2.5 (vidore/colqwen2.5-v0.2 over Qwen2.5-VL-3B): parameters of its language model and vision
#: tower (Qwen2.5-VL-3B-Instruct's published config), and what one page at 602,112 pixels costs it: 768 merged
#: visual tokens (+~20 of prompt) through the language model, 3,072 patches through the vision tower.
REAL_LM_PARAMS = 3.09e9
REAL_VISION_PARAMS = 0.67e9
REAL_LM_TOKENS = 788
REAL_VISION_PATCHES = 3072
#: dense bf16 peak (FLOP/s) of GPUs this may meet; the model-FLOPs utilisation assumed for the estimate
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
ASSUMED_MFU = 0.35


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def device_info(device: str) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        out.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), count=torch.cuda.device_count())
    return out


def profile_config(device: str, tmp: Path, port: int) -> Any:
    """The gpu-tiny profile, moved onto ``device`` where it is CUDA (dtype, placement), with its store in ``tmp``."""
    from mmrag.config import load_config

    over: dict[str, Any] = {"store": {"uri": str(tmp / "db")}, "server": {"port": port, "auth": "none"}}
    if device == "cuda":
        over["models"] = {
            "retriever": {"device": "cuda", "dtype": "bfloat16", "attn_implementation": "sdpa"},
            "generator": {"device": "cuda", "dtype": "bfloat16"},
            "text": {"device": "cuda"},
        }
        over["ingest"] = {"embed": {"num_gpus": 0.5}, "text_embed": {"num_gpus": 0.25}}
        over["generator"] = {"num_gpus": 1}
        over["retriever"] = {"num_gpus": 0.1}
        over["reranker"] = {"num_gpus": 0.1}
        over["ingestor"] = {"num_gpus": 0.1}
    else:  # the CPU fallback on a small machine: one actor per ingest stage, not the gpu profile's pools
        over["ingest"] = {"read": {"concurrency": 1}, "embed": {"concurrency": 1}, "text_embed": {"concurrency": 1}}
    return load_config("gpu-tiny", over)


def bench_encoder(cfg: Any, device: str, pages: int) -> dict[str, Any]:
    """Pages/s of the tiny ColQwen2.5 at the profile's image size and batch size, and peak GPU memory."""
    import torch

    from benchmarks.ingest import iter_rendered
    from mmrag.models.encoder import ColPaliEncoder
    from mmrag.models.tiny import build_tiny

    build_tiny(cfg.models.tiny_dir)
    bs = cfg.ingest.embed.batch_size
    enc = ColPaliEncoder.from_config(cfg.models, batch_size=bs)
    rendered = list(iter_rendered(INPUTS[device][:1], cfg.ingest.dpi, cfg.models.retriever.max_image_pixels))
    images = [rendered[i % len(rendered)] for i in range(pages)]
    enc.embed_images(images[:bs])  # warm-up: kernels, allocator
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    tokens = 0
    for s in range(0, len(images), bs):
        tokens += sum(len(v) for v in enc.embed_images(images[s : s + bs]))
    seconds = time.perf_counter() - t0
    out = {
        "pages": len(images),
        "batch_size": bs,
        "image_size": list(images[0].size),
        "seconds": seconds,
        "pages_per_s": len(images) / seconds,
        "tokens_per_page": tokens / len(images),
    }
    if device == "cuda":
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def paper_estimate(info: dict[str, Any]) -> dict[str, Any]:
    """The real ColQwen2.5's pages/s on this GPU, from FLOPs per page and the GPU's bf16 peak at an assumed MFU."""
    flops = 2 * REAL_LM_PARAMS * REAL_LM_TOKENS + 2 * REAL_VISION_PARAMS * REAL_VISION_PATCHES
    name = str(info.get("name", ""))
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {
        "flops_per_page": flops,
        "assumed_mfu": ASSUMED_MFU,
        "peak_bf16_flops": peak,
        "pages_per_s": peak * ASSUMED_MFU / flops if peak else None,
        "note": "2 x params x tokens for the language model and the vision tower; attention and the projection head "
        "left out (small at these lengths); peak from the GPU's datasheet, MFU assumed",
    }


def bench_ingest(cfg: Any, device: str) -> dict[str, Any]:
    from mmrag.ingest.pipeline import ingest

    t0 = time.perf_counter()
    summary = ingest([str(p) for p in INPUTS[device]], cfg, collection="sample", calibrate=False)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "pages": summary.pages,
        "clips": summary.clips,
        "errors": len(summary.errors),
        "pages_per_s_end_to_end": summary.pages / seconds if seconds else None,
        "stage_seconds": summary.stage_seconds,
        "note": "whole run: Ray start, actor and model start-up, rendering, embedding, writing, indexing",
    }


def bench_search(items: int, queries: int, tmp: Path) -> dict[str, Any]:
    from benchmarks.retrieval import run_size

    r = run_size(items, n_queries=queries, lance_queries=1, seed=0, workdir=tmp, log=log)
    cascade = r.get("cascade") or {}
    return {
        "items": items,
        "queries": queries,
        "p50_ms": cascade.get("p50_ms"),
        "p99_ms": cascade.get("p99_ms"),
        "recall_at_10": cascade.get("recall_at_10"),
        "index_mb": (r.get("index") or {}).get("memory_mb_total"),
    }


def bench_answers(cfg: Any, answers: int) -> dict[str, Any]:
    """The profile's app started here (its start-up timed), then :func:`measure_answers` on the sample."""
    import httpx
    from ray import serve

    from mmrag.serve.run import run_app

    t0 = time.perf_counter()
    url = run_app(cfg)
    with httpx.Client(timeout=300) as c:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if c.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        ready_s = time.perf_counter() - t0
        out = measure_answers(c, url, answers, collection="sample")
    serve.shutdown()
    return {"app_ready_s": ready_s, **out, "images_per_prompt_max": cfg.models.generator.max_images_per_prompt}


def measure_answers(client: Any, url: str, answers: int, collection: str) -> dict[str, Any]:
    """``answers`` streamed answers from a running app (after one warm-up): time to first token, total time and
    citations per answer. ``client`` carries whatever the app needs (a key)."""
    from benchmarks.answer import rag_once

    queries = ["how do I plot a function", "set the axis labels", "what does the video show", "log scale"]
    rag_once(client, url, queries[0], 16, collection)  # warm-up
    runs = [rag_once(client, url, queries[i % len(queries)], 16, collection) for i in range(answers)]
    ttft = [r["ttft_ms"] for r in runs if r["ttft_ms"] is not None]
    return {
        "answers": len(runs),
        "ttft_p50_ms": _pct(ttft, 50),
        "ttft_p99_ms": _pct(ttft, 99),
        "total_p50_ms": _pct([r["total_ms"] for r in runs], 50),
        "citations_per_answer": float(np.mean([len(r["citations"]) for r in runs])) if runs else None,
    }


def markdown(r: dict[str, Any]) -> str:
    d, enc, est = r["device"], r.get("encoder") or {}, r.get("estimate") or {}
    lines = [
        "# GPU check: the gpu profile's architectures (tiny checkpoints) on " + (d.get("name") or d["device"]),
        "",
        f"- date: {r['date']}",
        f"- command: `{r['command']}`",
        f"- device: {d}",
        f"- wall time: {r['seconds']:.0f} s",
        "",
    ]
    if d["device"] != "cuda":
        lines += ["**CPU fallback run**: toy sizes, to prove the script; nothing here measures a GPU.", ""]
    if r.get("skipped"):
        lines += [f"- steps skipped (--skip): {', '.join(r['skipped'])}"]
    if enc:
        lines.append(
            f"- encoder (tiny ColQwen2.5, {enc['image_size'][0]}x{enc['image_size'][1]} pages, batch "
            f"{enc['batch_size']}): **{enc['pages_per_s']:.1f} pages/s** over {enc['pages']} pages, "
            f"{enc['tokens_per_page']:.0f} tokens/page"
            + (f", peak GPU memory {enc['peak_gpu_memory_gib']:.2f} GiB" if "peak_gpu_memory_gib" in enc else "")
        )
    if est.get("pages_per_s"):
        lines.append(
            f"- real ColQwen2.5 on paper: {est['flops_per_page'] / 1e12:.1f} TFLOP/page, at {est['assumed_mfu']:.0%} "
            f"of {est['peak_bf16_flops'] / 1e12:.0f} TFLOP/s: ~{est['pages_per_s']:.0f} pages/s"
        )
    if r.get("ingest"):
        g = r["ingest"]
        lines.append(
            f"- ingest of the bundled sample: {g['pages']} pages + {g['clips']} clips in {g['seconds']:.1f} s "
            f"({g['pages_per_s_end_to_end']:.1f} pages/s end to end, start-up included), {g['errors']} errors"
        )
    if r.get("search"):
        s = r["search"]
        lines.append(
            f"- search over {s['items']:,} items: p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, recall@10 "
            f"{s['recall_at_10']:.3f}"
        )
    if r.get("answer"):
        a = r["answer"]
        lines.append(
            f"- answers (tiny Qwen2.5-VL on vLLM, streamed): TTFT p50 {a['ttft_p50_ms']:.0f} ms, p99 "
            f"{a['ttft_p99_ms']:.0f} ms over {a['answers']}; app ready in {a['app_ready_s']:.0f} s"
        )
    lines += ["", "## Targets", ""]
    for t in r["targets"]:
        lines.append(f"- **{t['state']}** {t['rule']}: {t['value']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--pages", type=int, default=None, help="pages through the encoder (cuda 512, cpu 8)")
    ap.add_argument("--items", type=int, default=None, help="search index size (cuda 100000, cpu 1000)")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--answers", type=int, default=None, help="streamed answers (cuda 20, cpu 2)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["encoder", "ingest", "search", "answer"])
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks/results/gpu"))
    args = ap.parse_args(argv)

    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA GPU (is the .[gpu] extra installed?)")
    gpu = device == "cuda"
    pages = args.pages or (512 if gpu else 8)
    items = args.items or (100_000 if gpu else 1000)
    answers = args.answers if args.answers is not None else (20 if gpu else 2)

    from benchmarks.search_http import _free_port

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mmrag-gpu-check-"))
    cfg = profile_config(device, tmp, _free_port())
    info = device_info(device)
    log(f"device {info}")
    result: dict[str, Any] = {
        "benchmark": "gpu_check",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.gpu_check " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "device": info,
        "skipped": sorted(set(args.skip)),
    }
    try:
        if "encoder" not in args.skip:
            log(f"encoder: {pages} pages")
            result["encoder"] = bench_encoder(cfg, device, pages)
            result["estimate"] = paper_estimate(info) if gpu else None
        if "ingest" not in args.skip:
            log("ingest: the bundled sample through Ray Data")
            result["ingest"] = bench_ingest(cfg, device)
        if "search" not in args.skip:
            log(f"search: {items} items")
            result["search"] = bench_search(items, args.queries, tmp)
        if "answer" not in args.skip:
            log(f"answers: {answers}")
            result["answer"] = bench_answers(cfg, answers)
    finally:
        try:
            import ray

            ray.shutdown()
        except Exception:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    result["seconds"] = time.perf_counter() - t_start
    enc = result.get("encoder") or {}
    result["targets"] = [
        {
            "rule": "ingestion >= 50 pages/s per GPU with the tiny ColQwen2.5 at production image sizes",
            "value": f"{enc.get('pages_per_s', float('nan')):.1f} pages/s on {device}",
            "state": ("MET" if enc.get("pages_per_s", 0) >= 50 else "MISSED") if gpu else "NOT MEASURED (no GPU)",
        },
        {
            "rule": "search p50 at 100k items and answer TTFT reported",
            "value": f"search p50 {(result.get('search') or {}).get('p50_ms')} ms at {items} items, TTFT p50 "
            f"{(result.get('answer') or {}).get('ttft_p50_ms')} ms",
            "state": "REPORTED" if gpu and items >= 100_000 else "NOT MEASURED (no GPU)",
        },
    ]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check" if gpu else "gpu_check_cpu_fallback"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    if gpu:
        try:
            smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
            (out / "nvidia-smi.txt").write_text(smi)
        except (OSError, subprocess.SubprocessError):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
