"""Starting or joining Ray, the same way for ingestion, serving and the tools."""

from __future__ import annotations

import logging
import warnings


def init_ray(*, metrics_port: int | None = None) -> None:
    """Join ``RAY_ADDRESS``'s cluster when set, else start a local Ray; keep their logs off the terminal.

    ``metrics_port`` is where a Ray started here exports Prometheus metrics (ignored when joining a cluster:
    ``ray start --metrics-export-port`` set it there).
    """
    import os

    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, object] = {}
    if metrics_port is not None and not os.environ.get("RAY_ADDRESS"):
        kwargs["_metrics_export_port"] = metrics_port
    with warnings.catch_warnings():
        # the raylet is started with fork+exec, which is safe for LanceDB's runtime
        warnings.filterwarnings("ignore", message="lancedb fork support")
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **kwargs)
