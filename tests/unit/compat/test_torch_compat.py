"""The torchvision/torchaudio shim takes effect in every fresh Python process of the venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PROBE = """
import json, importlib.util
import torchvision.transforms.v2  # what transformers' Qwen2-VL image processor imports
import transformers
from transformers import Qwen2VLImageProcessor
from mmrag.compat.torch_compat import STATUS
print(json.dumps({"status": STATUS, "torchaudio_spec": importlib.util.find_spec("torchaudio") is not None}))
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )


def test_pth_file_is_installed() -> None:
    pth = Path(sysconfig.get_paths()["purelib"]) / "mmrag_torch_compat.pth"
    assert pth.is_file(), "reinstall the project: pip install -e '.[cpu,dev]'"
    assert "mmrag.compat.activate" in pth.read_text()


def test_fresh_process_imports_torchvision_and_qwen2vl_processor() -> None:
    proc = _run(PROBE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"]["torchvision"] in ("native", "shimmed")
    if out["status"].get("torchaudio") == "shimmed":
        # hidden packages must look absent to find_spec probes (transformers' is_*_available)
        assert out["torchaudio_spec"] is False


def test_shim_is_what_makes_it_work() -> None:
    """With the shim off, a CUDA torchvision beside CPU torch fails exactly as FINDINGS.md says."""
    status = json.loads(_run(PROBE).stdout.strip().splitlines()[-1])["status"]
    if status["torchvision"] != "shimmed":
        pytest.skip("torchvision's native library loads here; the shim has nothing to do")
    proc = _run("import torchvision", MMRAG_TORCH_COMPAT="0")
    assert proc.returncode != 0
    assert "torchvision::nms does not exist" in proc.stderr


def test_spawned_multiprocessing_child_has_the_shim(tmp_path: Path) -> None:
    code = """
import multiprocessing as mp
def child(q):
    import torchvision.transforms.v2
    from mmrag.compat.torch_compat import STATUS
    q.put(STATUS["torchvision"])
if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    q = ctx.Queue(); p = ctx.Process(target=child, args=(q,)); p.start(); print(q.get(timeout=120)); p.join()
"""
    script = tmp_path / "spawn_probe.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] in ("native", "shimmed")


def test_install_is_idempotent_and_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmrag.compat import torch_compat

    before = list(sys.meta_path)
    torch_compat.install()
    assert sum(isinstance(f, torch_compat._Finder) for f in sys.meta_path) == 1
    monkeypatch.setattr(sys, "meta_path", [f for f in before if not isinstance(f, torch_compat._Finder)])
    monkeypatch.setenv("MMRAG_TORCH_COMPAT", "0")
    torch_compat.install()
    assert not any(isinstance(f, torch_compat._Finder) for f in sys.meta_path)
