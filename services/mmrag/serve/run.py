"""Start the application on Ray from Python (``mmrag serve``, the demo and the tests use this)."""

from __future__ import annotations

from mmrag import constants
from mmrag.config import MmragConfig


def run_app(cfg: MmragConfig) -> str:
    """Deploy the app (blocking until every replica is ready); return its base URL.

    Starts a local Ray (or joins ``RAY_ADDRESS``'s) first; a local Ray exports Prometheus metrics on
    ``server.metrics_port``.
    """
    import logging

    from ray import serve

    from mmrag.runtime import init_ray
    from mmrag.serve.app import build_app_from_config

    if (warning := exposure_warning(cfg)) is not None:
        logging.getLogger(__name__).warning(warning)
    init_ray(cfg.server)
    serve.start(http_options={"host": cfg.server.host, "port": cfg.server.port})
    serve.run(
        build_app_from_config(cfg),
        name=constants.APP_NAME,
        route_prefix=cfg.server.route_prefix,
        blocking=False,
    )
    isolate_engine(cfg)
    return base_url(cfg)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def exposure_warning(cfg: MmragConfig) -> str | None:
    """What to say when the app is reachable beyond this machine and anyone who reaches it reads everything."""
    if cfg.server.auth == "none" and cfg.server.host not in LOOPBACK and not cfg.server.host.startswith("127."):
        return (
            f"WARNING: server.auth is none and the server binds {cfg.server.host}: anyone who reaches port "
            f"{cfg.server.port} reads every collection. Set server.auth: required (MMRAG_SERVER__AUTH=required) "
            "and hand out keys from `mmrag keys create`, or bind 127.0.0.1."
        )
    return None


def isolate_engine(cfg: MmragConfig) -> list[int] | None:
    """With ``models.generator.cpu_engine_cores`` on a local CPU node: move every process of the local Ray off the
    vLLM engine's cores (:mod:`mmrag.serve.cpu_split`); the cores they keep, or None when nothing was split."""
    import os

    from mmrag.serve.cpu_split import pin_ray_processes, split

    g = cfg.generator
    if g.engine != "vllm" or g.num_gpus > 0 or os.environ.get("RAY_ADDRESS"):
        return None
    if os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):  # the operator placed the engine; leave placement to them
        return None
    sp = split(cfg.models.generator.cpu_engine_cores)
    if sp is None:
        return None
    pin_ray_processes(sp[1])
    return sp[1]


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
