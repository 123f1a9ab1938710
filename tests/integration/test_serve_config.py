"""deploy/serve/local-cpu.yaml, actually started: `serve run` in a subprocess (its own local Ray, as a user
runs it) over a store filled in this process by the warm ingest stages (no Ray here: `mmrag ingest` and its Ray Data
run are test_ingest's), answering /v1/search."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from mmrag.config import load_config
from mmrag.ingest.pipeline import ingest
from mmrag.ingest.warm import WarmStages

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_run_local_cpu_config_answers_search(mmrag_home: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["MMRAG_HOME"] = mmrag_home
    db = tmp_path / "db"
    shutil.copy(ROOT / "tests" / "data" / "coin.pdf", tmp_path / "coin.pdf")
    # the models and ingest settings the served config uses (local-cpu's), OCR off
    ing_cfg = load_config("local-cpu", {"store": {"uri": str(db)}, "ingest": {"ocr": "never"}}, use_env=False)
    summary = ingest([str(tmp_path / "coin.pdf")], ing_cfg, runner=WarmStages(ing_cfg), calibrate=False)
    assert summary.pages == 11 and not summary.errors, summary

    # The committed file, with only what this test must change: the store, the port, and no generator
    # (vLLM's start-up is covered elsewhere; search is what this config is checked for here).
    cfg = yaml.safe_load((ROOT / "deploy" / "serve" / "local-cpu.yaml").read_text())
    port = _free_port()
    cfg["http_options"]["port"] = port
    cfg["applications"][0]["args"]["config"] = {"store": {"uri": str(db)}, "generator": {"engine": "none"}}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    serve_bin = Path(sys.executable).parent / "serve"
    proc = subprocess.Popen(
        [str(serve_bin), "run", str(path)],
        env=env,
        stdout=(tmp_path / "serve.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            pytest.fail("serve run did not come up:\n" + (tmp_path / "serve.log").read_text()[-3000:])
        r = httpx.post(f"{url}/v1/search", json={"query": "permutation test", "k": 3}, timeout=120)
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        assert len(res) == 3 and all(h["source"].endswith("coin.pdf") for h in res)
        nogen = httpx.post(f"{url}/v1/answer", json={"query": "x"}, timeout=60)
        assert nogen.status_code == 503 and nogen.json()["error"]["code"] == "no_generator"
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # serve run shuts the app and its Ray down on Ctrl-C
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
