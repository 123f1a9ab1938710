"""``build_app(args) -> Application``: the one builder used by ``serve run``, ``mmrag serve`` and tests.

From YAML (``deploy/serve/*.yaml``, a RayService's ``serveConfigV2``)::

    applications:
      - name: mmrag
        import_path: mmrag.serve.app:build_app
        args: {profile: local-cpu, config: {store: {uri: /data/lancedb}}}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from mmrag.config import MmragConfig, load_config

#: Serve's max_ongoing_requests for the gateway when its admission gates are on (their largest limit).
ADMISSION_CEILING = 4096
#: The deployments' config sections, and their fields that only Serve reads (through ``serve_options``, here).
DEPLOYMENT_SECTIONS = ("retriever", "reranker", "generator", "gateway", "ingestor")
PLACEMENT_FIELDS = (
    "num_replicas",
    "autoscaling",
    "num_cpus",
    "num_gpus",
    "memory_bytes",
    "max_ongoing_requests",
    "max_queued_requests",
    "resources",
    "label_selector",
)


def replica_config(cfg: MmragConfig) -> dict[str, Any]:
    """The config tree every replica is bound with: ``cfg`` less the deployments' replica counts and resources.

    Serve starts new replicas of a deployment whose bound arguments changed, so with those fields in the tree a
    change of one deployment's replicas (a redeploy, a RayService update) restarted every deployment; without them
    it is an options change of that deployment alone, which Serve applies by adding or removing replicas. No replica
    reads them (their defaults apply inside the replicas)."""
    tree = cfg.model_dump(mode="json")
    for section in DEPLOYMENT_SECTIONS:
        for name in PLACEMENT_FIELDS:
            tree[section].pop(name, None)
    return tree


class AppArgs(BaseModel):
    """Arguments of :func:`build_app` (the ``args:`` block of a Serve config)."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(default=None, description="Profile name or YAML path (default: local-cpu).")
    config: dict[str, Any] | None = Field(
        default=None, description="Config tree merged over the profile (same schema as the profile files)."
    )


def build_config(args: dict[str, Any] | None) -> MmragConfig:
    a = AppArgs.model_validate(args or {})
    return load_config(a.profile, a.config)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Bind retriever, reranker, generator and gateway with their per-profile replicas and resources."""
    return build_app_from_config(build_config(args))


def build_app_from_config(cfg: MmragConfig) -> Application:
    """Gateway(retriever, reranker, generator, ingestor); no generator with ``generator.engine: none`` (search only),
    no ingestor with ``ingestor.enabled: false``."""
    from mmrag.models.prepare import prepare_models
    from mmrag.serve.gateway import Gateway
    from mmrag.serve.generator import is_vision_model
    from mmrag.serve.reranker import Reranker
    from mmrag.serve.retriever import Retriever

    # Replicas load the tiny: and real: checkpoints from models.tiny_dir / real_dir: build them once here (a no-op
    # when a verified build exists), so `serve run deploy/serve/local-cpu.yaml` works on a fresh machine.
    prepare_models(cfg)
    if cfg.models.generator.vision is None:
        # Decided once, where the checkpoint was just prepared: the gateway then needs no access to it.
        g = cfg.models.generator.model_copy(update={"vision": is_vision_model(cfg)})
        cfg = cfg.model_copy(update={"models": cfg.models.model_copy(update={"generator": g})})
    tree = replica_config(cfg)
    n = cfg.retriever.shards
    if n == 1:
        retriever: Any = Retriever.options(**cfg.retriever.serve_options()).bind(tree)
    else:  # a deployment per shard, each with the retriever section's replicas and autoscaling (mmrag.serve.shards)
        from mmrag.constants import retriever_deployment

        retriever = [
            Retriever.options(name=retriever_deployment(i, n), **cfg.retriever.serve_options()).bind(tree, shard=i)
            for i in range(n)
        ]
    reranker = Reranker.options(**cfg.reranker.serve_options()).bind(tree)
    generator = None
    if cfg.generator.engine != "none":
        from mmrag.serve.generator import build_generator

        generator = build_generator(cfg)
    gw = cfg.gateway.serve_options()
    if cfg.server.admission.enabled:
        # The gateway's own admission gates decide what a replica takes on (mmrag.serve.admission): Serve's
        # per-replica limit would queue requests ahead of them, where no gate sees them (measured: 8-23 s queues
        # at 2-4x capacity with max_ongoing_requests 64), so it is lifted to the gates' ceiling.
        gw["max_ongoing_requests"] = max(gw["max_ongoing_requests"], ADMISSION_CEILING)
    ingestor = None
    if cfg.ingestor.enabled:
        from mmrag.serve.ingestor import Ingestor

        ingestor = Ingestor.options(**cfg.ingestor.serve_options()).bind(tree)
    return Gateway.options(**gw).bind(tree, retriever, reranker, generator, ingestor=ingestor)
