"""Keep HAProxy's stats page and Prometheus exporter on loopback.

Why: with ``server.ingress: haproxy`` Ray Serve 2.60 starts HAProxy from a config template whose ``listen stats``
section binds ``*:8404`` (``RAY_SERVE_HAPROXY_STATS_PORT``) and whose ``frontend prometheus`` binds ``:9101``
(``RAY_SERVE_HAPROXY_METRICS_PORT``): every address of the machine. The stats page lists every backend and replica
address and the live traffic; neither needs to be reachable from other machines on a laptop, and on a cluster a
scraper can be let in on purpose.

What: when ``ray.serve._private.haproxy`` is first imported (in whichever Ray process renders HAProxy's config),
its template's two bind lines are rewritten to ``MMRAG_HAPROXY_ADMIN_HOST`` (default ``127.0.0.1``; ``0.0.0.0``
restores Ray's behaviour). The HTTP frontend (the API) is untouched. If Ray's template no longer has those lines
the module is left as it is and :data:`STATUS` says so (tests check it on the pinned Ray).

Admission in HAProxy: refusing an overload request in the gateway costs ~1 ms of Python per request, which at
several times the capacity is more CPU than the searches themselves get. So the template also gets, for every app
backend, one backend per admission group (``<backend>-mmrag-search`` for ``/v1/search``, ``<backend>-mmrag-generate``
for ``/v1/answer`` and ``/v1/chat/completions``) with the same servers (``track``-ed, so health checks are not
doubled), a short ``timeout queue`` (``MMRAG_HAPROXY_QUEUE_MS``, default 10 ms) and a 503 error file that is the
gateway's own ``overloaded`` JSON with ``Retry-After``. A gateway replica sets its server's ``maxconn`` in those
backends to its admission gate's limit through HAProxy's runtime API (:mod:`mmrag.serve.proxy_limits`); until it
does, ``maxconn`` is 0 (unlimited) and the gateway's gate refuses in Python as before. A request over the limit then
waits at most the queue timeout inside HAProxy and is answered there, in C, without reaching Python.

Where: :mod:`mmrag.compat.activate` installs this finder in every Python process of the environment (see
:mod:`mmrag.compat.torch_compat`); ``MMRAG_TORCH_COMPAT=0`` turns both off.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys
import tempfile
from typing import Any

TARGET = "ray.serve._private.haproxy"
STATS_BIND = "bind *:{{ config.stats_port }}"
METRICS_BIND = "bind :{{ config.metrics_port }}"
#: "patched" (both bind lines now on the admin host), "unchanged" (the template has other lines), or absent;
#: "admission": "patched" when the per-group admission backends were added, "unchanged" when the anchors are gone.
STATUS: dict[str, str] = {}

#: Admission groups: the backend suffix and the request paths (relative to the app's route prefix) routed there.
GROUPS: dict[str, tuple[str, ...]] = {
    "search": ("/v1/search",),
    "generate": ("/v1/answer", "/v1/chat/completions"),
}
SUFFIX = "-mmrag-"
_B = "{{ backend.name or 'unknown' }}"
USE_BACKEND = f"    use_backend {_B} if is_{_B}\n{{%- endfor %}}\n    default_backend default_backend"
ROUTER_BLOCK = (
    "{%- if has_ingress_request_router and backend.ingress_request_router_servers %}\n"
    f"backend {_B}-via-ingress-request-router"
)


def queue_ms() -> int:
    try:
        return max(1, int(os.environ.get("MMRAG_HAPROXY_QUEUE_MS", "10")))
    except ValueError:
        return 10


def overloaded_response() -> bytes:
    """The raw HTTP response HAProxy sends for a request it could not admit (its 503 error file)."""
    body = json.dumps(
        {
            "error": {
                "code": "overloaded",
                "message": "the server is at capacity for this kind of request; retry shortly",
                "field": None,
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        "Retry-After: 1\r\n"
        "Cache-Control: no-store\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _error_file() -> str:
    folder = os.path.join(tempfile.gettempdir(), f"mmrag-haproxy-{os.getuid()}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "503-overloaded.http")
    data = overloaded_response()
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return path
    except OSError:
        pass
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def _group_backend(group: str, queue: int, error_file: str) -> str:
    return f"""
backend {_B}{SUFFIX}{group}
    log global
    http-reuse always
    timeout queue {queue}ms
    errorfile 503 {error_file}
    {{%- if backend.timeout_connect_s is not none %}}
    timeout connect {{{{ backend.timeout_connect_s }}}}s
    {{%- endif %}}
    {{%- if backend.timeout_server_s is not none %}}
    timeout server {{{{ backend.timeout_server_s }}}}s
    {{%- endif %}}
    {{%- if backend.timeout_http_keep_alive_s is not none %}}
    timeout http-keep-alive {{{{ backend.timeout_http_keep_alive_s }}}}s
    {{%- endif %}}
    {{%- for server in backend.servers %}}
    server {{{{ server.name }}}} {{{{ server.host }}}}:{{{{ server.port }}}} track {_B}/{{{{ server.name }}}}
    {{%- endfor %}}
    {{%- if backend.fallback_server %}}
    server {{{{ backend.fallback_server.name }}}} {{{{ backend.fallback_server.host }}}}:\
{{{{ backend.fallback_server.port }}}} track {_B}/{{{{ backend.fallback_server.name }}}} backup
    {{%- endif %}}"""


def add_admission(template: str, queue: int, error_file: str) -> str | None:
    """The template with one backend per admission group and the frontend rules that route each group's paths
    there; None when the anchors this relies on are not in the template."""
    if template.count(USE_BACKEND) != 1 or template.count(ROUTER_BLOCK) != 1:
        return None
    prefix = "{{ (backend.path_prefix or '/').rstrip('/') }}"
    rules = "".join(
        f"    use_backend {_B}{SUFFIX}{group} if is_{_B} {{ path {' '.join(prefix + p for p in paths)} }}\n"
        for group, paths in GROUPS.items()
    )
    out = template.replace(USE_BACKEND, rules + USE_BACKEND)
    blocks = "".join(_group_backend(g, queue, error_file) for g in GROUPS)
    return out.replace(ROUTER_BLOCK, blocks.lstrip("\n").join(["", "\n"]) + ROUTER_BLOCK)


def admin_host() -> str:
    return os.environ.get("MMRAG_HAPROXY_ADMIN_HOST", "127.0.0.1")


def rewrite(template: str, host: str) -> str | None:
    """The template with the stats and metrics binds on ``host``, or None when either line is not there."""
    if STATS_BIND not in template or METRICS_BIND not in template:
        return None
    h = f"[{host}]" if ":" in host else host
    return template.replace(STATS_BIND, f"bind {h}:{{{{ config.stats_port }}}}").replace(
        METRICS_BIND, f"bind {h}:{{{{ config.metrics_port }}}}"
    )


def _patch(module: Any) -> None:
    new = rewrite(module.HAPROXY_CONFIG_TEMPLATE, admin_host())
    if new is None:
        STATUS["haproxy"] = "unchanged"
    else:
        module.HAPROXY_CONFIG_TEMPLATE = new
        STATUS["haproxy"] = "patched"
    if os.environ.get("MMRAG_HAPROXY_ADMISSION", "1") == "0":
        STATUS["admission"] = "off"
        return
    with_admission = add_admission(module.HAPROXY_CONFIG_TEMPLATE, queue_ms(), _error_file())
    if with_admission is None:
        STATUS["admission"] = "unchanged"
        return
    module.HAPROXY_CONFIG_TEMPLATE = with_admission
    STATUS["admission"] = "patched"


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    if os.environ.get("MMRAG_TORCH_COMPAT", "1") == "0" or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
