"""Where and how big: node placement, replicas, resources and autoscaling of a Serve deployment."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from mmrag.config.common import (
    _Strict,
)


# ------------------------------------------------------------------------------------ placement
class NodePlacement(_Strict):
    """Which Ray nodes an actor may run on: custom resources and node labels, as the nodes were started with
    (``ray start --resources='{"mmrag_ingest": 1}' --labels=mmrag-role=ingest``, a KubeRay group's
    ``rayStartParams``). With neither, Ray places the actor on any node with room."""

    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each actor reserves, e.g. {mmrag_ingest: 0.01}: it then runs only on nodes "
        "started with that resource (`ray start --resources`), and the node's amount bounds how many fit there.",
    )
    label_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Ray node labels each actor requires, e.g. {mmrag-role: ingest} (nodes started with "
        "`ray start --labels mmrag-role=ingest`); values take Ray's selector syntax: `v`, `!v`, `in(a,b)`, `!in(a,b)`.",
    )

    @field_validator("resources")
    @classmethod
    def _own_resources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"resources: {name} is a built-in resource; set it with num_cpus/num_gpus/memory")
            if amount < 0:
                raise ValueError(f"resources.{name} is {amount}; a resource amount cannot be negative")
        return v

    @field_validator("label_selector")
    @classmethod
    def _ray_selector(cls, v: dict[str, str]) -> dict[str, str]:
        from ray._private.label_utils import validate_label_selector  # Ray's own rules, the ones `ray start` applies

        if v and (err := validate_label_selector(v)):
            raise ValueError(f"label_selector: {err}")
        return v

    def placement_options(self) -> dict[str, Any]:
        """``resources`` and ``label_selector`` as Ray's actor options (only those set)."""
        opts: dict[str, Any] = {}
        if self.resources:
            opts["resources"] = dict(self.resources)
        if self.label_selector:
            opts["label_selector"] = dict(self.label_selector)
        return opts


# ------------------------------------------------------------------------------------- serving
class AutoscalingConfig(_Strict):
    """Ray Serve autoscaling for one deployment."""

    min_replicas: int = Field(default=1, ge=0, description="Replicas kept when idle.")
    max_replicas: int = Field(default=1, ge=1, description="Upper bound on replicas.")
    target_ongoing_requests: float = Field(default=8, gt=0, description="Requests per replica to aim for.")
    upscale_delay_s: float = Field(default=10, ge=0, description="Seconds of sustained load before scaling up.")
    downscale_delay_s: float = Field(default=300, ge=0, description="Seconds of low load before scaling down.")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.min_replicas ({self.min_replicas}) exceeds max_replicas "
                f"({self.max_replicas}); raise max_replicas or lower min_replicas"
            )
        return self


class DeploymentConfig(NodePlacement):
    """Replicas, resources and node placement of one Serve deployment."""

    num_replicas: int | None = Field(
        default=1, ge=1, description="Fixed replica count; null to use autoscaling instead."
    )
    autoscaling: AutoscalingConfig | None = Field(
        default=None, description="Autoscaling bounds; used when num_replicas is null."
    )
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs per replica (fractions allowed).")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per replica (fractions allowed).")
    memory_bytes: int | None = Field(default=None, ge=0, description="Memory reserved per replica.")
    max_ongoing_requests: int = Field(default=64, ge=1, description="Requests in flight per replica.")
    max_queued_requests: int | None = Field(
        default=None,
        ge=1,
        description="Requests a caller's handle may hold queued for this deployment beyond what its replicas take "
        "(Ray Serve's max_queued_requests); over it the gateway answers 503 overloaded at once. None: unbounded.",
    )

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> DeploymentConfig:
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError(
                "set either num_replicas (fixed) or autoscaling, not both; "
                "use num_replicas: null with an autoscaling block to autoscale"
            )
        if self.num_replicas is None and self.autoscaling is None:
            raise ValueError("num_replicas is null but no autoscaling block is given; set one of them")
        return self

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, **self.placement_options()}
        if self.memory_bytes:
            actor["memory"] = self.memory_bytes
        opts: dict[str, Any] = {"ray_actor_options": actor, "max_ongoing_requests": self.max_ongoing_requests}
        if self.max_queued_requests is not None:
            opts["max_queued_requests"] = self.max_queued_requests
        if self.autoscaling is not None:
            opts["autoscaling_config"] = self.autoscaling.model_dump()
        else:
            opts["num_replicas"] = self.num_replicas
        return opts
