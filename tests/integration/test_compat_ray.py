"""Ray workers get the torchvision shim too (they are fresh processes started by the raylet)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_ray_worker_imports_qwen2vl_processor(ray_local) -> None:
    import ray

    @ray.remote(num_cpus=0.1)
    def probe() -> str:
        import torchvision.transforms.v2  # noqa: F401
        from transformers import Qwen2VLImageProcessor  # noqa: F401

        from mmrag.compat.torch_compat import STATUS

        return STATUS["torchvision"]

    assert ray.get(probe.remote(), timeout=300) in ("native", "shimmed")
