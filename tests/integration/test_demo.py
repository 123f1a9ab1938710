"""`mmrag demo`, the README's first command, as a new user runs it: a subprocess with its own local Ray.

The echo engine stands in for vLLM here to keep CI short (test_rag_vllm.py answers through vLLM itself); everything
else is the real demo: the offline models, the bundled 311-page PDF and video ingested, the app served, a streamed
answer with citations, shutdown; Ray's own output in a log file, not on the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_ingests_serves_answers_and_shuts_down(mmrag_home: str, tmp_path: Path) -> None:
    from mmrag.store import LanceStore

    db = tmp_path / "demo-db"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["MMRAG_GENERATOR__ENGINE"] = "echo"
    cmd = [sys.executable, "-m", "mmrag.cli.main", "demo", "--db", str(db), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    assert res["ingest"]["pages"] == 311 and res["ingest"]["clips"] == 1 and res["ingest"]["errors"] == []
    assert res["answer"].startswith("echo: ") and res["generator_is_noise"] is True
    assert "its words are noise" in " ".join(out.stderr.split())
    # which models are real and which are tiny stand-ins
    assert "visual retriever: tiny random ColQwen2 (its scores are noise" in out.stderr
    assert any(line.startswith("generator: the echo debug engine") for line in res["models"])
    # Ray's, Serve's and Ray Data's own lines went to the log file, whose path was printed
    log = Path(res["log"])
    assert str(log) in out.stderr and log.is_file() and log.stat().st_size > 0
    assert "Token authentication is enabled" not in out.stderr and "INFO" not in out.stderr
    cites = res["citations"]
    assert cites and all(c["source"].endswith(("gnuplot.pdf", "cup.mp4")) for c in cites)
    rows = LanceStore(str(db)).get_items([c["id"] for c in cites], ["page", "text"])
    assert set(rows) == {c["id"] for c in cites}, "citations point at ingested items"
    # the question is how to plot data from a file: the calibrated search (BM25 + the real MiniLM, the random visual
    # model switched off) cites the manual's pages about data files
    texts = [(rows[c["id"]]["text"] or "").lower() for c in cites]
    assert any("datafile" in t or "data file" in t for t in texts), [c.get("page") for c in cites]
    assert "shut down" in out.stderr
