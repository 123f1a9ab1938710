"""init_ray: a Ray started by mmrag gets the ingress mode's environment; a cluster joined keeps its own."""

from __future__ import annotations

import pytest

from mmrag.config import ConfigError, load_config

pytestmark = pytest.mark.unit

KEYS = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S")


@pytest.fixture
def fake_ray(monkeypatch):
    import ray

    started: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: started.append(kw))
    for key in (*KEYS, "RAY_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    return started


def test_local_ray_gets_the_haproxy_environment(fake_ray, monkeypatch) -> None:
    import os

    from mmrag.runtime import init_ray

    server = load_config("local-cpu", {"server": {"metrics_port": 9999}}).server
    assert server.ingress == "haproxy" and server.drain_s == 1
    init_ray(server)
    assert [os.environ[k] for k in KEYS] == ["1", "1", "1"]
    assert fake_ray[0]["_metrics_export_port"] == 9999


def test_the_environment_wins_and_proxy_mode_turns_it_off(fake_ray, monkeypatch) -> None:
    import os

    from mmrag.runtime import init_ray

    monkeypatch.setenv("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "7")
    init_ray(load_config("local-cpu").server)
    assert os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "7"
    assert load_config("local-cpu", {"server": {"ingress": "proxy"}}).server.ray_env() == {
        "RAY_SERVE_ENABLE_HA_PROXY": "0",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0",
    }


def test_joining_a_cluster_sets_nothing(fake_ray, monkeypatch) -> None:
    import os

    from mmrag.runtime import init_ray

    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    init_ray(load_config("local-cpu", {"server": {"metrics_port": 9999}}).server)
    assert not any(k in os.environ for k in KEYS)
    assert fake_ray == [{"include_dashboard": False, "log_to_driver": False, "logging_level": 30}]


def test_unknown_ingress_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="ingress"):
        load_config("local-cpu", {"server": {"ingress": "nginx"}})
