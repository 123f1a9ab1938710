"""Every environment knob mmrag reads, in one place, all under the ``MMRAG_`` prefix.

Config values are overridden with ``MMRAG_<SECTION>__<FIELD>[__<FIELD>...]`` (see
:mod:`mmrag.config`); the names below are the only other ``MMRAG_`` variables, and any
``MMRAG_`` variable that is neither is rejected so a typo never goes unnoticed.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_PREFIX = "MMRAG_"

#: Root of mmrag's local state (tiny checkpoints, the embedded LanceDB, run outputs).
ENV_HOME = "MMRAG_HOME"
#: Profile used when none is given on the command line (a name in deploy/ or a YAML path).
ENV_PROFILE = "MMRAG_PROFILE"
#: Log level for mmrag's own loggers.
ENV_LOG_LEVEL = "MMRAG_LOG_LEVEL"
#: Set to "0" to leave the torchvision/torchaudio compatibility shim off (see mmrag.compat).
ENV_TORCH_COMPAT = "MMRAG_TORCH_COMPAT"

#: Process-level knobs of the HAProxy template patch (:mod:`mmrag.compat.ray_haproxy`), read where HAProxy's config is
#: rendered, not config-tree settings.
ENV_HAPROXY = ("MMRAG_HAPROXY_ADMIN_HOST", "MMRAG_HAPROXY_QUEUE_MS", "MMRAG_HAPROXY_ADMISSION")
#: The API key ``mmrag ingest --url`` sends (a client setting, not a config-tree one).
ENV_API_KEY = "MMRAG_API_KEY"
#: Set by ``mmrag serve`` and ``mmrag demo`` for everything they start (:mod:`mmrag.lifetime`): the mark by which
#: their reaper finds those processes once they are orphans. Never set it yourself.
ENV_RUN_ID = "MMRAG_RUN_ID"
RESERVED_ENV = frozenset(
    {ENV_HOME, ENV_PROFILE, ENV_LOG_LEVEL, ENV_TORCH_COMPAT, ENV_API_KEY, ENV_RUN_ID, *ENV_HAPROXY}
)

DEFAULT_PROFILE = "local-cpu"

#: Stable application and deployment names: Serve YAML overrides refer to these.
APP_NAME = "mmrag"
RETRIEVER_DEPLOYMENT = "Retriever"
RERANKER_DEPLOYMENT = "Reranker"
GENERATOR_DEPLOYMENT = "Generator"
GATEWAY_DEPLOYMENT = "Gateway"
INGESTOR_DEPLOYMENT = "Ingestor"


def retriever_deployment(shard: int, shards: int) -> str:
    """The retriever deployment holding ``shard`` of ``shards`` (``retriever.shards``): ``Retriever`` when the index
    is one, else ``Retriever-shard-<i>`` (a deployment per shard: Serve's replicas of one deployment are
    interchangeable, so a shard cannot be a replica)."""
    return RETRIEVER_DEPLOYMENT if shards <= 1 else f"{RETRIEVER_DEPLOYMENT}-shard-{shard}"


def mmrag_home() -> Path:
    """The state directory: ``$MMRAG_HOME``, else ``$XDG_CACHE_HOME/mmrag``, else ``~/.cache/mmrag``."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(base) / "mmrag").resolve()
