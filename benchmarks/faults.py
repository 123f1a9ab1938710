"""Faults under load: what clients see when a replica dies or the app is redeployed (issue #19).

    python -m benchmarks.faults [--clients 8] [--streams 3] [--generator vllm|echo]

Deploys the local-cpu app on a local Ray with two gateway and two retriever replicas and one generator (vLLM with
SmolLM2, the profile's real engine, unless ``--generator echo``), with the test paper ingested, then, in order:

1. **baseline**: ``--clients`` closed-loop clients search for ``--phase`` seconds;
2. **retriever killed**: the same load; one retriever replica's process gets SIGKILL. Target: 0 failed searches
   (the gateway retries a search interrupted by a replica's death once, :mod:`mmrag.serve.retries`);
3. **gateway killed**: one gateway replica's process gets SIGKILL. Target: failures <= the requests in flight when
   it died (HAProxy sends new connections to the other replica);
4. **generator killed mid-stream**: ``--streams`` clients stream ``/v1/answer`` in a loop; the generator replica's
   process gets SIGKILL while they stream. Target: every stream cut by it ends with a well-formed SSE ``error``
   event, none hangs; the time until an answer streams again is reported;
5. **redeploy under load**: the search load runs while the app is deployed again with a changed config
   (``retriever.refresh_interval_s``; Serve replaces the replicas of every deployment whose arguments changed, one
   by one). Target: 0 failed searches.

Each kill is of the replica's worker process (``os.kill(pid, SIGKILL)``), as a node's OOM killer or a crash would
do, not a polite ``ray.kill``. Recovery is the time until Serve reports the deployment's replicas all RUNNING again.
Writes benchmarks/results/faults.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.freshness import COLLECTION, ROOT, _wait
from benchmarks.search_http import _free_port

QUERIES = ("permutation test", "conditional inference", "asymptotic distribution", "independence")


class Load:
    """Closed-loop clients recording every request: (start, end, outcome) on one clock, and what is in flight."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.clients = url, clients
        self.records: list[tuple[float, float, str]] = []
        self._inflight: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, i: int) -> None:
        with httpx.Client(timeout=60) as c:
            n = i
            while not self._stop.is_set():
                body = {"query": QUERIES[n % len(QUERIES)], "collection": COLLECTION, "k": 5}
                n += 1
                t0 = time.perf_counter()
                with self._lock:
                    self._inflight[i] = t0
                try:
                    outcome = str(c.post(f"{self.url}/v1/search", json=body).status_code)
                except httpx.HTTPError as e:
                    outcome = type(e).__name__
                t1 = time.perf_counter()
                with self._lock:
                    self._inflight.pop(i, None)
                    self.records.append((t0, t1, outcome))
                if outcome != "200":
                    time.sleep(0.05)

    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def window(self, t_from: float, t_to: float) -> dict[str, Any]:
        """Requests that started in [t_from, t_to): counts by outcome and the successes' latency."""
        with self._lock:
            got = [r for r in self.records if t_from <= r[0] < t_to]
        ok = [(t1 - t0) * 1e3 for t0, t1, o in got if o == "200"]
        return {
            "requests": len(got),
            "failed": sum(1 for *_, o in got if o != "200"),
            "outcomes": dict(Counter(o for *_, o in got)),
            "p50_ms": float(np.percentile(ok, 50)) if ok else None,
            "p99_ms": float(np.percentile(ok, 99)) if ok else None,
        }

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(70)


class Streams:
    """Clients streaming answers in a loop; each stream's ending: done, error event, cut without one, or hung."""

    def __init__(self, url: str, clients: int, max_tokens: int) -> None:
        self.url, self.max_tokens = url, max_tokens
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _one(self, c: httpx.Client, i: int) -> dict[str, Any]:
        body = {
            "query": QUERIES[i % len(QUERIES)],
            "collection": COLLECTION,
            "k": 2,
            "stream": True,
            "max_tokens": self.max_tokens,
        }
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"start": t0, "tokens": 0, "end": None, "ending": None, "status": None}
        try:
            with c.stream("POST", f"{self.url}/v1/answer", json=body) as r:
                rec["status"] = r.status_code
                if r.status_code != 200:  # refused before streaming: a JSON error (and Retry-After) or not
                    try:
                        err = json.loads(r.read())["error"]
                        rec["ending"], rec["error"] = f"http {r.status_code} JSON error", err
                    except (ValueError, KeyError, TypeError):
                        rec["ending"] = f"http {r.status_code} without a JSON error"
                    rec["retry_after"] = r.headers.get("retry-after")
                    return rec
                event = None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                        if event in ("done", "error"):
                            rec["ending"] = event
                    elif line.startswith("data: ") and event == "token":
                        rec["tokens"] += 1
                    elif line.startswith("data: ") and event == "error":
                        rec["error"] = json.loads(line[6:])
                if rec["ending"] is None:
                    rec["ending"] = "cut without an error event"
        except httpx.ReadTimeout:
            rec["ending"] = "hung"
        except httpx.HTTPError as e:
            rec["ending"] = f"cut: {type(e).__name__}"
        finally:
            rec["end"] = time.perf_counter()
        return rec

    def _run(self, i: int) -> None:
        with httpx.Client(timeout=httpx.Timeout(10.0, read=90.0)) as c:
            n = i
            while not self._stop.is_set():
                rec = self._one(c, n)
                n += 1
                with self._lock:
                    self.records.append(rec)
                if rec["ending"] != "done":
                    time.sleep(0.5)

    def __enter__(self) -> Streams:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)


# ------------------------------------------------------------------------------------------------ Serve replicas
def _replicas(deployment: str) -> list[str]:
    import ray

    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and f"#{deployment}#" in a["name"]
    )


def _running(deployment: str) -> int:
    from ray import serve

    from mmrag import constants

    app = serve.status().applications.get(constants.APP_NAME)
    dep = app.deployments.get(deployment) if app else None
    return int(dep.replica_states.get("RUNNING", 0)) if dep else 0


def _kill(deployment: str) -> dict[str, Any]:
    """SIGKILL one replica's worker process; its name, pid, when, and the replicas alive before."""
    import ray

    alive = _replicas(deployment)
    name = alive[0]
    actor = ray.get_actor(name, namespace="serve")
    pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    t = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    return {"replica": name, "pid": pid, "at": t, "before": alive}


def _recovered(deployment: str, before: set[str], want: int, timeout_s: float = 300) -> float | None:
    """Seconds until a replica of ``deployment`` not in ``before`` (a replacement) exists and ``want`` replicas are
    RUNNING (Serve's status may still count a dead replica as running for a moment; the replacement it cannot)."""
    return _wait(lambda: bool(set(_replicas(deployment)) - before) and _running(deployment) >= want, timeout_s, 0.25)


# ------------------------------------------------------------------------------------------------ report
def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Faults under load (local-cpu)",
        "",
        f"- date: {r['date']}",
        f"- command: `{r['command']}`",
        f"- machine: {r['machine']['cpus']} CPUs, no GPU; load average {r['machine']['loadavg_at_start']} at start",
        f"- app: local-cpu, 2 gateway + 2 retriever replicas, generator `{r['generator']}`; {r['clients']} "
        f"closed-loop search clients, {r['streams']} streaming answer clients in the generator phase",
        "",
        "| phase | requests | failed | outcomes | p50 | p99 | recovery |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for key, name in (
        ("baseline", "baseline"),
        ("retriever_killed", "retriever replica SIGKILL"),
        ("gateway_killed", "gateway replica SIGKILL"),
        ("redeploy", "redeploy (a retriever option)"),
    ):
        p = r.get(key)
        if not p:
            continue
        w = p["window"]
        rec = p.get("recovery_s", p.get("rollout_s"))
        lines.append(
            f"| {name} | {w['requests']} | {w['failed']} | {w['outcomes']} | "
            f"{w['p50_ms'] or 0:.0f} ms | {w['p99_ms'] or 0:.0f} ms | {f'{rec:.1f} s' if rec is not None else '-'} |"
        )
    g = r.get("generator_killed")
    if g:
        lines += [
            "",
            f"Generator SIGKILL during streamed answers: {g['cut_streams']} streams were running when it died; their "
            f"endings: {g['cut_endings']}. All streams of the phase: {g['endings']}. An answer streamed again "
            f"{g['answer_again_s']} s after the kill; Serve had the replica back in "
            f"{g['recovery_s'] if g['recovery_s'] is not None else 'n/a'} s.",
        ]
    if r.get("gateway_killed"):
        lines += ["", f"In flight when the gateway replica died: {r['gateway_killed']['inflight_at_kill']}."]
    if r.get("redeploy"):
        lines += [
            "",
            f"Redeploy: `serve.run` of the app with `retriever.refresh_interval_s` changed returned after "
            f"{r['redeploy']['rollout_s']} s (the recovery column); deployments whose replicas were all replaced: "
            f"{', '.join(r['redeploy']['replaced']) or 'none'}.",
        ]
    lines += ["", "## Targets", ""]
    for t in r["targets"]:
        lines.append(f"- **{'MET' if t['met'] else 'MISSED'}** {t['rule']}: {t['value']}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ run
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--phase", type=float, default=20.0, help="seconds of load after each fault")
    ap.add_argument("--generator", choices=["vllm", "echo"], default="vllm")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/faults.json"))
    args = ap.parse_args(argv)

    from ray import serve

    from mmrag import constants
    from mmrag.config import load_config
    from mmrag.serve.app import build_app_from_config
    from mmrag.serve.run import run_app

    tmp = Path(tempfile.mkdtemp(prefix="mmrag-faults-"))
    load_start = [round(x, 2) for x in os.getloadavg()]
    overrides: dict[str, Any] = {
        "store": {"uri": str(tmp / "db")},
        "ingest": {"ocr": "never"},
        "server": {"port": _free_port(), "drain_s": 2},
        "ingestor": {"staging_dir": str(tmp / "staging")},
        "generator": {"engine": args.generator},
        "gateway": {"num_replicas": 2, "autoscaling": None},
        "retriever": {"num_replicas": 2, "autoscaling": None},
        "reranker": {"num_replicas": 1, "autoscaling": None},
    }
    cfg = load_config("local-cpu", overrides)
    t0 = time.perf_counter()
    url = run_app(cfg)
    started_s = time.perf_counter() - t0
    with httpx.Client(timeout=300) as c:
        r = c.post(
            f"{url}/v1/collections/{COLLECTION}/documents",
            files=[("files", ("coin.pdf", (ROOT / "tests/data/coin.pdf").read_bytes(), "application/pdf"))],
        )
        r.raise_for_status()
        job = r.json()["id"]
        _wait(lambda: c.get(f"{url}/v1/jobs/{job}").json()["state"] in ("done", "failed"), 600, 0.5)

        def searchable() -> bool:
            got = c.post(f"{url}/v1/search", json={"query": "permutation test", "collection": COLLECTION, "k": 3})
            return got.status_code == 200 and bool(got.json()["results"])

        _wait(searchable, 60)
    print(f"app up in {started_s:.0f} s; coin.pdf ingested", flush=True)
    out: dict[str, Any] = {
        "generator": args.generator,
        "clients": args.clients,
        "streams": args.streams,
        "app_start_s": round(started_s, 1),
    }
    phase = args.phase

    with Load(url, args.clients) as load:
        time.sleep(3)
        a = time.perf_counter()
        time.sleep(phase)
        out["baseline"] = {"window": load.window(a, time.perf_counter())}
        print("baseline", out["baseline"], flush=True)

        k = _kill(constants.RETRIEVER_DEPLOYMENT)
        time.sleep(phase)
        rec = _recovered(constants.RETRIEVER_DEPLOYMENT, set(k["before"]), 2)
        out["retriever_killed"] = {
            "window": load.window(k["at"] - 1, k["at"] + phase),
            "kill": k,
            "recovery_s": round(time.perf_counter() - k["at"], 1) if rec is not None else None,
        }
        print("retriever killed", out["retriever_killed"], flush=True)

        inflight = load.inflight()
        k = _kill(constants.GATEWAY_DEPLOYMENT)
        time.sleep(phase)
        rec = _recovered(constants.GATEWAY_DEPLOYMENT, set(k["before"]), 2)
        out["gateway_killed"] = {
            "window": load.window(k["at"] - 1, k["at"] + phase),
            "kill": k,
            "inflight_at_kill": inflight,
            "recovery_s": round(time.perf_counter() - k["at"], 1) if rec is not None else None,
        }
        print("gateway killed", out["gateway_killed"], flush=True)

    with Streams(url, args.streams, args.max_tokens) as streams:
        _wait(lambda: sum(1 for s in streams.records if s["ending"] == "done") >= args.streams, 300, 0.5)
        time.sleep(1.0)  # streams in progress
        k = _kill(constants.GENERATOR_DEPLOYMENT)
        rec = _recovered(constants.GENERATOR_DEPLOYMENT, set(k["before"]), 1, timeout_s=600)
        recovery = round(time.perf_counter() - k["at"], 1) if rec is not None else None
        again = _wait(lambda: any(s["ending"] == "done" and s["start"] > k["at"] for s in streams.records), 600, 0.5)
    cut = [s for s in streams.records if s["start"] < k["at"] and (s["end"] or 0) > k["at"]]
    after = [s for s in streams.records if s["start"] >= k["at"]]
    out["generator_killed"] = {
        "kill": k,
        "cut_streams": len(cut),
        "cut_endings": dict(Counter(s["ending"] for s in cut)),
        "cut_errors": [s.get("error") for s in cut][:5],
        "endings": dict(Counter(s["ending"] for s in streams.records)),
        "after_kill_endings": dict(Counter(s["ending"] for s in after)),
        "recovery_s": recovery,
        "longest_stream_s": round(max((s["end"] or 0) - s["start"] for s in streams.records), 1),
    }
    first_ok = min((s["end"] for s in after if s["ending"] == "done"), default=None)
    out["generator_killed"]["answer_again_s"] = round(first_ok - k["at"], 1) if again is not None and first_ok else None
    print("generator killed", out["generator_killed"], flush=True)

    with Load(url, args.clients) as load:
        time.sleep(3)
        changed = load_config(
            "local-cpu", {**overrides, "retriever": {**overrides["retriever"], "refresh_interval_s": 0.75}}
        )
        deployments = (
            constants.GATEWAY_DEPLOYMENT,
            constants.RETRIEVER_DEPLOYMENT,
            constants.RERANKER_DEPLOYMENT,
            constants.GENERATOR_DEPLOYMENT,
            constants.INGESTOR_DEPLOYMENT,
        )
        before = {d: set(_replicas(d)) for d in deployments}
        a = time.perf_counter()
        # serve.run returns once the new version of every changed deployment is running
        serve.run(
            build_app_from_config(changed),
            name=constants.APP_NAME,
            route_prefix=cfg.server.route_prefix,
            blocking=False,
        )
        rolled = time.perf_counter() - a
        time.sleep(phase / 2)
        out["redeploy"] = {
            "window": load.window(a, time.perf_counter()),
            "rollout_s": round(rolled, 1),
            "replaced": sorted(d for d in deployments if not (before[d] & set(_replicas(d)))),
        }
        print("redeploy", out["redeploy"], flush=True)
    serve.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)

    g, gk = out["generator_killed"], out["gateway_killed"]
    well_formed = ("error", "http 503 JSON error")  # an SSE error event, or refused before streaming with JSON
    cut_ok = g["cut_streams"] > 0 and all(e in well_formed for e in g["cut_endings"])
    out["targets"] = [
        {
            "rule": "retriever SIGKILL: 0 failed searches",
            "value": out["retriever_killed"]["window"]["failed"],
            "met": out["retriever_killed"]["window"]["failed"] == 0,
        },
        {
            "rule": "gateway SIGKILL: failed searches <= in flight at the kill",
            "value": f"{gk['window']['failed']} failed, {gk['inflight_at_kill']} in flight",
            "met": out["gateway_killed"]["window"]["failed"] <= out["gateway_killed"]["inflight_at_kill"],
        },
        {
            "rule": "generator SIGKILL mid-stream: every cut stream ends with an SSE error event (or a JSON 503 "
            "before it streamed), none hangs",
            "value": f"{g['cut_streams']} cut: {g['cut_endings']}",
            "met": cut_ok and "hung" not in g["endings"],
        },
        {
            "rule": "redeploy under load: 0 failed searches",
            "value": out["redeploy"]["window"]["failed"],
            "met": out["redeploy"]["window"]["failed"] == 0,
        },
    ]
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.faults " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_at_start": load_start},
        **out,
    }
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
