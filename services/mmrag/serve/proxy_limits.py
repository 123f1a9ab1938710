"""Hand the admission gates' limits to HAProxy, so that overload is refused there and not in Python.

With ``server.ingress: haproxy`` the HAProxy config carries one backend per admission group
(:mod:`mmrag.compat.ray_haproxy`). Each gateway replica runs a :class:`ProxyLimits` thread that, once a second, reads
HAProxy's ``show stat`` over its node's runtime API socket (:func:`socket_path`) and, where this replica's
server in a group's backend has a ``maxconn`` other than the group's gate limit, sets it
(``set maxconn server B/S N``). HAProxy then holds at most that many of the group's requests on the replica, keeps
the next ones queued for at most ``MMRAG_HAPROXY_QUEUE_MS`` and answers the rest 503 ``overloaded`` itself. The
gate keeps measuring capacity and adapting the limit (it sees the replica saturated when its in-flight count
reaches the limit, as before); a limit HAProxy lost on a reload is set again within a second.

Scope: the HAProxy on this replica's node. A replica that HAProxy instances on other nodes also reach is protected
from those by its gate in Python only. Nothing happens where there is no socket (``ingress: proxy``) or no group
backend (a template this Ray's patch did not recognise): the gate then works alone.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmrag.serve.admission import Gate

log = logging.getLogger(__name__)

PERIOD_S = 1.0
#: how often a missing socket is looked for again
IDLE_PERIOD_S = 10.0
TIMEOUT_S = 2.0


def socket_path(node_id: str) -> str:
    """The runtime API socket of the HAProxy on node ``node_id`` (Ray scopes it by node:
    ``<dir of RAY_SERVE_HAPROXY_SOCKET_PATH>/<node id>/admin.sock``)."""
    folder, name = os.path.split(os.environ.get("RAY_SERVE_HAPROXY_SOCKET_PATH", "/tmp/haproxy-serve/admin.sock"))
    return os.path.join(folder, node_id, name)


def safe_name(name: str) -> str:
    """HAProxy's name for a Serve target (Ray's ``HAProxyManager.get_safe_name``: ``#`` -> ``-``, ``/`` -> ``.``,
    anything else outside ``[A-Za-z0-9._-]`` -> ``_``)."""
    name = name.replace("#", "-").replace("/", ".")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def runtime_command(path: str, command: str, timeout_s: float = TIMEOUT_S) -> str:
    """One command on HAProxy's runtime API (a fresh connection per command, which the API closes after it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def server_limits(stat_csv: str, server: str) -> dict[tuple[str, str], str]:
    """(backend, group) -> the server's current ``slim`` (its maxconn; "" when unlimited) in every group backend
    that holds ``server``."""
    from mmrag.compat.ray_haproxy import GROUPS, SUFFIX

    text = stat_csv.lstrip("# ")
    out: dict[tuple[str, str], str] = {}
    for row in csv.DictReader(io.StringIO(text)):
        px, sv = row.get("pxname") or "", row.get("svname") or ""
        if sv != server or SUFFIX not in px:
            continue
        group = px.rsplit(SUFFIX, 1)[1]
        if group in GROUPS:
            out[(px, group)] = row.get("slim") or ""
    return out


class ProxyLimits:
    """Keeps this replica's ``maxconn`` in HAProxy's group backends equal to its gates' limits."""

    def __init__(
        self,
        gates: Mapping[str, Gate],
        server: str,
        *,
        path: str,
        command: Callable[[str, str], str] = runtime_command,
    ) -> None:
        # group name -> its gate (the gateway maps paths to gates; groups are named by the gate)
        self.gates = {g.name: g for g in gates.values()}
        self.server = server
        self.path = path
        self.command = command
        self.applied: dict[str, int] = {}  # backend -> maxconn last set
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_this_replica(cls, gates: Mapping[str, Gate]) -> ProxyLimits | None:
        """One for this Serve replica (its server name is its actor's name), or None outside an actor."""
        if not gates:
            return None
        try:
            import ray

            ctx = ray.get_runtime_context()
            name, node = ctx.get_actor_name(), ctx.get_node_id()
        except Exception:
            return None
        return cls(gates, safe_name(name), path=socket_path(node)) if name and node else None

    def sync(self) -> int:
        """Set every group backend's maxconn that differs from its gate's limit; the number of servers changed."""
        if not os.path.exists(self.path):
            return 0
        current = server_limits(self.command(self.path, "show stat"), self.server)
        changed = 0
        for (backend, group), slim in current.items():
            gate = self.gates.get(group)
            if gate is None:
                continue
            want = int(gate.limit)
            if slim == str(want):
                continue
            reply = self.command(self.path, f"set maxconn server {backend}/{self.server} {want}").strip()
            if reply:
                log.warning("HAProxy refused maxconn %d for %s/%s: %s", want, backend, self.server, reply[:200])
                continue
            self.applied[backend] = want
            changed += 1
        return changed

    def _run(self) -> None:
        while not self._stop.is_set():
            period = PERIOD_S
            try:
                if os.path.exists(self.path):
                    self.sync()
                else:
                    period = IDLE_PERIOD_S
            except OSError as e:  # HAProxy reloading, or gone: try again next period
                log.debug("HAProxy runtime API unavailable: %s", e)
            except Exception:
                log.exception("setting HAProxy admission limits failed")
            self._stop.wait(period)

    def start(self) -> ProxyLimits:
        self._thread = threading.Thread(target=self._run, name="mmrag-proxy-limits", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


__all__ = ["ProxyLimits", "runtime_command", "safe_name", "server_limits", "socket_path"]
