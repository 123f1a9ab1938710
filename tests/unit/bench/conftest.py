"""Real local HTTP servers for the harness tests: the trivial server on its own event loop in a thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mmrag.bench.server import ServerOptions, ThreadedServer


@pytest.fixture(scope="package")
def trivial_server() -> Iterator[Callable[..., ThreadedServer]]:
    """``trivial_server(tokens=5, ttft_ms=50, ...)`` -> a started server (one per distinct option set)."""
    servers: dict[tuple, ThreadedServer] = {}

    def get(**opts: float) -> ThreadedServer:
        key = tuple(sorted(opts.items()))
        if key not in servers:
            srv = ThreadedServer(ServerOptions(**opts))  # type: ignore[arg-type]
            srv.__enter__()
            servers[key] = srv
        return servers[key]

    yield get
    for srv in servers.values():
        srv.__exit__(None, None, None)


@pytest.fixture
def fresh_server() -> Iterator[Callable[..., ThreadedServer]]:
    """Like ``trivial_server`` but new for the test, so its request counters start at zero."""
    started: list[ThreadedServer] = []

    def make(**opts: float) -> ThreadedServer:
        srv = ThreadedServer(ServerOptions(**opts))  # type: ignore[arg-type]
        srv.__enter__()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.__exit__(None, None, None)
