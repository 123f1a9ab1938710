"""Load-benchmark harness (issue #7): ``mmrag bench load`` drives /v1/search, /v1/answer or /v1/chat/completions in
closed or open loop and writes per-request records, a summary and plots; ``mmrag bench selftest`` measures the
harness's own ceiling against a trivial local server.

Nothing heavy is imported here: the engine (``mmrag.bench.load``) pulls in numpy and the HTTP client, the report
pulls in matplotlib only to draw.
"""

from __future__ import annotations

__all__ = ["LoadSettings", "run_load"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from mmrag.bench import load

        return getattr(load, name)
    raise AttributeError(name)
