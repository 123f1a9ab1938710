"""init_ray: a Ray started by mmrag gets the ingress mode's environment; a cluster joined keeps its own."""

from __future__ import annotations

import pytest

from mmrag.config import ConfigError, load_config

pytestmark = pytest.mark.unit

KEYS = (
    "RAY_SERVE_ENABLE_HA_PROXY",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS",
    "RAY_worker_niceness",
)


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
    assert [os.environ[k] for k in KEYS] == ["1", "1", "1", "0.5", "1000", "0"]
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
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
        "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
        "RAY_worker_niceness": "0",
    }


def test_ray_defaults_unless_a_profile_slows_the_background() -> None:
    from mmrag.config import MmragConfig

    env = MmragConfig().server.ray_env()
    assert env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.1" and env["RAY_SERVE_METRICS_EXPORT_INTERVAL_MS"] == "100"
    assert env["RAY_worker_niceness"] == "15"
    with pytest.raises(ConfigError, match="control_loop_interval_s"):
        load_config("local-cpu", {"server": {"control_loop_interval_s": 0}})


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
