"""Start the application on Ray from Python (``mmrag serve``, the demo and the tests use this)."""

from __future__ import annotations

import logging
import warnings

from mmrag import constants
from mmrag.config import MmragConfig


def ensure_ray() -> None:
    """Join ``RAY_ADDRESS``'s cluster when set, else start a local Ray; quiet on the terminal."""
    import ray

    if ray.is_initialized():
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="lancedb fork support")  # fork+exec of the raylet is safe
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)


def run_app(cfg: MmragConfig) -> str:
    """Deploy the app (blocking until every replica is ready); return its base URL."""
    from ray import serve

    from mmrag.serve.app import build_app_from_config

    ensure_ray()
    if cfg.models.uses_tiny():
        from mmrag.models.tiny import build_tiny

        build_tiny(cfg.models.tiny_dir)  # replicas load from here; build once, not per replica
    serve.start(http_options={"host": cfg.server.host, "port": cfg.server.port})
    serve.run(
        build_app_from_config(cfg),
        name=constants.APP_NAME,
        route_prefix=cfg.server.route_prefix,
        blocking=False,
    )
    host = "127.0.0.1" if cfg.server.host in ("0.0.0.0", "::") else cfg.server.host
    return f"http://{host}:{cfg.server.port}{cfg.server.route_prefix.rstrip('/')}"
