"""Nothing that ``mmrag serve``, ``mmrag demo`` or ``mmrag ingest`` started outlives it, however it ends.

Why: a local Ray is a tree of processes that does not all die with its driver. Ray ties its own daemons (GCS,
raylet, agents) to the driver (``PR_SET_PDEATHSIG``), and a worker exits when its raylet goes, but what a worker
starts itself is orphaned then: Ray Serve's HAProxy (a child of the ``HAProxyManager`` actor, holding the serve port
and 8404/9101) and vLLM's engine-core and worker processes (a child of the generator replica, ~2.7 GB). Each Ray
worker is its own process group, so killing the driver's group does not reach them either.

How: :class:`Guard`, entered before Ray starts, (1) marks this process's environment with a run id
(``MMRAG_RUN_ID``), which every process started from here on inherits, Ray's and theirs included; (2) starts a small
reaper process (``python -m mmrag.lifetime``, its own session, so a Ctrl-C or a signal to our process group does
not reach it) that holds the read end of a pipe and learns the Ray session directory once Ray is up; (3) turns
SIGTERM into the same path as Ctrl-C. On a normal exit, Ctrl-C or SIGTERM the guard stops the app and Ray
gracefully for at most ``server.stop_timeout_s``, then :func:`sweep` stops whatever is left. When this process dies
without that (SIGKILL, a crash), the pipe closes and the reaper sweeps. A process is ours when its environment holds
the run id, or when it writes into our Ray session's directory (vLLM and Ray's agents rename themselves with
``setproctitle``, which can overwrite the environment that ``/proc`` shows; their log files are still open there).

Linux only (``/proc``, pidfds): elsewhere the guard only stops gracefully and says that a killed server may leave
Ray's processes behind (``ray stop`` ends them).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence

from mmrag.constants import ENV_RUN_ID

#: How long a process gets after SIGTERM before SIGKILL, and how long we wait for SIGKILL to take: with
#: STRAGGLER_WAIT_S twice, a sweep takes at most 5 s.
TERM_GRACE_S = 2.5
KILL_WAIT_S = 1.5
STRAGGLER_WAIT_S = 0.5
#: The reaper also checks this often that its parent is alive (in case the pipe's write end leaked to a child).
PARENT_POLL_S = 2.0

LINUX = sys.platform.startswith("linux")

_active: Guard | None = None


# ----------------------------------------------------------------------------------------- finding and stopping
def owned_pids(
    run_id: str,
    session_dirs: Sequence[str] = (),
    *,
    driver: int | None = None,
    exclude: Collection[int] = (),
    proc: str = "/proc",
) -> set[int]:
    """Live processes of this user that carry ``run_id`` in their environment or write into one of
    ``session_dirs``, or into a Ray session that ``driver`` started (Ray names it ``session_<time>_<driver pid>``:
    this covers a kill before ``ray.init`` returned and told us its directory). Zombies count as gone."""
    needle = f"{ENV_RUN_ID}={run_id}".encode()
    dirs = tuple(d.rstrip("/") + "/" for d in session_dirs)
    suffix = f"_{driver}" if driver else None
    uid = os.getuid()
    found: set[int] = set()
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) in exclude:
            continue
        base = os.path.join(proc, name)
        try:
            if os.stat(base).st_uid != uid:
                continue
            with open(os.path.join(base, "environ"), "rb") as f:
                env = f.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in env.split(b"\0") or ((dirs or suffix) and _writes_under(base, dirs, suffix)):
            found.add(int(name))
    return found


def _in_session(target: str, dirs: tuple[str, ...], suffix: str | None) -> bool:
    if target.startswith(dirs):
        return True
    return bool(suffix) and any(p.startswith("session_") and p.endswith(suffix) for p in target.split("/")[:-1])


def _writes_under(base: str, dirs: tuple[str, ...], suffix: str | None = None) -> bool:
    """Whether the process at ``base`` (a /proc entry) has a file open for writing under one of ``dirs`` or in a
    directory named ``session_*<suffix>``."""
    try:
        fds = os.listdir(os.path.join(base, "fd"))
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(os.path.join(base, "fd", fd))
            if not _in_session(target, dirs, suffix):
                continue
            with open(os.path.join(base, "fdinfo", fd)) as f:
                flags = next((int(line.split()[1], 8) for line in f if line.startswith("flags:")), 0)
        except (OSError, ValueError):
            continue
        if flags & (os.O_WRONLY | os.O_RDWR):
            return True
    return False


class _Handle:
    """A process to stop: a pidfd where the kernel has them (no pid-reuse race, a wait that needs no polling)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.fd = os.pidfd_open(pid)

    def send(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            else:
                os.kill(self.pid, sig)

    def gone(self) -> bool:
        if self.fd is not None:
            return bool(select.select([self.fd], [], [], 0)[0])
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except (OSError, IndexError):
            return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _wait_gone(handles: list[_Handle], timeout: float) -> list[_Handle]:
    """Wait until every process has exited or ``timeout`` passed; the ones still running."""
    deadline = time.monotonic() + timeout
    left = [h for h in handles if not h.gone()]
    while left and (remaining := deadline - time.monotonic()) > 0:
        fds = [h.fd for h in left if h.fd is not None]
        if len(fds) == len(left):
            select.select(fds, [], [], remaining)  # a pidfd turns readable when its process exits
        else:
            time.sleep(min(0.05, remaining))  # no pidfds on this kernel: poll /proc
        left = [h for h in left if not h.gone()]
    return left


def sweep(
    run_id: str,
    session_dirs: Sequence[str] = (),
    *,
    driver: int | None = None,
    exclude: Collection[int] = (),
    term_grace_s: float = TERM_GRACE_S,
    kill_wait_s: float = KILL_WAIT_S,
) -> list[int]:
    """Stop every process :func:`owned_pids` finds: SIGTERM, then SIGKILL to those still running ``term_grace_s``
    later. Processes that turn up meanwhile (a worker a dying raylet had just started) get SIGKILL in two more
    rounds of at most ``STRAGGLER_WAIT_S``: the sweep takes at most ``term_grace_s + kill_wait_s + 1`` s. Returns
    the pids it signalled."""
    stopped: list[int] = []
    exclude = {os.getpid(), *exclude}
    for round_ in range(3):
        handles = [_Handle(pid) for pid in sorted(owned_pids(run_id, session_dirs, driver=driver, exclude=exclude))]
        if not handles:
            break
        try:
            if round_ == 0:
                for h in handles:
                    h.send(signal.SIGTERM)
                left = _wait_gone(handles, term_grace_s)
            else:
                left = handles
            for h in left:
                h.send(signal.SIGKILL)
            _wait_gone(left, kill_wait_s if round_ == 0 else STRAGGLER_WAIT_S)
        finally:
            for h in handles:
                h.close()
        stopped += [h.pid for h in handles]
        exclude |= {h.pid for h in handles}  # one that outlives even SIGKILL (uninterruptible I/O) is not waited on
    return stopped


# ------------------------------------------------------------------------------------------- this process's side
class Guard:
    """Owns what this process starts from :meth:`start` on (see the module docstring). Use :func:`guarded`."""

    def __init__(self, stop_timeout_s: float, *, say: Callable[[str], None] | None = None, serve: bool = True) -> None:
        self.run_id = uuid.uuid4().hex
        self.stop_timeout_s = stop_timeout_s
        #: Whether stopping also shuts Serve down: not for ``mmrag ingest``, which may have joined a cluster whose
        #: Serve app is not its own.
        self.serve = serve
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.session_dirs: list[str] = []
        #: How long :meth:`stop` took, once it has run.
        self.stop_seconds: float | None = None
        self.reaper: subprocess.Popen[bytes] | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    # -- start
    def start(self) -> None:
        global _active
        env = {k: v for k, v in os.environ.items() if k != ENV_RUN_ID}
        if LINUX:
            self.reaper = subprocess.Popen(
                [sys.executable, "-m", "mmrag.lifetime", self.run_id, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # out of our process group: Ctrl-C and `kill -- -PGID` leave it alone
            )
        os.environ[ENV_RUN_ID] = self.run_id  # inherited by every process started from here on
        self.install_sigterm()
        _active = self

    def install_sigterm(self) -> None:
        """SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does, so both take the same bounded stop
        (``ray.init`` replaces the handler with its own ``sys.exit``; :func:`ray_started` puts this one back)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def ray_started(self, session_dir: str | None) -> None:
        self.install_sigterm()
        if session_dir and session_dir not in self.session_dirs:
            self.session_dirs.append(session_dir)
            self._tell(f"session {session_dir}")

    def _tell(self, line: str) -> None:
        if self.reaper is not None and self.reaper.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.reaper.stdin.write(line.encode() + b"\n")
                self.reaper.stdin.flush()

    # -- stop
    def stop(self) -> None:
        """Stop the app and the local Ray gracefully within ``stop_timeout_s``, then sweep. Past the deadline (or
        on a second Ctrl-C) the sweep runs at once and this process exits with status 1: a thread stuck in Ray
        cannot be abandoned any other way. Idempotent."""
        if self._stopped.is_set():
            return
        t0 = time.monotonic()
        timer = threading.Timer(self.stop_timeout_s, self._force, args=(f"within {self.stop_timeout_s:g} s",))
        timer.daemon = True
        timer.start()
        try:
            _graceful_shutdown(serve=self.serve)
        except KeyboardInterrupt:
            self._force("before a second Ctrl-C")
        finally:
            timer.cancel()
        self._finish()
        self.stop_seconds = time.monotonic() - t0

    def _tell_user(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # the terminal may be gone
            self.say(line)

    def _force(self, why: str) -> None:
        self._tell_user(f"the app and Ray did not stop {why}: stopping their processes")
        self._finish()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    def _finish(self) -> None:
        """Sweep what is left, release the reaper and the SIGTERM handler. Safe from any thread, runs once."""
        global _active
        with self._lock:
            if self._stopped.is_set():
                return
            if threading.current_thread() is threading.main_thread():  # a second Ctrl-C must not cut the sweep
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_IGN)
            if LINUX:
                sweep(
                    self.run_id,
                    self.session_dirs,
                    driver=os.getpid(),
                    exclude={p for p in (self._reaper_pid(),) if p},
                )
            else:
                self._tell_user(
                    f"note: on {sys.platform} mmrag cannot find processes left behind by a server that was killed; "
                    "`ray stop` ends a local Ray's"
                )
            self._tell("done")
            if self.reaper is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.reaper.stdin.close()  # type: ignore[union-attr]
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.reaper.wait(timeout=KILL_WAIT_S)
            os.environ.pop(ENV_RUN_ID, None)
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
            _active = None
            self._stopped.set()

    def _reaper_pid(self) -> int | None:
        return self.reaper.pid if self.reaper is not None else None

    def wait(self) -> None:
        """Block until Ctrl-C or SIGTERM."""
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


@contextlib.contextmanager
def guarded(stop_timeout_s: float, *, say: Callable[[str], None] | None = None, serve: bool = True) -> Iterator[Guard]:
    """Enter before starting Ray; leaving stops everything that was started inside (:meth:`Guard.stop`); with
    ``serve`` False it leaves Serve alone (stops only this process's Ray connection, and a local Ray it started)."""
    guard = Guard(stop_timeout_s, say=say, serve=serve)
    guard.start()
    try:
        yield guard
    finally:
        guard.stop()


def active() -> Guard | None:
    return _active


def ray_started(*, local: bool) -> None:
    """Called by :func:`mmrag.runtime.init_ray` after ``ray.init``: the active guard, if any, takes SIGTERM back
    from Ray and, when this process started the Ray (``local``; never a cluster it joined), learns its session
    directory."""
    if _active is None:
        return
    session_dir = None
    if local:
        import ray

        with contextlib.suppress(AttributeError):  # Ray's internals moved: the run id still finds most processes
            session_dir = ray._private.worker._global_node.get_session_dir_path()
    _active.ray_started(session_dir)


def shutdown() -> None:
    """Stop Serve and Ray: bounded and complete under an active guard (:meth:`Guard.stop`), plain otherwise."""
    if _active is not None:
        _active.stop()
    else:
        _graceful_shutdown()


def _graceful_shutdown(serve: bool = True) -> None:
    ray = sys.modules.get("ray")  # never imported: nothing of Ray's to stop (and no 2 s import to pay)
    if ray is not None and ray.is_initialized():
        if serve:
            from ray import serve as ray_serve

            ray_serve.shutdown()
        ray.shutdown()


# ----------------------------------------------------------------------------------------------- the reaper
def reap(run_id: str, parent: int, stream: int = 0) -> int:
    """The reaper's loop: read ``session DIR`` and ``done`` lines from ``stream`` (the pipe from ``parent``); when
    it closes without ``done``, or ``parent`` is gone, sweep. Returns how many processes it stopped."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # this process outlives the server by design; the sweep is bounded
    sessions: list[str] = []
    buf = b""
    while True:
        ready = select.select([stream], [], [], PARENT_POLL_S)[0]
        if not ready:
            if os.getppid() != parent:  # orphaned while the pipe stayed open (a child holds its write end)
                break
            continue
        chunk = os.read(stream, 4096)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line == b"done":
                return 0
            if line.startswith(b"session "):
                sessions.append(line[len(b"session ") :].decode())
    stopped = sweep(run_id, sessions, driver=parent)
    if stopped:
        with contextlib.suppress(OSError):
            print(
                f"mmrag: the server (pid {parent}) ended; stopped the {len(stopped)} processes it had left",
                file=sys.stderr,
                flush=True,
            )
    return len(stopped)


def main(argv: Sequence[str] | None = None) -> None:
    run_id, parent = (argv or sys.argv[1:])[:2]
    reap(run_id, int(parent))


if __name__ == "__main__":
    main()
