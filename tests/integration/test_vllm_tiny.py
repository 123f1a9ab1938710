"""vLLM on CPU serves the tiny Qwen2-VL generator offline: an image+text chat produces tokens.

vLLM's ``LLM()`` spawns its engine core with the ``spawn`` start method, which re-imports the parent's
``__main__``; running it inside pytest would re-import pytest's entry point. So the engine runs in a child
Python process from a small script with a ``__main__`` guard, and reports back one JSON line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]

_SCRIPT = textwrap.dedent(
    """
    import base64, io, json, sys, time


    def main() -> None:
        from PIL import Image, ImageDraw
        from vllm import LLM, SamplingParams

        image = Image.new("RGB", (320, 240), "white")
        draw = ImageDraw.Draw(image)
        draw.rectangle((20, 20, 200, 120), fill="red")
        draw.text((30, 150), "Revenue 2024: +8%", fill="black")
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

        t0 = time.monotonic()
        llm = LLM(model=sys.argv[1], max_model_len=1024, enforce_eager=True, seed=0)
        t1 = time.monotonic()
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "What does the picture show?"},
                ],
            }
        ]
        params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
        out = llm.chat(messages, params)[0]
        t2 = time.monotonic()
        print("RESULT " + json.dumps({
            "engine_start_s": t1 - t0,
            "generate_s": t2 - t1,
            "prompt_token_ids": list(out.prompt_token_ids),
            "token_ids": list(out.outputs[0].token_ids),
            "text": out.outputs[0].text,
        }), flush=True)


    if __name__ == "__main__":
        main()
    """
)


def _cpu_bind() -> str:
    """The CPUs this process may use, as vLLM's VLLM_CPU_OMP_THREADS_BIND wants them (e.g. ``0-1``)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    groups: list[list[int]] = []
    for cpu in cpus:
        if groups and cpu == groups[-1][-1] + 1:
            groups[-1].append(cpu)
        else:
            groups.append([cpu])
    return ",".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups)


@pytest.fixture(scope="module")
def tiny_generator(mmrag_home: str) -> Path:
    from mmrag.config import TINY_GENERATOR
    from mmrag.models.tiny import build_tiny

    out = Path(mmrag_home) / "models" / "tiny"
    return Path(build_tiny(out)[TINY_GENERATOR]["path"])


def test_vllm_cpu_generates_for_image_and_text(tiny_generator: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    script = tmp_path / "run_vllm.py"
    script.write_text(_SCRIPT)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache; the default would reserve far more than a test needs
        "VLLM_CPU_OMP_THREADS_BIND": _cpu_bind(),  # else vLLM binds its OpenMP threads to a single core
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
    }
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_generator)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.monotonic() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"vLLM run failed (rc={proc.returncode}):\n{proc.stderr[-6000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])

    assert len(result["token_ids"]) > 0
    tok = AutoTokenizer.from_pretrained(tiny_generator)
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    # the chat template placed the image and the processor expanded it into visual tokens
    assert result["prompt_token_ids"].count(image_pad) >= 4
    assert result["prompt_token_ids"][:1] == [tok.convert_tokens_to_ids("<|im_start|>")]
    print(
        f"vLLM engine start {result['engine_start_s']:.1f} s, generate {result['generate_s']:.2f} s, wall {wall:.1f} s"
    )
