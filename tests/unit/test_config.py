"""The config tree: profiles load, typos are errors that name the field, env overrides apply."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import BaseModel

from mmrag import config as C

pytestmark = pytest.mark.unit


def _walk_fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        ann = field.annotation
        for sub in (*getattr(ann, "__args__", ()), ann):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                yield from _walk_fields(sub, f"{prefix}{name}.")


@pytest.mark.parametrize("profile", ["local-cpu", "gpu", "gpu-tiny"])
def test_profiles_validate(profile: str) -> None:
    cfg = C.load_config(profile)
    assert cfg.profile == profile
    # the dumped config round-trips through validation unchanged
    assert C.build_config(cfg.model_dump(mode="json")) == cfg


def test_local_cpu_fits_two_cores() -> None:
    cfg = C.load_config("local-cpu")
    serving = [cfg.retriever, cfg.reranker, cfg.generator, cfg.gateway]

    def most(d: C.DeploymentConfig) -> int:
        return d.num_replicas if d.num_replicas is not None else d.autoscaling.max_replicas

    # every deployment at its largest still schedules on 2 cores, leaving room for ingestion
    assert sum(d.num_cpus * most(d) for d in serving) <= 1.8
    assert all(d.autoscaling is not None for d in (cfg.retriever, cfg.reranker, cfg.gateway))
    assert all(d.num_gpus == 0 for d in serving)
    assert cfg.models.uses_tiny()
    assert cfg.models.retriever.attn_implementation == "eager"


def test_gpu_profile_uses_real_models_and_gpus() -> None:
    cfg = C.load_config("gpu")
    assert not cfg.models.uses_tiny()
    assert "colqwen2.5" in cfg.models.retriever.model
    assert "Qwen2.5-VL" in cfg.models.generator.model
    assert cfg.generator.num_gpus >= 1
    for dep in (cfg.retriever, cfg.reranker, cfg.generator, cfg.gateway):
        assert dep.num_replicas is None and dep.autoscaling is not None
        opts = dep.serve_options()
        assert "autoscaling_config" in opts and "num_replicas" not in opts


#: Where gpu-tiny may differ from gpu: the models (tiny references, CPU device and dtype, CPU-sized context) and the
#: placement (CPU shares, no GPUs); deploy/profiles/gpu-tiny.yaml says why for each. Everything else must be equal.
SERVING = ("retriever", "reranker", "generator", "gateway", "ingestor")
INGEST_STAGES = ("read", "embed", "text_embed")
GPU_TINY_CHANGES = {
    "profile",
    "store.uri",
    "server.host",
    *(f"models.retriever.{f}" for f in ("model", "dtype", "device", "attn_implementation")),
    *(f"models.generator.{f}" for f in ("model", "dtype", "device", "enforce_eager")),
    *(f"{d}.{f}" for d in SERVING for f in ("num_cpus", "num_gpus")),
    *(f"ingest.{s}.{f}" for s in INGEST_STAGES for f in ("num_cpus", "num_gpus")),
    *(f"ingest.speech.{f}" for f in ("model", "device", "compute_type", "stage.num_cpus", "stage.num_gpus")),
}


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_gpu_tiny_is_the_gpu_profile_on_cpu() -> None:
    gpu, tiny = (C.load_config(p, use_env=False) for p in ("gpu", "gpu-tiny"))
    a, b = _flat(gpu.model_dump(mode="json")), _flat(tiny.model_dump(mode="json"))
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    drift = sorted(differ - GPU_TINY_CHANGES)
    assert not drift, f"gpu-tiny differs from gpu beyond its CPU changes (follow gpu.yaml or list why): {drift}"
    # same deployments, same scaling: every deployment autoscales with the gpu profile's bounds
    for name in SERVING:
        assert getattr(tiny, name).autoscaling == getattr(gpu, name).autoscaling is not None
    # the gpu profile's architectures, as tiny checkpoints, on CPU
    m = tiny.models
    assert (m.retriever.model, m.retriever.family) == ("tiny:colqwen2.5", "colqwen2_5")
    assert m.generator.model == "tiny:qwen2.5-vl" and m.uses_tiny()
    assert {m.retriever.device, m.generator.device} == {"cpu"} and {m.retriever.dtype, m.generator.dtype} == {"float32"}
    assert m.retriever.attn_implementation in ("eager", "sdpa")
    assert all(getattr(tiny, d).num_gpus == 0 for d in SERVING)
    assert all(getattr(tiny.ingest, s).num_gpus == 0 for s in INGEST_STAGES)
    # every deployment at its largest and every ingest actor fit 2 CPUs together
    serving = sum(getattr(tiny, d).num_cpus * getattr(tiny, d).autoscaling.max_replicas for d in SERVING)
    ingesting = sum(getattr(tiny.ingest, s).num_cpus * getattr(tiny.ingest, s).concurrency for s in INGEST_STAGES)
    assert serving + ingesting <= 2.0


def test_every_field_has_a_description() -> None:
    missing = [path for path, f in _walk_fields(C.MmragConfig) if not f.description]
    assert missing == []


def test_unknown_key_names_the_field(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"retriever": {"num_cpu": 1}}))
    with pytest.raises(C.ConfigError) as e:
        C.load_config(str(bad))
    assert "retriever.num_cpu" in str(e.value)
    assert "unknown field" in str(e.value)


def test_cross_field_rules_say_what_to_fix() -> None:
    with pytest.raises(C.ConfigError, match="clip_overlap_seconds"):
        C.build_config({"ingest": {"clip_seconds": 2, "clip_overlap_seconds": 3}})
    with pytest.raises(C.ConfigError, match="either num_replicas"):
        C.build_config({"retriever": {"num_replicas": 2, "autoscaling": {"max_replicas": 3}}})
    with pytest.raises(C.ConfigError, match="min_replicas"):
        C.build_config({"retriever": {"num_replicas": None, "autoscaling": {"min_replicas": 5, "max_replicas": 2}}})


def test_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MMRAG_RETRIEVER__NUM_REPLICAS", "3")
    monkeypatch.setenv("MMRAG_STORE__URI", str(tmp_path / "db"))
    monkeypatch.setenv("MMRAG_INGEST__READ__CONCURRENCY", "7")
    cfg = C.load_config("local-cpu")
    assert cfg.retriever.num_replicas == 3
    assert cfg.store.uri == str(tmp_path / "db")
    assert cfg.ingest.read.concurrency == 7


def test_env_typo_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMRAG_RETRIVER__NUM_REPLICAS", "3")
    with pytest.raises(C.ConfigError, match="MMRAG_RETRIVER__NUM_REPLICAS is not an mmrag setting"):
        C.load_config("local-cpu")
    monkeypatch.delenv("MMRAG_RETRIVER__NUM_REPLICAS")
    monkeypatch.setenv("MMRAG_RETRIEVER__NUM_REPLICA", "3")
    with pytest.raises(C.ConfigError, match=r"retriever\.num_replica"):
        C.load_config("local-cpu")


def test_paths_expand_home_and_tiny(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MMRAG_HOME", str(tmp_path))
    cfg = C.load_config("local-cpu")
    assert cfg.store.uri == f"{tmp_path}/lancedb"
    assert cfg.models.resolve("tiny:colqwen2") == f"{tmp_path}/models/tiny/colqwen2"
    assert cfg.models.resolve("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"
    # local-cpu's generator is the real SmolLM2 prepared offline under models.real_dir; the gpu profile's is a hub id
    assert cfg.models.generator.model == "real:smollm2-135m-instruct" and cfg.models.generator.vision is None
    assert cfg.models.resolve("real:smollm2-135m-instruct") == f"{tmp_path}/models/real/smollm2-135m-instruct"
    assert cfg.models.real_refs() == ["real:smollm2-135m-instruct"]
    assert C.load_config("gpu").models.real_refs() == []
    # object-store URIs are left alone
    assert C.StoreConfig(uri="s3://bucket/x").uri == "s3://bucket/x"


def test_unset_env_var_in_path_is_an_error() -> None:
    with pytest.raises(C.ConfigError, match=r"\$\{NOT_SET_ANYWHERE\}"):
        C.build_config({"store": {"uri": "${NOT_SET_ANYWHERE}/db"}})


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(C.ConfigError, match=r"known profiles: .*gpu.*local-cpu"):
        C.load_config("nope")


def test_schema_is_json() -> None:
    schema = C.MmragConfig.model_json_schema()
    json.dumps(schema)
    assert schema["additionalProperties"] is False


def test_an_override_picks_the_scaling_mode(tmp_path) -> None:
    prof = tmp_path / "p.yaml"
    prof.write_text(
        "retriever: {num_replicas: null, autoscaling: {min_replicas: 1, max_replicas: 2}}\n"
        "reranker: {num_replicas: 1}\n"
    )
    cfg = C.load_config(str(prof), {"retriever": {"num_replicas": 3}}, use_env=False)
    assert cfg.retriever.num_replicas == 3 and cfg.retriever.autoscaling is None
    cfg = C.load_config(str(prof), {"reranker": {"autoscaling": {"max_replicas": 4}}}, use_env=False)
    assert cfg.reranker.num_replicas is None and cfg.reranker.autoscaling.max_replicas == 4
    both = {"retriever": {"num_replicas": 2, "autoscaling": {"max_replicas": 2}}}
    with pytest.raises(C.ConfigError, match="not both"):
        C.load_config(str(prof), both, use_env=False)


@pytest.mark.parametrize(
    ("section", "bad", "says"),
    [
        ("retriever", {"label_selector": {"mmrag role": "serve"}}, "label_selector"),
        ("retriever", {"label_selector": {"mmrag-role": "in(serve"}}, "label selector value"),
        ("gateway", {"resources": {"CPU": 1}}, "num_cpus"),
        ("reranker", {"resources": {"mmrag_serve": -1}}, "negative"),
    ],
)
def test_node_placement_is_checked_where_it_is_written(section: str, bad: dict, says: str) -> None:
    with pytest.raises(C.ConfigError, match=f"(?s){section}.*{says}"):
        C.load_config("local-cpu", {section: bad})


def test_ingest_stages_take_node_placement() -> None:
    embed = {"resources": {"mmrag_ingest": 0.1}, "label_selector": {"mmrag-role": "ingest"}}
    cfg = C.load_config("local-cpu", {"ingest": {"embed": embed}})
    assert cfg.ingest.embed.placement_options() == {
        "resources": {"mmrag_ingest": 0.1},
        "label_selector": {"mmrag-role": "ingest"},
    }
    assert cfg.ingest.read.placement_options() == {}  # unset: Ray places the stage anywhere, as before
