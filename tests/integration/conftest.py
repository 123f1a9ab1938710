"""Integration fixtures: one real local Ray instance per test module."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray (2 CPUs, no dashboard), shut down after the module.

    Started with the local-cpu profile's process environment (``server.ingress: haproxy``: Ray Serve's HAProxy and
    direct-ingress mode), as ``mmrag serve`` starts it; ``test_serve_config`` covers Ray Serve's classic proxy."""
    import ray

    from mmrag.config import load_config

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for key, value in load_config("local-cpu").server.ray_env().items():
        os.environ.setdefault(key, value)
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()
