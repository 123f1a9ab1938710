"""The application graph build_app binds: replicas get the config less the deployments' replica counts and
resources, so that changing one deployment's replicas is a Serve options change of that deployment alone (Serve
restarts every deployment whose bound arguments change)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mmrag.config import MmragConfig, load_config
from mmrag.serve.app import PLACEMENT_FIELDS, build_app_from_config, replica_config

pytestmark = pytest.mark.unit
BASE = {"generator": {"engine": "echo"}, "ingest": {"ocr": "never"}}


def _graph(cfg: MmragConfig) -> dict[str, tuple[str, dict[str, Any]]]:
    """Deployment name -> (its bound arguments as JSON, its Serve options)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}

    def walk(app: Any) -> str:
        d = app._bound_deployment
        args = [walk(a) if hasattr(a, "_bound_deployment") else a for a in d.init_args]
        kwargs = {k: walk(v) if hasattr(v, "_bound_deployment") else v for k, v in d.init_kwargs.items()}
        c = d._deployment_config
        opts = {"num_replicas": c.num_replicas, "max_ongoing_requests": c.max_ongoing_requests,
                "actor": d.ray_actor_options}  # fmt: skip
        out[d.name] = (json.dumps([args, kwargs], default=str, sort_keys=True), opts)
        return f"<{d.name}>"

    walk(build_app_from_config(cfg))
    return out


def test_a_replica_count_change_restarts_no_other_deployment(mmrag_home: str) -> None:
    before = _graph(load_config("local-cpu", BASE))
    after = _graph(load_config("local-cpu", {**BASE, "retriever": {"num_replicas": 3, "num_cpus": 0.3}}))
    assert set(before) == {"Gateway", "Retriever", "Reranker", "Generator", "Ingestor"}
    for name in before:
        assert before[name][0] == after[name][0], f"{name}'s bound arguments changed: Serve would restart it"
    assert after["Retriever"][1]["num_replicas"] == 3 and after["Retriever"][1]["actor"]["num_cpus"] == 0.3
    assert all(before[n][1] == after[n][1] for n in before if n != "Retriever")


def test_a_behaviour_change_still_reaches_the_replicas(mmrag_home: str) -> None:
    before = _graph(load_config("local-cpu", BASE))
    after = _graph(load_config("local-cpu", {**BASE, "retriever": {"refresh_interval_s": 0.75}}))
    assert before["Retriever"][0] != after["Retriever"][0]
    assert before["Generator"][0] == after["Generator"][0]  # the LLM's arguments do not hold the search options


def test_the_replica_config_is_the_config_less_placement() -> None:
    cfg = load_config("gpu", {})
    tree = replica_config(cfg)
    again = MmragConfig.model_validate(tree)
    full = cfg.model_dump(mode="json")
    for section in ("retriever", "reranker", "generator", "gateway", "ingestor"):
        assert not set(PLACEMENT_FIELDS) & set(tree[section])
        kept = {k: v for k, v in full[section].items() if k not in PLACEMENT_FIELDS}
        assert {k: v for k, v in again.model_dump(mode="json")[section].items() if k in kept} == kept
    assert again.models == cfg.models and again.store == cfg.store and again.server == cfg.server


def test_shards_bind_a_retriever_deployment_per_shard(mmrag_home: str) -> None:
    """retriever.shards 2: two retriever deployments (each with the retriever section's replicas), told their shard,
    both handed to the gateway; 1 (the default) is the graph above, unchanged."""
    app = build_app_from_config(load_config("local-cpu", {**BASE, "retriever": {"shards": 2, "num_replicas": 2}}))
    shards = app._bound_deployment.init_args[1]
    names = [s._bound_deployment.name for s in shards]
    assert names == ["Retriever-shard-0", "Retriever-shard-1"]
    assert [s._bound_deployment.init_kwargs["shard"] for s in shards] == [0, 1]
    assert all(s._bound_deployment._deployment_config.num_replicas == 2 for s in shards)
    with pytest.raises(ValueError, match="shard_count"):
        from mmrag.store.search_config import SearchIndexConfig

        SearchIndexConfig(shard_index=2, shard_count=2)


def test_node_placement_reaches_every_deployment_and_restarts_none(mmrag_home: str) -> None:
    """Custom resources and node labels place each deployment on serving (or ingestion) nodes; like replica counts,
    they are Serve options only. The generator's replica lives in its engine's placement group, so its resources join
    the first bundle and its labels select every bundle's node."""
    serve_node = {"resources": {"mmrag_serve": 0.01}, "label_selector": {"mmrag-role": "serve"}}
    ingest_node = {"resources": {"mmrag_ingest": 0.01}, "label_selector": {"mmrag-role": "in(ingest,any)"}}
    placed = {**BASE, **{s: serve_node for s in ("retriever", "reranker", "gateway")}}
    placed["generator"] = {**BASE["generator"], **serve_node}
    before = _graph(load_config("local-cpu", BASE))
    after = _graph(load_config("local-cpu", {**placed, "ingestor": ingest_node}))
    for name in ("Gateway", "Retriever", "Reranker"):
        assert after[name][1]["actor"]["resources"] == {"mmrag_serve": 0.01}
        assert after[name][1]["actor"]["label_selector"] == {"mmrag-role": "serve"}
    assert after["Ingestor"][1]["actor"]["resources"] == {"mmrag_ingest": 0.01}
    assert after["Ingestor"][1]["actor"]["label_selector"] == {"mmrag-role": "in(ingest,any)"}
    # (the generator's LLMConfig carries its own deployment options, as it does its replica count)
    assert all(before[n][0] == after[n][0] for n in before if n != "Generator"), "placement changed bound arguments"

    from ray.llm._internal.serve.core.server.llm_server import LLMServer

    from mmrag.serve.generator import build_llm_config

    opts = LLMServer.get_deployment_options(build_llm_config(load_config("local-cpu", placed)))
    assert opts["placement_group_bundles"][0]["mmrag_serve"] == 0.01
    assert opts["placement_group_bundle_label_selector"] == [{"mmrag-role": "serve"}]
    assert "label_selector" not in opts["ray_actor_options"]
