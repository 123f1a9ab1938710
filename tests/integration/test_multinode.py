"""Two Ray nodes on this machine, laid out as deploy/cluster and k8s/ lay out a cluster: a serving node (the head,
custom resource ``mmrag_serve``, label ``mmrag-role=serve``) and an ingestion node (a worker, ``mmrag_ingest``,
``mmrag-role=ingest``), each started with ``ray start``. Ray Data ingestion is placed on the ingestion node by custom
resources and the Serve app on the serving node by label selectors (each mechanism proven once), both against one
LanceDB URI (a local path, then an S3 bucket on moto's S3-compatible server); Ray's state API says where each actor
ran, and a search finds the ingested pages.

The cluster is this module's own: its own ports and temp dir, stopped by killing only the processes that hold that
temp dir (never ``ray stop``: other Ray clusters may run beside it)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mmrag.config import load_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data"
RAY = str(Path(sys.executable).with_name("ray"))
SERVE = {"mmrag-role": "serve"}
INGEST = {"mmrag_ingest": 0.1}
#: moto's test credentials, in the environment of the nodes and the driver (never in the config)
S3_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ports() -> list[str]:
    """Ports of one node's own servers, free ones: two raylets on one machine (and other clusters beside them) must
    not share the fixed defaults (the dashboard agent's 52365, the runtime-env agent's)."""
    return [
        f"--node-manager-port={_free_port()}",
        f"--object-manager-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--dashboard-agent-grpc-port={_free_port()}",
        f"--runtime-env-agent-port={_free_port()}",
        f"--metrics-export-port={_free_port()}",
    ]


def _processes_of(temp_dir: str) -> list[int]:
    """Pids of the processes whose command line names ``temp_dir``: this cluster's daemons and workers only."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline:
            pids.append(int(entry.name))
    return pids


def _stop(temp_dir: str) -> None:
    # Ray's daemons leave within a second of SIGTERM; what is left after 3 s (idle workers) is killed
    for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pid in _processes_of(temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while _processes_of(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """An S3-compatible server on a free port (moto, in this process) with an empty bucket ``mmrag``; yields the
    store's storage_options, less the credentials, which go in the nodes' environment as they would in a cluster."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] (the dev extra) runs the S3 server")
    import boto3

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **S3_KEYS).create_bucket(Bucket="mmrag")
    yield {"aws_endpoint": endpoint, "aws_region": "us-east-1", "allow_http": "true"}
    server.stop()


@pytest.fixture(scope="module")
def cluster():
    """(GCS address, dashboard URL, temp dir, auth mode) of a head (serving) and a worker (ingestion) node."""
    temp_dir = tempfile.mkdtemp(prefix="mmrag-mn-", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update({k.upper(): v for k, v in S3_KEYS.items()})
    from ray._raylet import AuthenticationTokenLoader

    if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        # The head turns token auth on by itself when a token exists (~/.ray/auth_token); a joining node does not,
        # and is refused: in a real cluster every node gets the mode and the token, here both come from this machine.
        env["RAY_AUTH_MODE"] = "token"
    gcs_port, dash_port = _free_port(), _free_port()
    address = f"127.0.0.1:{gcs_port}"
    head = [RAY, "start", "--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
            "--num-cpus=1", "--num-gpus=0", '--resources={"mmrag_serve": 1}', "--labels=mmrag-role=serve",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
            f"--ray-client-server-port={_free_port()}", "--disable-usage-stats", *_node_ports()]  # fmt: skip
    worker = [RAY, "start", f"--address={address}", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
              "--num-cpus=1", "--num-gpus=0", '--resources={"mmrag_ingest": 1}', "--labels=mmrag-role=ingest",
              "--disable-usage-stats", *_node_ports()]  # fmt: skip
    try:
        for cmd in (head, worker):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
        yield address, f"http://127.0.0.1:{dash_port}", temp_dir, env.get("RAY_AUTH_MODE")
    finally:
        _stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module", params=["path", "s3"])
def deployed(request, cluster, mmrag_home: str, tmp_path_factory: pytest.TempPathFactory):
    """coin.pdf ingested on the ingestion node, the app serving it from the serving node, through one store URI: a
    path both nodes reach (as a shared volume would be), or an S3 bucket; yields (url, summary)."""
    import ray
    from ray import serve
    from ray._raylet import Config

    from mmrag.ingest.pipeline import ingest
    from mmrag.serve.run import run_app

    address, _, _, auth = cluster
    d = tmp_path_factory.mktemp("multinode")
    shutil.copy(DATA / "coin.pdf", d / "coin.pdf")
    if request.param == "s3":
        store = {"uri": f"s3://mmrag/{d.name}", "storage_options": request.getfixturevalue("s3")}
    else:
        store = {"uri": str(d / "db")}
    stage = {"num_cpus": 0.25, "concurrency": 1, "resources": INGEST}
    on_serve = {"num_replicas": 1, "autoscaling": None, "num_cpus": 0.1, "label_selector": SERVE}
    cfg = load_config(
        "local-cpu",
        {
            "store": store,
            "ingest": {"ocr": "never", "read": {**stage, "batch_size": 1}, "embed": stage, "text_embed": stage},
            "generator": {"engine": "none"},
            "ingestor": {"enabled": False},
            "retriever": on_serve,
            "reranker": on_serve,
            "gateway": on_serve,
            "server": {"port": _free_port(), "ingress": "proxy"},
        },
    )
    env = {"RAY_ADDRESS": address, **{k.upper(): v for k, v in S3_KEYS.items()}}  # init_ray joins it; the driver
    if auth:  # writes the store. A driver joining by address does not turn token auth on by itself either.
        env["RAY_AUTH_MODE"] = auth
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    Config.initialize("")  # Ray caches the auth mode per process: re-read it
    try:
        ray.init(address=address, log_to_driver=False)
        summary = ingest([str(d / "coin.pdf")], cfg, collection="docs", calibrate=False)
        # One proxy, on the head: two proxies on one machine would both want server.port.
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": cfg.server.port})
        url = run_app(cfg)
        yield url, summary
        serve.shutdown()
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        Config.initialize("")


def test_ingestion_and_serving_run_on_their_own_nodes_against_one_store(cluster, deployed) -> None:
    from ray.util.state import list_actors, list_nodes

    _, dashboard, _, _ = cluster
    url, summary = deployed
    assert summary.files == 1 and summary.pages == 11 and not summary.errors, summary

    r = httpx.post(f"{url}/v1/search", json={"query": "permutation test", "k": 5, "collection": "docs",
                                             "mode": "hybrid"}, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert hits and all(h["source"].endswith("coin.pdf") and 1 <= h["page"] <= 11 for h in hits)

    role = {n.node_id: n.labels.get("mmrag-role") for n in list_nodes(address=dashboard, detail=True)}
    assert sorted(filter(None, role.values())) == ["ingest", "serve"], role
    where: dict[str, set[str]] = {}
    for a in list_actors(address=dashboard, detail=True, limit=1000):
        where.setdefault(a.class_name, set()).add(role.get(a.node_id) or "?")
    stages = {c: r for c, r in where.items() if c.startswith("MapWorker(")}
    replicas = {c: r for c, r in where.items() if c.startswith("ServeReplica:")}
    detail = json.dumps({c: sorted(r) for c, r in where.items()}, indent=1)
    # every Ray Data stage ran on the ingestion node, every replica on the serving node
    assert {"ReadStage", "EmbedStage", "TextEmbedStage"} <= {c.split("(")[-1].rstrip(")") for c in stages}, detail
    assert all(r == {"ingest"} for r in stages.values()), detail
    assert {c.rsplit(":", 1)[-1] for c in replicas} == {"Gateway", "Retriever", "Reranker"}, detail
    assert all(r == {"serve"} for r in replicas.values()), detail
