"""deploy/ and k8s/ validated offline: Serve configs against the config model, every overlay built with
`kubectl kustomize`, Ray custom resources against the KubeRay CRDs (k8s/crds), core objects against the
Kubernetes API schemas (kubernetes-validate), and no drift between serveConfigV2 and deploy/serve."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
OVERLAYS = ["cpu", "gpu"]
SERVE_CONFIGS = sorted((ROOT / "deploy" / "serve").glob("*.yaml"))
K8S_VERSION = "1.31"


@cache
def built(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@cache
def crd_schema(kind: str, version: str) -> dict[str, Any]:
    plural = {"RayService": "rayservices", "RayJob": "rayjobs", "RayCluster": "rayclusters"}[kind]
    crd = yaml.safe_load((ROOT / "k8s" / "crds" / f"ray.io_{plural}.yaml").read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"the {kind} CRD has no version {version}")


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_with_the_expected_objects(overlay: str) -> None:
    kinds = sorted(d["kind"] for d in built(overlay))
    assert kinds == sorted(["ConfigMap", "Ingress", "NetworkPolicy", "RayJob", "RayService", "ServiceAccount"])
    assert all(d["metadata"].get("namespace") == "mmrag" for d in built(overlay))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_resources_validate_against_the_kuberay_crds(overlay: str) -> None:
    import jsonschema

    for doc in built(overlay):
        if not doc["apiVersion"].startswith("ray.io/"):
            continue
        schema = crd_schema(doc["kind"], doc["apiVersion"].split("/")[1])
        jsonschema.Draft7Validator(schema).validate(doc)  # raises with the failing path


def test_the_crd_check_catches_mistakes() -> None:
    import jsonschema

    rs = dict(_one(built("gpu"), "RayService"))
    bad = yaml.safe_load(yaml.safe_dump(rs))
    bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(crd_schema("RayService", "v1")).validate(bad)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate_against_the_kubernetes_api(overlay: str) -> None:
    import kubernetes_validate

    core = [d for d in built(overlay) if not d["apiVersion"].startswith("ray.io/")]
    assert core
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_shape_and_safety(overlay: str) -> None:
    rs = _one(built(overlay), "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0", "the head holds no GPU"
    assert cluster["enableInTreeAutoscaling"] is True
    assert rs["spec"]["upgradeStrategy"]["type"] == "NewCluster"
    groups = cluster["workerGroupSpecs"]
    for g in groups:
        assert 1 <= g["minReplicas"] <= g["maxReplicas"]
    pods = [head["template"]["spec"], *(g["template"]["spec"] for g in groups)]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert ":" in c["image"] and not c["image"].endswith(":latest")
    gpus = [g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert (len(gpus) == 1) == (overlay == "gpu")


def _app_args(serve_config: dict[str, Any]) -> list[dict[str, Any]]:
    return [app.get("args") or {} for app in serve_config["applications"]]


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_configs_build_with_the_config_model(path: Path) -> None:
    from mmrag.serve.app import build_config

    cfg = yaml.safe_load(path.read_text())
    for app in cfg["applications"]:
        module, attr = app["import_path"].split(":")
        assert callable(getattr(importlib.import_module(module), attr))
    for args in _app_args(cfg):
        assert build_config(args).profile == path.stem  # AppArgs (extra=forbid) + the whole config tree


def test_serve_config_v2_equals_deploy_serve() -> None:
    gpu = _one(built("gpu"), "RayService")["spec"]["serveConfigV2"]
    assert gpu == (ROOT / "deploy" / "serve" / "gpu.yaml").read_text(), "k8s gpu serveConfigV2 drifted"
    cpu = yaml.safe_load(_one(built("cpu"), "RayService")["spec"]["serveConfigV2"])
    local = yaml.safe_load((ROOT / "deploy" / "serve" / "local-cpu.yaml").read_text())
    local["http_options"]["host"] = "0.0.0.0"  # the one intended difference: pods serve beyond localhost
    assert cpu == local
    from mmrag.serve.app import build_config

    for overlay in OVERLAYS:
        for args in _app_args(yaml.safe_load(_one(built(overlay), "RayService")["spec"]["serveConfigV2"])):
            build_config(args)


def test_a_bad_args_block_is_refused() -> None:
    from mmrag.config import ConfigError
    from mmrag.serve.app import build_config

    with pytest.raises(ValueError, match="extra"):
        build_config({"profile": "gpu", "replicas": 3})
    with pytest.raises(ConfigError, match="retriever"):
        build_config({"profile": "gpu", "config": {"retriever": {"num_cpu": 2}}})


def test_crd_copies_carry_their_license_notice() -> None:
    notice = (ROOT / "k8s" / "crds" / "README.md").read_text()
    assert "Apache License 2.0" in notice and "KubeRay authors" in notice


#: checkov findings that stay, each with the reason (also in k8s/README.md). Anything else fails the test.
EXPLAINED = {
    "CKV_K8S_8": "liveness probes: KubeRay adds them to every Ray pod of a RayService (GCS / raylet health)",
    "CKV_K8S_9": "readiness probes: KubeRay adds them (and routes the serve Service only to pods with a ready "
    "Serve proxy)",
    "CKV_K8S_43": "image digests: the overlays name placeholder tags; pin digests at release with `kustomize edit "
    "set image`",
    "CKV_K8S_35": "secrets as env vars: the AWS SDK (LanceDB's object store) and huggingface_hub read credentials "
    "from the environment",
    "CKV_K8S_40": "UID 1000 is the `ray` user that owns /home/ray in Ray's images; a high UID breaks them",
}


def _ray_pods(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pod templates inside RayService / RayJob as Pods (checkov does not look inside custom resources),
    with the labels KubeRay puts on them."""
    pods = []

    def add(name: str, template: dict[str, Any]) -> None:
        meta = {"name": name, "namespace": "mmrag", "labels": {"ray.io/is-ray-node": "yes"}}
        pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})

    for d in docs:
        if d["kind"] == "RayService":
            cluster = d["spec"]["rayClusterConfig"]
        elif d["kind"] == "RayJob":
            cluster = d["spec"]["rayClusterSpec"]
            add(f"{d['metadata']['name']}-submitter", d["spec"]["submitterPodTemplate"])
        else:
            continue
        add(f"{d['metadata']['name']}-head", cluster["headGroupSpec"]["template"])
        for g in cluster["workerGroupSpecs"]:
            add(f"{d['metadata']['name']}-{g['groupName']}", g["template"])
    return pods


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_scan_has_only_explained_findings(overlay: str, tmp_path: Path) -> None:
    import json
    import os

    checkov = os.environ.get("CHECKOV_BIN") or shutil.which("checkov")
    if not checkov:
        pytest.skip("checkov is not installed (bash deploy/setup.sh test installs it into .venv-checkov)")
    docs = built(overlay)
    (tmp_path / "manifests.yaml").write_text(yaml.safe_dump_all([*docs, *_ray_pods(docs)]))
    out = subprocess.run(
        [checkov, "-d", str(tmp_path), "--framework", "kubernetes", "--output", "json", "--quiet", "--skip-download"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    report = json.loads(out.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["passed"] > 100, "checkov checked (almost) nothing"
    failed = {(c["check_id"], c["resource"]) for c in report["results"].get("failed_checks", [])}
    unexplained = sorted(f for f in failed if f[0] not in EXPLAINED)
    assert not unexplained, f"new checkov findings: {unexplained}"
