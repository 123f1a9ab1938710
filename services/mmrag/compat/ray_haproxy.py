"""Keep HAProxy's stats page and Prometheus exporter on loopback.

Why: with ``server.ingress: haproxy`` Ray Serve 2.60 starts HAProxy from a config template whose ``listen stats``
section binds ``*:8404`` (``RAY_SERVE_HAPROXY_STATS_PORT``) and whose ``frontend prometheus`` binds ``:9101``
(``RAY_SERVE_HAPROXY_METRICS_PORT``): every address of the machine. The stats page lists every backend and replica
address and the live traffic; neither needs to be reachable from other machines on a laptop, and on a cluster a
scraper can be let in on purpose.

What: when ``ray.serve._private.haproxy`` is first imported (in whichever Ray process renders HAProxy's config),
its template's two bind lines are rewritten to ``MMRAG_HAPROXY_ADMIN_HOST`` (default ``127.0.0.1``; ``0.0.0.0``
restores Ray's behaviour). The HTTP frontend (the API) is untouched. If Ray's template no longer has those lines
the module is left as it is and :data:`STATUS` says so (tests check it on the pinned Ray).

Where: :mod:`mmrag.compat.activate` installs this finder in every Python process of the environment (see
:mod:`mmrag.compat.torch_compat`); ``MMRAG_TORCH_COMPAT=0`` turns both off.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any

TARGET = "ray.serve._private.haproxy"
STATS_BIND = "bind *:{{ config.stats_port }}"
METRICS_BIND = "bind :{{ config.metrics_port }}"
#: "patched" (both bind lines now on the admin host), "unchanged" (the template has other lines), or absent.
STATUS: dict[str, str] = {}


def admin_host() -> str:
    return os.environ.get("MMRAG_HAPROXY_ADMIN_HOST", "127.0.0.1")


def rewrite(template: str, host: str) -> str | None:
    """The template with the stats and metrics binds on ``host``, or None when either line is not there."""
    if STATS_BIND not in template or METRICS_BIND not in template:
        return None
    h = f"[{host}]" if ":" in host else host
    return template.replace(STATS_BIND, f"bind {h}:{{{{ config.stats_port }}}}").replace(
        METRICS_BIND, f"bind {h}:{{{{ config.metrics_port }}}}"
    )


def _patch(module: Any) -> None:
    new = rewrite(module.HAPROXY_CONFIG_TEMPLATE, admin_host())
    if new is None:
        STATUS["haproxy"] = "unchanged"
        return
    module.HAPROXY_CONFIG_TEMPLATE = new
    STATUS["haproxy"] = "patched"


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    if os.environ.get("MMRAG_TORCH_COMPAT", "1") == "0" or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
