"""The one config tree of mmrag.

Every part of the system is configured from :class:`MmragConfig`. Profiles are YAML files in
``deploy/`` (``local-cpu``, ``gpu``); a Serve config's ``args:`` block and a RayService's
``serveConfigV2`` hold the same tree. Unknown keys are errors (``extra="forbid"``) so a typo in
a YAML file never silently falls back to a default.

Strings in path-like fields may use ``~`` and ``${ENV_VAR}``; ``${MMRAG_HOME}`` defaults to
:func:`mmrag.constants.mmrag_home`. A model reference ``tiny:<name>`` means the locally built
random-weight checkpoint ``<models.tiny_dir>/<name>`` (see ``mmrag models build-tiny``); ``real:<name>`` a real
checkpoint prepared offline from a package, ``<models.real_dir>/<name>`` (see ``mmrag models build``).

The tree's branches live in submodules, one room each: :mod:`~mmrag.config.store`, :mod:`~mmrag.config.models`,
:mod:`~mmrag.config.ingest`, :mod:`~mmrag.config.placement` (replicas, resources, nodes, autoscaling),
:mod:`~mmrag.config.deployments` (retriever, ingestion service, reranker, generator, calibration, summaries),
:mod:`~mmrag.config.server`, and what they share in :mod:`~mmrag.config.common`. This module holds the root
(:class:`MmragConfig`) and loading (profiles, ``MMRAG_*`` overrides); import every name from here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from mmrag import constants
from mmrag.config.common import (
    CHANNELS,
    COLLECTION_PATTERN,
    PKG_PREFIX,
    REAL_GENERATOR,
    REAL_PREFIX,
    TINY_COLQWEN2_5,
    TINY_COLQWEN2_5_BASE,
    TINY_CROSS_ENCODER,
    TINY_GENERATOR,
    TINY_PREFIX,
    TINY_QWEN2_5_VL,
    TINY_RETRIEVER,
    AttnImpl,
    Channel,
    Device,
    Dtype,
    FusionMethod,
    RerankerKind,
    SearchMode,
    _Strict,
    check_weights,
    expand_path,
)
from mmrag.config.deployments import (
    CalibrationConfig,
    GeneratorConfig,
    IngestorConfig,
    RerankerConfig,
    RetrieverConfig,
    SummaryConfig,
)
from mmrag.config.ingest import IngestConfig, ShotsConfig, SpeechConfig, StageResources
from mmrag.config.models import GeneratorModelConfig, ModelsConfig, ModelSource, RetrieverModelConfig, TextModelConfig
from mmrag.config.placement import AutoscalingConfig, DeploymentConfig, NodePlacement
from mmrag.config.server import AdmissionConfig, ServerConfig
from mmrag.config.store import StoreConfig, StoreWriterConfig


class MmragConfig(_Strict):
    """Root of the config tree."""

    profile: str = Field(default="custom", description="Name of the profile this config came from.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="LanceDB location.")
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="Encoder and generator.")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Ingestion pipeline.")
    retriever: RetrieverConfig = Field(default_factory=RetrieverConfig, description="Retriever deployment.")
    reranker: RerankerConfig = Field(default_factory=RerankerConfig, description="Reranker deployment.")
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="Per-collection calibration of fusion and reranking."
    )
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig, description="Generator deployment.")
    gateway: DeploymentConfig = Field(default_factory=DeploymentConfig, description="HTTP ingress deployment.")
    ingestor: IngestorConfig = Field(
        default_factory=lambda: IngestorConfig(num_cpus=0.25),
        description="Ingestion service deployment (uploads over the API).",
    )
    server: ServerConfig = Field(default_factory=ServerConfig, description="HTTP server.")
    summary: SummaryConfig = Field(default_factory=SummaryConfig, description="Video summaries (map-reduce).")


# ------------------------------------------------------------------------------------- loading
class ConfigError(ValueError):
    """A config that does not validate; the message names each bad field and what to do."""


def profiles_dir() -> Path:
    """Where named profiles live: deploy/profiles in a checkout, mmrag/_profiles in a wheel."""
    packaged = Path(__file__).resolve().parents[1] / "_profiles"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "deploy" / "profiles"


def sample_dir() -> Path:
    """The demo's sample documents: deploy/sample in a checkout, mmrag/_sample in a wheel."""
    packaged = Path(__file__).resolve().parents[1] / "_sample"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "deploy" / "sample"


def profile_path(profile: str) -> Path:
    """Resolve a profile name (``local-cpu``) or a YAML path to a file."""
    p = Path(profile).expanduser()
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        return p
    candidate = profiles_dir() / f"{profile}.yaml"
    if not candidate.is_file():
        known = sorted(x.stem for x in profiles_dir().glob("*.yaml"))
        raise ConfigError(f"unknown profile {profile!r}; known profiles: {', '.join(known)} (or pass a YAML path)")
    return candidate


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid mmrag config ({source}):"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling against `mmrag config schema`"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


#: A deployment scales one way: a layer that picks one of these (with a value) drops the other from the layers
#: below, so ``MMRAG_RETRIEVER__NUM_REPLICAS=2`` works over a profile that autoscales, and vice versa.
_SCALING_MODES = ("num_replicas", "autoscaling")


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    for mine, other in (_SCALING_MODES, _SCALING_MODES[::-1]):
        if over.get(mine) is not None and other not in over and other in out:
            out[other] = None
    return out


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Collect ``MMRAG_<SECTION>__<FIELD>=value`` overrides as a nested dict (values parsed as YAML)."""
    environ = dict(os.environ) if environ is None else environ
    sections = set(MmragConfig.model_fields)
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(constants.ENV_PREFIX) or name in constants.RESERVED_ENV:
            continue
        path = [p.lower() for p in name[len(constants.ENV_PREFIX) :].split("__")]
        if path[0] not in sections:
            raise ConfigError(
                f"environment variable {name} is not an mmrag setting: config overrides look like "
                f"MMRAG_<SECTION>__<FIELD> with SECTION one of {', '.join(sorted(sections))}; "
                f"other knobs are {', '.join(sorted(constants.RESERVED_ENV))}"
            )
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return out


def build_config(data: dict[str, Any] | None = None, *, source: str = "arguments") -> MmragConfig:
    """Validate a config dict, turning pydantic's error into one that names fields and fixes."""
    try:
        return MmragConfig.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from e


def load_config(
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    use_env: bool = True,
) -> MmragConfig:
    """Load a profile (name or path), apply env overrides, then explicit overrides."""
    profile = profile or os.environ.get(constants.ENV_PROFILE) or constants.DEFAULT_PROFILE
    path = profile_path(profile)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level, found {type(data).__name__}")
    data.setdefault("profile", path.stem)
    if use_env:
        data = _deep_merge(data, env_overrides())
    if overrides:
        data = _deep_merge(data, overrides)
    return build_config(data, source=str(path))


__all__ = [
    "CHANNELS",
    "COLLECTION_PATTERN",
    "PKG_PREFIX",
    "REAL_GENERATOR",
    "REAL_PREFIX",
    "TINY_COLQWEN2_5",
    "TINY_COLQWEN2_5_BASE",
    "TINY_CROSS_ENCODER",
    "TINY_GENERATOR",
    "TINY_PREFIX",
    "TINY_QWEN2_5_VL",
    "TINY_RETRIEVER",
    "AdmissionConfig",
    "AttnImpl",
    "AutoscalingConfig",
    "CalibrationConfig",
    "Channel",
    "ConfigError",
    "DeploymentConfig",
    "Device",
    "Dtype",
    "FusionMethod",
    "GeneratorConfig",
    "GeneratorModelConfig",
    "IngestConfig",
    "IngestorConfig",
    "MmragConfig",
    "ModelSource",
    "ModelsConfig",
    "NodePlacement",
    "RerankerConfig",
    "RerankerKind",
    "RetrieverConfig",
    "RetrieverModelConfig",
    "SearchMode",
    "ServerConfig",
    "ShotsConfig",
    "SpeechConfig",
    "StageResources",
    "StoreConfig",
    "StoreWriterConfig",
    "SummaryConfig",
    "TextModelConfig",
    "build_config",
    "check_weights",
    "env_overrides",
    "expand_path",
    "load_config",
    "profile_path",
    "profiles_dir",
    "sample_dir",
]
