"""Start the application on Ray from Python (``mmrag serve``, the demo and the tests use this)."""

from __future__ import annotations

from mmrag import constants
from mmrag.config import MmragConfig


def run_app(cfg: MmragConfig) -> str:
    """Deploy the app (blocking until every replica is ready); return its base URL.

    Starts a local Ray (or joins ``RAY_ADDRESS``'s) first; a local Ray exports Prometheus metrics on
    ``server.metrics_port``.
    """
    from ray import serve

    from mmrag.runtime import init_ray
    from mmrag.serve.app import build_app_from_config

    init_ray(cfg.server)
    serve.start(http_options={"host": cfg.server.host, "port": cfg.server.port})
    serve.run(
        build_app_from_config(cfg),
        name=constants.APP_NAME,
        route_prefix=cfg.server.route_prefix,
        blocking=False,
    )
    return base_url(cfg)


def metrics_url() -> str | None:
    """Ray's Prometheus endpoint on this node (Ray Serve's and mmrag's metrics), once Ray is up."""
    import ray

    try:
        port = ray._private.worker.global_worker.node.metrics_export_port
    except AttributeError:  # connected as a client, or not started
        return None
    return f"http://127.0.0.1:{port}/metrics" if port else None


def base_url(cfg: MmragConfig) -> str:
    host = "127.0.0.1" if cfg.server.host in ("0.0.0.0", "::") else cfg.server.host
    return f"http://{host}:{cfg.server.port}{cfg.server.route_prefix.rstrip('/')}"
