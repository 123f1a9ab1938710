"""HAProxy's stats page and metrics exporter bind loopback: the pinned Ray's template is rewritten on import in
every process (through the .pth), the API frontend is not touched, and MMRAG_HAPROXY_ADMIN_HOST opens them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mmrag.compat.ray_haproxy import METRICS_BIND, STATS_BIND, rewrite

pytestmark = pytest.mark.unit

PROBE = (
    "import ray.serve._private.haproxy as h\n"
    "from mmrag.compat import ray_haproxy\n"
    "print(ray_haproxy.STATUS.get('haproxy'))\n"
    "print('\\n'.join(l.strip() for l in h.HAPROXY_CONFIG_TEMPLATE.splitlines() if l.strip().startswith('bind')))\n"
)


def _binds(env: dict[str, str]) -> tuple[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    status, *binds = out.stdout.strip().splitlines()
    return status, binds


def test_a_fresh_process_renders_loopback_binds() -> None:
    status, binds = _binds({})
    assert status == "patched", "the pinned Ray's template no longer has the bind lines this patch rewrites"
    assert "bind 127.0.0.1:{{ config.stats_port }}" in binds
    assert "bind 127.0.0.1:{{ config.metrics_port }}" in binds
    assert "bind {{ config.frontend_host }}:{{ config.frontend_port }}" in binds, "the API frontend is untouched"
    assert not any(b.startswith(("bind *:", "bind :")) for b in binds)


def test_the_admin_host_can_be_opened_on_purpose() -> None:
    _, binds = _binds({"MMRAG_HAPROXY_ADMIN_HOST": "0.0.0.0"})
    assert "bind 0.0.0.0:{{ config.stats_port }}" in binds


def test_rewrite_leaves_unknown_templates_alone() -> None:
    assert rewrite("listen x\n  bind 10.0.0.1:1\n", "127.0.0.1") is None
    t = f"a\n  {STATS_BIND}\n  {METRICS_BIND}\n"
    assert rewrite(t, "::1") == "a\n  bind [::1]:{{ config.stats_port }}\n  bind [::1]:{{ config.metrics_port }}\n"
