"""A minimal HTTP/1.1 server that answers the mmrag API instantly (or after set delays), for the harness's own tests.

    python -m mmrag.bench.server [--port 0] [--tokens 16] [--ttft-ms 0] [--itl-ms 0] [--latency-ms 0]

Prints ``listening on http://127.0.0.1:PORT`` and serves until killed. Written on bare asyncio (no framework) so
it costs as little CPU per request as Python allows: the selftest measures the *client* against it.

* ``POST /v1/search`` -> a fixed JSON body with ``k`` results;
* ``POST /v1/answer`` -> JSON, or with ``"stream": true`` server-sent events ``data: {"delta": "..."}`` then
  ``event: done`` with ``usage``;
* ``POST /v1/chat/completions`` -> an OpenAI completion, or with ``"stream": true`` OpenAI chunks, a usage chunk
  when ``stream_options.include_usage`` is set, and ``data: [DONE]``;
* ``GET /v1/models`` (model ``mmrag``), ``GET /healthz`` and ``/health``, and ``GET /stats`` (requests served,
  most at once).

A query containing ``@status=NNN`` is answered with that HTTP status (to test error accounting).
Streams wait ``ttft_ms`` before the first token and ``itl_ms`` between tokens; JSON answers to POSTs (search
included) wait ``latency_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

_STATUS_RE = re.compile(r"@status=(\d{3})")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}


@dataclass
class ServerOptions:
    """What the trivial server answers and how slowly."""

    tokens: int = 16
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    latency_ms: float = 0.0


@dataclass
class ServerStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_path: dict[str, int] = field(default_factory=dict)


def _head(status: int, ctype: str, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"content-type: {ctype}"]
    lines.append(f"content-length: {length}" if length is not None else "transfer-encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Http(asyncio.Protocol):
    def __init__(self, opts: ServerOptions, stats: ServerStats) -> None:
        self.opts = opts
        self.stats = stats
        self.buf = b""
        self.busy = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1").split("\r\n")
        method, path, _ = [*head[0].split(" "), "", ""][:3]
        length = 0
        for h in head[1:]:
            name, _, value = h.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buf) < end + 4 + length:
            return
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        self.busy = True
        self.stats.requests += 1
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        self.stats.by_path[path] = self.stats.by_path.get(path, 0) + 1
        slow = self.opts.ttft_ms or self.opts.itl_ms or self.opts.latency_ms
        if slow:
            asyncio.get_running_loop().create_task(self._handle_async(method, path, body))
        else:
            self._write(self._respond(method, path, body))
            self._done()

    def _done(self) -> None:
        self.stats.in_flight -= 1
        self.busy = False
        if self.buf:
            self._next()

    def _write(self, parts: Any) -> None:
        # instant path: the whole response (all stream chunks) in one write
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(p for p, _ in parts))

    async def _handle_async(self, method: str, path: str, body: bytes) -> None:
        try:
            for data, delay_ms in self._respond(method, path, body):
                if delay_ms:
                    await asyncio.sleep(delay_ms / 1e3)
                if self.transport is None or self.transport.is_closing():
                    return
                self.transport.write(data)
        finally:
            self._done()

    # Each response is a list of (bytes, delay in ms before writing them).
    def _respond(self, method: str, path: str, body: bytes) -> list[tuple[bytes, float]]:
        if method == "GET":
            if path == "/v1/models":
                data = {"object": "list", "data": [{"id": "mmrag", "object": "model", "owned_by": "mmrag"}]}
                return self._json(200, data)
            if path in ("/healthz", "/health"):  # mmrag's and vLLM's (load tools probe the latter)
                return self._json(200, {"status": "ok"})
            if path == "/stats":
                s = self.stats
                return self._json(200, {"requests": s.requests, "max_in_flight": s.max_in_flight, "paths": s.by_path})
            return self._json(404, {"error": {"code": "not_found", "message": path}})
        try:
            req = json.loads(body or b"{}")
        except json.JSONDecodeError:
            return self._json(400, {"error": {"code": "invalid_json", "message": "body is not JSON"}})
        text = str(req.get("query") or "")
        if not text and req.get("messages"):
            text = str(req["messages"][-1].get("content", ""))
        m = _STATUS_RE.search(text)
        if m and m.group(1) != "200":
            status = int(m.group(1))
            return self._json(status, {"error": {"code": f"http_{status}", "message": "as asked"}})
        if path == "/v1/search":
            k = int(req.get("k") or 10)
            results = [{"id": f"{i:032x}", "score": 1.0 - i / 100, "modality": "page"} for i in range(k)]
            data = {"results": results, "mode": req.get("mode") or "visual", "timings_ms": {}}
            return self._json(200, data, self.opts.latency_ms)
        n = int(req.get("max_tokens") or self.opts.tokens)
        if path == "/v1/answer":
            if req.get("stream"):
                events = [b'data: {"delta": "tok%d "}\n\n' % i for i in range(n)]
                done = b'event: done\ndata: {"usage": {"completion_tokens": %d}}\n\n' % n
                return self._stream(events, done)
            return self._json(200, {"answer": "tok " * n, "usage": {"completion_tokens": n}}, self.opts.latency_ms)
        if path == "/v1/chat/completions":
            if req.get("stream"):
                events = [
                    b'data: {"id":"c","object":"chat.completion.chunk","model":"mmrag","choices":[{"index":0,'
                    b'"delta":{"content":"tok%d "},"finish_reason":null}]}\n\n' % i
                    for i in range(n)
                ]
                tail = b""
                if (req.get("stream_options") or {}).get("include_usage"):
                    tail = (
                        b'data: {"id":"c","object":"chat.completion.chunk","model":"mmrag","choices":[],'
                        b'"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}\n\n' % (n, n + 8)
                    )
                return self._stream(events, tail + b"data: [DONE]\n\n")
            data = {
                "id": "c",
                "object": "chat.completion",
                "model": "mmrag",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "tok " * n}, "finish_reason": "length"}
                ],
                "usage": {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": n + 8},
            }
            return self._json(200, data, self.opts.latency_ms)
        return self._json(404, {"error": {"code": "not_found", "message": path}})

    @staticmethod
    def _json(status: int, data: Any, delay_ms: float = 0.0) -> list[tuple[bytes, float]]:
        payload = json.dumps(data).encode()
        return [(_head(status, "application/json", len(payload)) + payload, delay_ms)]

    def _stream(self, events: list[bytes], tail: bytes) -> list[tuple[bytes, float]]:
        head = _head(200, "text/event-stream", None)
        if not (self.opts.ttft_ms or self.opts.itl_ms):
            return [(head + b"".join(_chunk(e) for e in events) + _chunk(tail) + b"0\r\n\r\n", 0.0)]
        parts = [(head, 0.0)]
        parts += [(_chunk(e), self.opts.ttft_ms if i == 0 else self.opts.itl_ms) for i, e in enumerate(events)]
        parts.append((_chunk(tail) + b"0\r\n\r\n", 0.0))
        return parts


async def serve(host: str, port: int, opts: ServerOptions, stats: ServerStats | None = None) -> asyncio.Server:
    """Start listening; returns the asyncio server (its socket's port is the one bound)."""
    stats = stats or ServerStats()
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Http(opts, stats), host, port, backlog=4096, reuse_address=True)


class ThreadedServer:
    """The trivial server on its own event loop in a daemon thread (for tests): ``with ThreadedServer() as url:``."""

    def __init__(self, opts: ServerOptions | None = None, host: str = "127.0.0.1") -> None:
        self.opts = opts or ServerOptions()
        self.host = host
        self.stats = ServerStats()
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        server = loop.run_until_complete(serve(self.host, 0, self.opts, self.stats))
        self.url = f"http://{self.host}:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

    def __enter__(self) -> str:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the trivial server did not start within 10 s")
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmrag.bench.server", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per streamed answer (unless max_tokens is sent)")
    ap.add_argument("--ttft-ms", type=float, default=0.0)
    ap.add_argument("--itl-ms", type=float, default=0.0)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="delay of JSON answers to POSTs")
    ap.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    args = ap.parse_args(argv)
    opts = ServerOptions(tokens=args.tokens, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, latency_ms=args.latency_ms)

    async def run() -> None:
        server = await serve(args.host, args.port, opts)
        port = server.sockets[0].getsockname()[1]
        print(f"listening on http://{args.host}:{port}", flush=True)
        async with server:
            await server.serve_forever()

    from mmrag.bench.load import event_loop_factory

    factory, _ = event_loop_factory(args.loop)
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
