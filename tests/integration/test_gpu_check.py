"""benchmarks/gpu_check.sh, the one short GPU check: here (no GPU) its CPU fallback runs its steps on toy sizes (the
tiny ColQwen2.5 + adapter encoding rendered pages, Ray Data ingestion, the search index) and writes its results; a GPU
session runs the same script with --device cuda. Its answer step (vLLM answers from the tiny Qwen2.5-VL) measures
the gpu-tiny app that tests/integration/test_gpu_tiny.py has running already (``measure_answers``): starting that app
a second time here would add a minute of CI for no code the other test does not run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_the_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu_check.sh")]).returncode == 0


def test_the_cpu_fallback_runs_its_steps(tmp_path: Path, mmrag_home: str) -> None:
    env = {**os.environ, "GPU_CHECK_PYTHON": sys.executable, "MMRAG_HOME": mmrag_home, "RAY_USAGE_STATS_ENABLED": "0"}
    out = tmp_path / "gpu"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--device", "cpu", "--out-dir", str(out), "--skip", "answer"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "gpu_check_cpu_fallback.json").read_text())
    assert r["device"]["device"] == "cpu"
    enc = r["encoder"]
    assert enc["pages"] == 8 and enc["pages_per_s"] > 0 and enc["tokens_per_page"] > 100  # a real image's patches
    assert enc["image_size"][0] * enc["image_size"][1] <= 602112  # the gpu profile's image size bound
    ing = r["ingest"]
    assert ing["pages"] == 11 and ing["clips"] >= 1 and ing["errors"] == 0
    s = r["search"]
    assert s["items"] == 1000 and s["recall_at_10"] >= 0.9 and s["p50_ms"] > 0
    assert "answer" not in r and r["skipped"] == ["answer"]
    assert all(t["state"].startswith("NOT MEASURED") for t in r["targets"])  # a CPU run claims nothing for a GPU
    md = (out / "gpu_check_cpu_fallback.md").read_text()
    assert "CPU fallback run" in md and "pages/s" in md and "steps skipped (--skip): answer" in md
