"""benchmarks/retrieval_1m.py at a toy size: it runs end to end (data, ground truth, the disk-tier index with its
recall calibration, the stage timings, the sweep), writes JSON and Markdown, and a second run with --data reuses the
table and ground truth the first one kept instead of making them again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


def _run(tmp_path: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), str(ROOT)])}
    args = ["--sizes", "2000", "--queries", "6", "--out", str(out), "--data", str(tmp_path / "data")]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.retrieval_1m", *args, "--workdir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_the_million_benchmark_runs_small_and_reuses_its_data(tmp_path: Path) -> None:
    first = _run(tmp_path, tmp_path / "a.json")
    assert "reusing" not in first.stderr
    r = json.loads((tmp_path / "a.json").read_text())
    size = r["sizes"][0]
    assert size["items"] == 2000 and size["data"]["tokens"] > 2000 * 60
    run = size["runs"]["disk_tier_recall_target"]
    cal = run["calibration"]
    assert cal["first_stage_k"] == run["first_stage_k"] and cal["items"] == 2000 and cal["queries"] == 64
    assert cal["depth_point_estimate"] <= cal["first_stage_k"] <= 2000
    assert run["search"]["latency_samples"] == 12 and 0.0 <= run["search"]["recall_at_10"] <= 1.0
    assert run["token_file_mb"] > 0 and set(run["stage_ms"]) == {"pooled", "top_k", "tokens", "search"}
    assert all(v > 0 for v in run["stage_ms"].values())
    assert [s["first_stage_k"] for s in run["sweep"]] == [1500]  # the sweep stops below the collection's size
    assert "ram_default" in size["runs"]
    md = (tmp_path / "a.md").read_text()
    assert "Where a search's time goes" in md and "| 2,000 | disk_tier_recall_target |" in md

    second = _run(tmp_path, tmp_path / "b.json")
    assert "reusing the table and ground truth" in second.stderr
    again = json.loads((tmp_path / "b.json").read_text())["sizes"][0]
    assert again["data"] == size["data"]  # the kept ground truth and timings, not new ones
    truth_file = tmp_path / "data" / "lance-2000-seed0-q6" / "truth.json"
    assert len(json.loads(truth_file.read_text())["truth"]) == 6
