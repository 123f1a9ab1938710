"""Keeping a local Ray's processes off the CPU engine's cores: the split, the bind string, the pinning."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mmrag.config import load_config
from mmrag.serve.cpu_split import WORKER_TITLE, engine_bind, pin_ray_processes, split

pytestmark = pytest.mark.unit


def test_split_leaves_each_side_a_core() -> None:
    assert split("auto", [0, 1]) == ([0], [1])
    assert split("auto", list(range(8))) == ([0, 1, 2, 3, 4, 5], [6, 7])
    assert split("auto", list(range(16))) == (list(range(12)), list(range(12, 16)))
    assert split(1, [4, 2, 3]) == ([2], [3, 4])  # in core order
    assert split(99, [0, 1, 2]) == ([0, 1], [2])  # never all of them
    assert split(None, [0, 1]) is None
    assert split("auto", [0]) is None  # one core: nothing to split


def test_engine_bind_writes_ranges() -> None:
    assert engine_bind([0]) == "0"
    assert engine_bind([0, 1, 2, 3]) == "0-3"
    assert engine_bind([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_profile_binds_the_engine_to_its_cores(monkeypatch) -> None:
    from mmrag.serve.generator import build_llm_config, cpu_bind

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    cfg = load_config("local-cpu")
    assert cfg.models.generator.cpu_engine_cores == "auto"
    sp = split("auto")
    want = engine_bind(sp[0]) if sp else "auto"
    assert cpu_bind(cfg) == want
    assert build_llm_config(cfg).runtime_env["env_vars"]["VLLM_CPU_OMP_THREADS_BIND"] == want
    # joining a cluster: its nodes are not this machine
    monkeypatch.setenv("RAY_ADDRESS", "ray://elsewhere:10001")
    assert cpu_bind(cfg) == "auto"
    monkeypatch.delenv("RAY_ADDRESS")
    # an operator's own binding wins
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "1")
    assert build_llm_config(cfg).runtime_env["env_vars"]["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    off = load_config("local-cpu", {"models": {"generator": {"cpu_engine_cores": None}}})
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
    assert cpu_bind(off) == "auto"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_pin_moves_children_but_not_the_engine_worker_nor_this_process() -> None:
    mine = sorted(os.sched_getaffinity(0))
    code = "import time; time.sleep(60)"
    plain = subprocess.Popen([sys.executable, "-c", code])
    worker = subprocess.Popen([sys.executable, "-c", code, WORKER_TITLE])
    try:
        time.sleep(0.3)
        _engine, others = split("auto", mine)
        assert pin_ray_processes(others) >= 1
        assert sorted(os.sched_getaffinity(plain.pid)) == others
        assert sorted(os.sched_getaffinity(worker.pid)) == mine  # vLLM binds its own threads
        assert sorted(os.sched_getaffinity(0)) == mine
    finally:
        for p in (plain, worker):
            p.kill()
            p.wait()
