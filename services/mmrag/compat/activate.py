"""Imported by the ``mmrag_torch_compat.pth`` file at interpreter start: installs the shims.

Kept free of heavy imports: it runs in every Python process of the venv (Ray workers, vLLM's
engine core and helper subprocesses included), and costs well under a millisecond.
"""

from mmrag.compat import ray_haproxy
from mmrag.compat.torch_compat import install

install()
ray_haproxy.install()
