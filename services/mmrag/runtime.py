"""Starting or joining Ray, the same way for ingestion, serving and the tools."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmrag.config import ServerConfig

log = logging.getLogger(__name__)


def init_ray(server: ServerConfig | None = None) -> None:
    """Join ``RAY_ADDRESS``'s cluster when set, else start a local Ray; keep their logs off the terminal.

    A Ray started here gets ``server``'s process environment (:meth:`~mmrag.config.ServerConfig.ray_env`: the
    ingress mode; a variable already set in the environment wins) and exports Prometheus metrics on
    ``server.metrics_port``. Ingestion passes its config's server section too, so that a process that ingests and
    then serves (``mmrag demo``) starts one Ray that suits both. When joining a cluster, both were fixed where the
    cluster was started (``ray start``, the k8s/ manifests).
    """
    import os

    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, object] = {}
    joining = bool(os.environ.get("RAY_ADDRESS"))
    if server is not None and not joining:
        for key, value in server.ray_env().items():
            os.environ.setdefault(key, value)  # inherited by the raylet and every worker it starts
        if server.metrics_port is not None:
            kwargs["_metrics_export_port"] = server.metrics_port
    with warnings.catch_warnings():
        # the raylet is started with fork+exec, which is safe for LanceDB's runtime
        warnings.filterwarnings("ignore", message="lancedb fork support")
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **kwargs)
    from mmrag import lifetime

    lifetime.ray_started(local=not joining)  # under `mmrag serve`/`demo`: their guard learns Ray's session
