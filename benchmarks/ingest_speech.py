"""Ingestion with speech (issue #18): Whisper's throughput alone, and the pipeline's clip rate with transcription
on against its slowest stage alone, on videos with speech made here (espeak-ng + ffmpeg, tests/media.py).

    python -m benchmarks.ingest --only speech [--speech-videos 8] [--speech-seconds 60]

Measured (each rate per wall-clock second on this machine):

* stages alone, in this process, no Ray, on the same videos: our ``ReadStage`` (decode, OCR of keyframes,
  thumbnails, JPEGs), ``EmbedStage`` (tiny ColQwen2), ``SpeechStage`` (Whisper tiny.en int8 on the profile's
  threads; also as seconds of audio per second) and ``TextEmbedStage`` (all-MiniLM-L6-v2);
* the pipeline (``mmrag.ingest.pipeline.ingest``, local-cpu profile) with ``ingest.speech.enabled`` on and off,
  each on a few videos and on all of them; the steady state is the marginal rate between the two (extra clips over
  extra seconds), which cancels the start-up both share.

Writes ``speech`` into the ingest JSON (the rest of it is kept) and a "Speech" section into its Markdown report.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.ingest import (
    COLLECTION,
    PROFILE,
    ROOT,
    TARGET_VS_SLOWEST_STAGE,
    Clock,
    TreeCpu,
    _run_numbers,
    _steady,
    load_average,
    log,
    rate,
)

#: Sentences spoken one after another through each test video (a new one every ``GAP_S`` seconds).
LINES = [
    "The weather in Paris is sunny today.",
    "Please remember to water the garden plants.",
    "Our meeting about the budget starts at noon.",
    "The train to Berlin leaves from platform four.",
    "She bought three apples and a loaf of bread.",
    "The library closes early on Friday evenings.",
    "We measured the temperature every ten minutes.",
    "His presentation covered the new safety rules.",
    "The children played football in the park.",
    "Turn left after the bridge and park near the church.",
    "The results of the survey will be published in March.",
    "Coffee and tea are served in the main hall.",
]
GAP_S = 4.0
SECTION = "## Speech (issue #18)"


def make_videos(workdir: Path, n: int, seconds: float) -> list[Path]:
    """``n`` distinct videos of ``seconds`` s, a sentence every ``GAP_S`` s (rotated per video)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from media import speech_video  # tests/media.py: espeak-ng + ffmpeg

    out = []
    for k in range(n):
        times = [t * GAP_S + 0.5 for t in range(int(seconds // GAP_S))]
        sentences = [(t, LINES[(k + j) % len(LINES)]) for j, t in enumerate(times)]
        path = workdir / f"talk{k:02d}.mp4"
        speech_video(path, sentences, duration=seconds)
        out.append(path)
    return out


def stages_alone(videos: list[Path], cfg: Any, repeats: int) -> dict[str, Any]:
    """ReadStage, EmbedStage, SpeechStage and TextEmbedStage alone, one after another, on the same rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mmrag.ingest.speech import SpeechStage
    from mmrag.ingest.stages import EmbedStage, ReadStage, TextEmbedStage

    out: dict[str, Any] = {}
    read = ReadStage(cfg.ingest.model_dump(), cfg.models.retriever.max_image_pixels)
    tables: list[Any] = []
    clock = Clock()
    with clock.timed():
        for v in videos:
            row = {"collection": COLLECTION, "source_uri": str(v), "content_hash": "0" * 64, "doc_kind": "video"}
            tables.extend(read(pa.Table.from_pylist([row])))
    rows = pa.concat_tables(tables)
    items = rows.filter(pc.equal(rows["kind"], "item"))
    n = items.num_rows
    out["read"] = {"what": "ReadStage (decord, OCR of keyframes, JPEGs, encoder frames)", **clock.result("clips", n)}

    bs = cfg.ingest.embed.batch_size
    embed = EmbedStage(cfg.models.model_dump(), token_pooling_factor=cfg.ingest.token_pooling_factor, batch_size=bs)
    embed(items.slice(0, bs))  # warm-up
    clock, embedded = Clock(), []
    with clock.timed():
        for i in range(0, n, bs):
            embedded.append(embed(items.slice(i, bs)))
    out["embed"] = {"what": "EmbedStage (tiny ColQwen2, 4 frames a clip)", **clock.result("clips", n)}
    embedded_t = pa.concat_tables(embedded)

    def speech_once() -> dict[str, Any]:
        stage = SpeechStage(cfg.ingest.speech.model_dump())  # a fresh actor: every file transcribed once
        sb = cfg.ingest.speech.stage.batch_size
        c = Clock()
        with c.timed():
            for i in range(0, n, sb):
                stage(embedded_t.slice(i, sb))
        audio_s = sum(tr.seconds for tr in stage.cache.values())
        words = sum(len(tr.words) for tr in stage.cache.values())
        return {**c.result("clips", n), "audio_seconds": round(audio_s, 1), "words": words}

    runs = sorted((speech_once() for _ in range(repeats)), key=lambda r: r["seconds"])
    sp = dict(runs[len(runs) // 2])
    sp["runs_seconds"] = [r["seconds"] for r in runs]
    sp["audio_seconds_per_s"] = rate(sp["audio_seconds"], sp["seconds"])
    s = cfg.ingest.speech
    sp["what"] = (
        f"SpeechStage: Whisper {s.model} ({s.device}, {s.compute_type}, {s.cpu_threads} thread(s), beam {s.beam_size},"
        f" VAD {'on' if s.vad_filter else 'off'}), whole files, words onto clips (median of {repeats})"
    )
    out["speech"] = sp

    if cfg.models.text is not None:
        text = TextEmbedStage(cfg.models.text.model_dump())
        tb = cfg.ingest.text_embed.batch_size
        spoken = SpeechStage(cfg.ingest.speech.model_dump())
        with_words = pa.concat_tables([spoken(embedded_t.slice(i, tb)) for i in range(0, n, tb)])
        text(with_words.slice(0, tb))  # warm-up
        clock = Clock()
        with clock.timed():
            for i in range(0, n, tb):
                text(with_words.slice(i, tb))
        what = "TextEmbedStage (all-MiniLM-L6-v2) on clips with their words"
        out["text_embed"] = {"what": what, **clock.result("clips", n)}
    return out


def pipeline_runs(videos: list[Path], small: int, workdir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The pipeline with speech on and off, each on ``small`` videos and on all of them, into fresh stores."""
    import ray

    from mmrag.config import load_config
    from mmrag.ingest import pipeline

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    pipeline.init_ray(load_config(PROFILE, overrides).server)
    out["ray_init_seconds"] = round(time.perf_counter() - t0, 2)
    out["ray_cpus"] = ray.cluster_resources().get("CPU")
    for label, enabled in (("speech_on", True), ("speech_off", False)):
        sizes = []
        for files in (videos[:small], videos):
            db = workdir / f"lancedb-{label}-{len(files)}"
            ov = {**overrides, "store": {"uri": str(db)}}
            ingest_ov = ov.get("ingest", {})
            ov["ingest"] = {**ingest_ov, "speech": {**ingest_ov.get("speech", {}), "enabled": enabled}}
            cfg = load_config(PROFILE, ov)
            timeline: list[tuple[float, int]] = []
            before = load_average()
            t0 = time.perf_counter()

            def progress(c: dict[str, int], t0: float = t0, timeline: list = timeline) -> None:
                timeline.append((time.perf_counter() - t0, c["pages"] + c["images"] + c["clips"]))

            with TreeCpu() as cpu_used:
                summary = pipeline.ingest([str(f) for f in files], cfg, collection=COLLECTION, progress=progress)
            wall = time.perf_counter() - t0
            shutil.rmtree(db, ignore_errors=True)
            run = {
                "videos": len(files),
                **_run_numbers(summary, wall, timeline),
                "cpu_seconds": round(cpu_used.seconds, 2),
                "load_average": [before, load_average()],
            }
            sizes.append(run)
            log(f"pipeline {label} x{len(files)}: {json.dumps({k: v for k, v in run.items() if k != 'stage_seconds'})}")
        out[label] = {"runs": sizes, **_steady(sizes)}
    out["config"] = {
        "read": cfg.ingest.read.model_dump(),
        "embed": cfg.ingest.embed.model_dump(),
        "speech": cfg.ingest.speech.stage.model_dump(),
        "text_embed": cfg.ingest.text_embed.model_dump(),
    }
    return out


def verdict(r: dict[str, Any]) -> dict[str, Any]:
    """Issue #18: the pipeline's clip rate with transcription on >= 0.7x its slowest stage alone."""
    alone = {k: v["clips_per_s"] for k, v in r["stages_alone"].items() if v.get("clips_per_s")}
    slowest = min(alone, key=lambda k: alone[k])
    on = r["pipeline"]["speech_on"]
    steady = on.get("steady_items_per_s")
    out = {
        "stages_alone_clips_per_s": alone,
        "slowest_stage": slowest,
        "pipeline_steady_clips_per_s": steady,
        "pipeline_whole_call_clips_per_s": on["whole_call_items_per_s"],
        "pipeline_steady_without_speech": r["pipeline"]["speech_off"].get("steady_items_per_s"),
        "target": TARGET_VS_SLOWEST_STAGE,
    }
    if steady:
        out["ratio_steady"] = round(steady / alone[slowest], 2)
        out["met"] = steady / alone[slowest] >= TARGET_VS_SLOWEST_STAGE
    return {"clips_per_s_with_speech": out}


def markdown(r: dict[str, Any]) -> str:
    a, p, v = r["stages_alone"], r["pipeline"], r["verdict"]["clips_per_s_with_speech"]
    sp = a["speech"]
    lines = [
        SECTION,
        "",
        f"- date: {r['date']}; command: `{r['command']}`",
        f"- inputs: {r['inputs']['videos']} videos of {r['inputs']['seconds']:g} s made by tests/media.py (espeak-ng "
        f"sentences every {GAP_S:g} s over ffmpeg's test pattern, 320x240, 10 fps), {sp['clips']} clips of "
        f"{r['inputs']['clip_seconds']:g} s; load average {r['load_average']}",
        "",
        f"**Transcription throughput: {sp['audio_seconds_per_s']} s of audio per second** ({sp['audio_seconds']} s of "
        f"audio, {sp['words']} words, in {sp['seconds']} s; {sp['cpu_ms_per_clip']} CPU-ms per clip). {sp['what']}.",
        "",
        "| stage alone (no Ray, this process) | clips/s | CPU-ms per clip |",
        "|---|---:|---:|",
    ]
    for k in ("read", "embed", "speech", "text_embed"):
        if k in a:
            lines.append(f"| {a[k]['what']} | {a[k]['clips_per_s']} | {a[k]['cpu_ms_per_clip']} |")
    lines += [
        "",
        "| pipeline (local-cpu, Ray Data) | steady clips/s | whole call clips/s | start-up s | CPU-ms per clip |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in ("speech_on", "speech_off"):
        q = p[label]
        lines.append(
            f"| {label.replace('_', ' ')} | {q.get('steady_items_per_s')} | {q['whole_call_items_per_s']} | "
            f"{q.get('startup_seconds')} | {q.get('cpu_ms_per_item')} |"
        )
    met = "MET" if v.get("met") else "MISSED"
    cpus = os.cpu_count() or 1
    peak = max(x[0] for x in r["load_average"].values())
    lines += [
        "",
        *(
            [
                f"**Caution: the machine was shared (1-min load average up to {peak} on {cpus} CPUs) while this ran: "
                "the wall-clock rates are below what the same code does on a quiet machine, and under heavy load a "
                "run of a larger set can finish faster than a smaller one (then no steady state is given). The CPU-ms "
                "per clip are the steadier numbers.**",
                "",
            ]
            if peak > 2 * cpus
            else []
        ),
        f"- **clips_per_s_with_speech: {met}** — {json.dumps(v)}",
        "",
        "Runs (each into a fresh store): "
        + "; ".join(
            f"{label} x{q['videos']}: {q['clips']} clips in {q['seconds']} s (load {q['load_average'][1]})"
            for label in ("speech_on", "speech_off")
            for q in p[label]["runs"]
        ),
        "",
    ]
    return "\n".join(lines)


def run(args: Any, overrides: dict[str, Any], out_json: Path, command: str) -> dict[str, Any]:
    """The whole speech benchmark; merges its results into ``out_json`` and its section into the ``.md``."""
    import datetime as dt
    import tempfile

    from mmrag.config import load_config
    from mmrag.models.tiny import build_tiny

    cfg = load_config(PROFILE, overrides)
    build_tiny(cfg.models.tiny_dir)
    workdir = Path(tempfile.mkdtemp(prefix="mmrag-bench-speech-"))
    t0 = time.perf_counter()
    try:
        log(f"making {args.speech_videos} videos of {args.speech_seconds} s ...")
        videos = make_videos(workdir, args.speech_videos, args.speech_seconds)
        r: dict[str, Any] = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": command,
            "inputs": {"videos": len(videos), "seconds": args.speech_seconds, "clip_seconds": cfg.ingest.clip_seconds},
            "load_average": {"start": load_average()},
            "speech_config": cfg.ingest.speech.model_dump(),
        }
        log("stages alone ...")
        r["stages_alone"] = stages_alone(videos, cfg, args.repeats)
        log("pipeline ...")
        r["pipeline"] = pipeline_runs(videos, max(1, len(videos) // 4), workdir, overrides)
        r["load_average"]["end"] = load_average()
        r["seconds"] = round(time.perf_counter() - t0, 1)
        r["verdict"] = verdict(r)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    whole = json.loads(out_json.read_text()) if out_json.exists() else {}
    whole["speech"] = r
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(whole, indent=2) + "\n")
    write_section(out_json.with_suffix(".md"), r)
    return r


def write_section(md: Path, r: dict[str, Any]) -> None:
    """Put (or replace) the speech section in the report ``md``; the other sections are kept."""
    text = md.read_text() if md.exists() else "# Ingestion benchmark\n"
    head = text.split(SECTION)[0].rstrip("\n")
    tail = text.split(SECTION, 1)[1] if SECTION in text else ""
    rest = tail[tail.find("\n## ") + 1 :] if "\n## " in tail else ""  # sections after ours are kept
    md.write_text(head + "\n\n" + markdown(r) + ("\n" + rest if rest else ""))
