"""Generator deployment: the vision-language model that answers from retrieved pages, images and clips.

:func:`build_generator` binds the deployment. ``generator.engine: vllm`` is Ray Serve LLM's own ``LLMServer``
running vLLM (``ray.serve.llm.build_llm_deployment``); ``echo`` is the same ``LLMServer`` with
:class:`~mmrag.serve.echo_engine.EchoEngine` injected as its engine: a deterministic debug engine that answers
instantly, for API tests. Both are called the same way and answer with the same types.

The rest of the generator's jobs live beside it: :mod:`mmrag.serve.generator_client` talks to the deployment
(:func:`~mmrag.serve.generator_client.generate`), :mod:`mmrag.serve.prompt` builds the prompt on the answer path,
and :mod:`mmrag.imaging` resizes the images in it.
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import TYPE_CHECKING, Any

from mmrag import constants
from mmrag.config import REAL_PREFIX, TINY_PREFIX, MmragConfig
from mmrag.imaging import MIN_IMAGE_PIXELS

if TYPE_CHECKING:
    from ray.serve import Application
    from ray.serve.llm import LLMConfig


#: ``model_type`` values of vision-language checkpoints (config.json) that carry no ``vision_config``.
VISION_MODEL_TYPES = frozenset({"llava", "llava_next", "idefics2", "idefics3", "paligemma", "mllama", "smolvlm"})


def is_vision_model(cfg: MmragConfig) -> bool:
    """Whether the generator takes images: ``models.generator.vision`` when set, else read from the checkpoint.

    A local checkpoint (a path, ``tiny:``, ``real:``) is a vision model when its config.json has a
    ``vision_config`` or a known vision-language ``model_type``. A hub id is not read (no network here): it counts
    as a vision model, the default of this project; set ``vision: false`` for a text-only hub model. A ``real:``
    model that is not built yet counts as text-only (every real model mmrag prepares offline is a text model).
    """
    m = cfg.models.generator
    if m.vision is not None:
        return m.vision
    return _detect_vision(cfg.models.resolve(m.model), m.model.startswith(REAL_PREFIX))


@functools.lru_cache(maxsize=64)
def _detect_vision(source: str, real: bool) -> bool:
    config = os.path.join(source, "config.json")
    try:
        with open(config, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return not real
    archs = " ".join(data.get("architectures") or [])
    return bool(
        data.get("vision_config")
        or data.get("model_type") in VISION_MODEL_TYPES
        or ("ForConditionalGeneration" in archs and "VL" in archs)
    )


def cpu_bind(cfg: MmragConfig) -> str:
    """The CPU engine's ``VLLM_CPU_OMP_THREADS_BIND``: its own cores when ``models.generator.cpu_engine_cores``
    splits a local node (:mod:`mmrag.serve.cpu_split`), else vLLM's ``auto``."""
    from mmrag.serve.cpu_split import engine_bind, split

    sp = None if os.environ.get("RAY_ADDRESS") else split(cfg.models.generator.cpu_engine_cores)
    return engine_bind(sp[0]) if sp else "auto"


# ============================================================================================ deployment
def build_llm_config(cfg: MmragConfig) -> LLMConfig:
    """The ``ray.serve.llm.LLMConfig`` of the generator deployment for ``cfg`` (see :func:`build_generator`)."""
    from ray.serve.llm import LLMConfig

    g, m = cfg.generator, cfg.models.generator
    echo = g.engine == "echo"
    on_gpu = g.num_gpus > 0 and not echo

    engine_kwargs: dict[str, Any] = {
        "max_model_len": m.max_model_len,
        "enforce_eager": m.enforce_eager,
        "dtype": m.dtype,
        "tensor_parallel_size": m.tensor_parallel_size,
    }
    if is_vision_model(cfg):
        # Videos reach the model as sampled frames (images), so the video encoder gets no profiling budget.
        engine_kwargs["limit_mm_per_prompt"] = {"image": m.max_images_per_prompt, "video": 0}
        # The engine resizes every image into these bounds, as build_prompt already did: the per-image token
        # budget that vLLM profiles and reserves matches what prompts carry. (``size``, not the deprecated
        # ``max_pixels`` processor kwarg, which transformers 5.23 warns about on every request.)
        engine_kwargs["mm_processor_kwargs"] = {
            "size": {"shortest_edge": MIN_IMAGE_PIXELS, "longest_edge": m.image_max_pixels}
        }
    if m.revision:
        engine_kwargs["revision"] = m.revision
    if on_gpu:
        engine_kwargs["gpu_memory_utilization"] = m.gpu_memory_utilization
    engine_kwargs.update(m.engine_kwargs)

    # Serve options from our config. The replica actor itself never holds a GPU: the engine's workers do, in
    # the placement-group bundles below, and Ray Serve LLM adds the replica's resources to the first bundle.
    opts = g.serve_options()
    actor = dict(opts.pop("ray_actor_options"))
    actor["num_gpus"] = 0
    deployment_config: dict[str, Any] = {**opts, "ray_actor_options": actor}
    if selector := actor.pop("label_selector", None):
        # The replica runs in the engine's placement group (its custom resources are merged into the first bundle by
        # Ray Serve LLM), so the node labels go on the bundles: one selector, which Serve applies to every bundle.
        deployment_config["placement_group_bundle_label_selector"] = [selector]

    env: dict[str, str] = {}
    if on_gpu:
        per_worker = g.num_gpus / m.tensor_parallel_size
        if per_worker > 1:
            raise ValueError(
                f"generator.num_gpus ({g.num_gpus}) is more than one GPU per vLLM worker with "
                f"models.generator.tensor_parallel_size={m.tensor_parallel_size}; vLLM runs one worker per GPU, "
                f"so raise tensor_parallel_size to {math.ceil(g.num_gpus)} or lower generator.num_gpus"
            )
        accelerator = {"kind": "gpu"}
        placement = {"bundle_per_worker": {"GPU": per_worker}, "strategy": "PACK"}
    else:
        accelerator = {"kind": "cpu"}
        # Ray Serve LLM's CPU default is one extra whole CPU per worker on top of the replica's: a 2-core
        # profile with fractional CPUs could then never schedule. The vLLM CPU engine runs in processes the
        # replica spawns (mp executor), so the replica's num_cpus is the generator's whole reservation.
        # (A bundle must hold something: with num_cpus 0 it gets a token 0.01 CPU.)
        placement = {"bundles": [{"CPU": 0 if g.num_cpus > 0 or g.memory_bytes else 0.01}], "strategy": "PACK"}
        if not echo:
            env.update(
                {
                    # GiB of KV cache; vLLM's CPU default would reserve far more than a small profile has.
                    "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
                    # auto binds OpenMP threads to the node's cores, one per physical core, less the cores vLLM
                    # reserves (VLLM_CPU_NUM_OF_RESERVED_CPU, default 1) for its engine-core process, which
                    # busy-polls while the workers compute, and for the rest of the node. Keep that reserve: on
                    # 2 cores, OpenMP threads on both made bare vLLM slower too (9.4 -> 5.7 ms between tokens
                    # with one thread) and Ray Serve's generator slower still (13 -> 6 ms), as every other
                    # process on the node stalled the threads' barriers.
                    "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND") or cpu_bind(cfg),
                }
            )
            if "VLLM_CPU_NUM_OF_RESERVED_CPU" in os.environ:
                env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"]
    if m.model.startswith((TINY_PREFIX, REAL_PREFIX)) and not echo:
        # A tiny or real: checkpoint is a local directory: nothing may try the hub (it would hang offline).
        env.update(
            {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1"}
        )

    source = cfg.models.resolve(m.model)
    extra: dict[str, Any] = {}
    if "://" not in source:
        extra["callback_config"] = {"callback_class": f"{__name__}.{_CALLBACK}"}
    return LLMConfig(
        model_loading_config={"model_id": m.served_model_name, "model_source": source},
        engine_kwargs=engine_kwargs,
        accelerator_config=accelerator,
        placement_group_config=placement,
        deployment_config=deployment_config,
        runtime_env={"env_vars": env} if env else None,
        experimental_configs={"stream_batching_interval_ms": g.stream_batching_ms},
        **extra,
    )


_CALLBACK = "SkipNodeDownloadCallback"


def __getattr__(name: str) -> Any:
    """``SkipNodeDownloadCallback``, defined on first use so that importing this module does not import Ray Serve
    LLM (Ray Serve LLM loads it by name in the replica).

    It skips Ray Serve LLM's node-initialization step for models given as a local path or hub id: that step starts
    a Ray task on every node of the placement group only to find there is no cloud mirror to download from (a
    no-op), and that task's fresh worker process cost ~40 s of the start-up on a busy 2-core machine.
    """
    if name != _CALLBACK:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ray.llm._internal.common.callbacks.base import CallbackBase

    class SkipNodeDownloadCallback(CallbackBase):
        async def on_before_node_init(self) -> None:
            self.ctx.run_init_node = False

    SkipNodeDownloadCallback.__module__, SkipNodeDownloadCallback.__qualname__ = __name__, name
    globals()[name] = SkipNodeDownloadCallback
    return SkipNodeDownloadCallback


def build_generator(cfg: MmragConfig) -> Application:
    """The generator deployment (named :data:`mmrag.constants.GENERATOR_DEPLOYMENT`), bound and ready to deploy.

    ``engine: vllm`` serves ``models.generator`` with Ray Serve LLM's ``LLMServer`` on vLLM, on CPU when
    ``generator.num_gpus`` is 0; ``engine: echo`` binds the same ``LLMServer`` with
    :class:`~mmrag.serve.echo_engine.EchoEngine`.
    A ``tiny:`` or ``real:`` model must be built first (``mmrag models build``;
    :func:`mmrag.serve.app.build_app_from_config` does it).
    """
    from ray.serve.llm import build_llm_deployment

    from mmrag.serve.echo_engine import EchoEngine

    bind_kwargs = {"engine_cls": EchoEngine} if cfg.generator.engine == "echo" else None
    return build_llm_deployment(
        build_llm_config(cfg),
        bind_kwargs=bind_kwargs,
        # build_llm_deployment names it "LLMServer:<model id>"; Serve YAML overrides need our stable name.
        override_serve_options={"name": constants.GENERATOR_DEPLOYMENT},
    )


__all__ = ["build_generator", "build_llm_config", "cpu_bind", "is_vision_model"]
