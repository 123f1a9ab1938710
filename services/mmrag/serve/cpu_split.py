"""CPU serving on one node: the vLLM engine's cores for the engine alone, every other process on the rest.

vLLM's CPU worker binds its OpenMP threads to cores and computes on them without pause during a prefill. Ray's own
processes (Serve's controller and proxies, the raylet, the GCS, the agents) and mmrag's replicas wake up all the
time, and the kernel puts them on whichever core is free, the engine's included: each wake-up there stalls the
engine. On a 2-core machine that made the Ray-hosted engine's prefill ~10% slower than the same engine alone
(TTFT +54 ms median at ~1.1 s); with the engine on one core and everything else on the other, the excess was 16 ms
(``benchmarks/results/answer_smollm2.md``).

:func:`split` chooses the two sets, :func:`engine_bind` is the engine's ``VLLM_CPU_OMP_THREADS_BIND`` and
:func:`pin_ray_processes` moves the processes this process started (a local Ray and everything below it) to the
other set; processes started later (replicas restarted, autoscaled, a restarted engine) inherit it, and a
restarted engine binds its threads by ``VLLM_CPU_OMP_THREADS_BIND`` again. This process itself is left alone
(a test runner or the demo's console keep every core).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Literal

log = logging.getLogger(__name__)

#: The process title vLLM gives its CPU worker processes (the ones that compute).
WORKER_TITLE = "VLLM::Worker"

CoreSetting = int | Literal["auto"] | None


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def split(setting: CoreSetting, cpus: list[int] | None = None) -> tuple[list[int], list[int]] | None:
    """``(engine cores, everything else)`` for ``setting`` over ``cpus`` (default: :func:`allowed_cpus`).

    ``auto``: three quarters of the cores for the engine, at least one, and at least one left over (2 cores: 1 + 1;
    8: 6 + 2; 16: 12 + 4). An int: that many, at most all but one. None, or fewer than 2 cores: no split.
    """
    cpus = allowed_cpus() if cpus is None else sorted(cpus)
    if setting is None or len(cpus) < 2:
        return None
    n = len(cpus)
    k = max(1, n - max(1, n // 4)) if setting == "auto" else int(setting)
    k = max(1, min(k, n - 1))
    return cpus[:k], cpus[k:]


def engine_bind(cores: list[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for one worker on ``cores``: ranges, e.g. ``0-5`` or ``0,2``."""
    parts: list[str] = []
    start = prev = cores[0]
    for c in [*cores[1:], None]:
        if c is not None and c == prev + 1:
            prev = c
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if c is not None:
            start = prev = c
    return ",".join(parts)


def pin_ray_processes(others: list[int]) -> int:
    """Pin every thread of every process below this one to ``others``, except vLLM's compute workers; the number
    of processes pinned."""
    import psutil

    pinned = 0
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error, OSError):
            if WORKER_TITLE in " ".join(proc.cmdline()):
                continue
            proc.cpu_affinity(others)
            for t in proc.threads():  # the call above sets the main thread's only
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(t.id, others)
            pinned += 1
    log.info("pinned %d processes to cores %s; the generator's engine keeps the others", pinned, others)
    return pinned


__all__ = ["allowed_cpus", "engine_bind", "pin_ray_processes", "split"]
