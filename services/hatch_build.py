"""Hatch build hook: ship ``mmrag_torch_compat.pth`` into site-packages.

The .pth runs at every interpreter start and imports :mod:`mmrag.compat.activate`, which installs
the lazy torchvision/torchaudio shim (see mmrag/compat/torch_compat.py for why). It is written for
both normal and editable builds; the ``try`` keeps a stale .pth from breaking Python start-up.
"""

from __future__ import annotations

import os
import tempfile

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PTH_NAME = "mmrag_torch_compat.pth"
# One line: .pth files execute lines that start with "import".
PTH_LINE = "import sys; exec('try:\\n import mmrag.compat.activate\\nexcept ImportError:\\n pass')\n"


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        tmp = tempfile.mkdtemp(prefix="mmrag-build-")
        path = os.path.join(tmp, PTH_NAME)
        with open(path, "w") as f:
            f.write(PTH_LINE)
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data.setdefault(key, {})[path] = PTH_NAME
