"""Render the kustomize overlays and validate every object offline: `python infra/k8s/check.py [overlay ...]`.

Why this exists: a cluster is not at hand in development or CI, yet a typo in a manifest (`contianers:`, an
int where Kubernetes wants a string, a Secret key nobody creates) would only show at `kubectl apply` time.

Two renderers, one result:
- `kustomize build` / `kubectl kustomize` when either binary is on PATH (the reference);
- `render_lite`, a small pure-Python kustomize for the subset these manifests use (resources, namespace,
  labels, configMapGenerator with kustomize's own name hash, images, replicas, strategic-merge and JSON 6902
  patches), so the check also runs where no binary can be installed. The test suite compares the two.

Validation uses the `kubernetes` Python client's models (the OpenAPI types of the API server): unknown fields,
wrong types and missing required fields are errors. `policy_errors` adds the project's own rules (pinned
images, non-root, resources, probes, secret references, selectors, and exposure: every workload's pods behind
an ingress NetworkPolicy, no Secret value on a command line, no PodDisruptionBudget that lets a drain take the
last replica).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

K8S_DIR = Path(__file__).resolve().parent
OVERLAYS = K8S_DIR / "overlays"
SECRET_TEMPLATES = K8S_DIR / "secrets"


class RenderError(ValueError):
    """A kustomization could not be rendered; the message names the file and the reason."""


# ------------------------------------------------------------------------------------------------ rendering
def kustomize_command() -> list[str] | None:
    """`kustomize build` or `kubectl kustomize`, whichever is installed (None: neither)."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render_kustomize(path: str | Path, timeout: float = 60) -> list[dict]:
    """Objects rendered by the real kustomize (raises RenderError if it fails or is absent)."""
    cmd = kustomize_command()
    if cmd is None:
        raise RenderError("neither kustomize nor kubectl is on PATH")
    p = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RenderError(f"{' '.join(cmd)} {path} failed: {p.stderr.strip()}")
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def _kustomize_hash(cm: dict) -> str:
    """kustomize's name suffix for a generated ConfigMap (api/hasher: sha256 of Go's JSON, 10 chars, no vowels)."""
    doc = {"kind": "ConfigMap", "name": "", "data": cm.get("data") or {}}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # Go's HTML escaping
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _load_yaml_docs(path: Path) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as e:
        raise RenderError(f"{path}: {e}") from e


def _strategic_merge(base, patch):
    """Strategic merge at the level kustomize applies it here: maps merge, lists of named items merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _strategic_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and base
        and patch
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        out = [copy.deepcopy(x) for x in base]
        index = {x["name"]: i for i, x in enumerate(out)}
        for item in patch:
            if item["name"] in index:
                out[index[item["name"]]] = _strategic_merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON patch path must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json6902(obj: dict, ops: list[dict], where: str) -> dict:
    obj = copy.deepcopy(obj)
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = obj
        try:
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            kind = op["op"]
            if isinstance(node, list):
                idx = len(node) if last == "-" else int(last)
                if kind == "add":
                    node.insert(idx, op["value"])
                elif kind == "replace":
                    node[idx] = op["value"]
                elif kind == "remove":
                    del node[idx]
                else:
                    raise RenderError(f"{where}: JSON patch op {kind!r} is not supported by render_lite")
            else:
                if kind in ("add", "replace"):
                    if kind == "replace" and last not in node:
                        raise KeyError(last)
                    node[last] = op["value"]
                elif kind == "remove":
                    del node[last]
                else:
                    raise RenderError(f"{where}: JSON patch op {kind!r} is not supported by render_lite")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise RenderError(f"{where}: JSON patch {op['op']} {op['path']}: no such field ({e})") from e
    return obj


def _matches(obj: dict, target: dict) -> bool:
    meta = obj.get("metadata", {})
    return all(
        [
            target.get("kind") in (None, obj.get("kind")),
            target.get("name") in (None, meta.get("name")),
            target.get("namespace") in (None, meta.get("namespace")),
        ]
    )


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


def _rename_configmap_refs(obj: dict, names: dict[str, str]) -> None:
    for ps in _pod_specs(obj):
        for c in [*ps.get("initContainers", []), *ps.get("containers", [])]:
            for ef in c.get("envFrom") or []:
                if "configMapRef" in ef:
                    ef["configMapRef"]["name"] = names.get(
                        ef["configMapRef"]["name"], ef["configMapRef"]["name"]
                    )
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    ref["name"] = names.get(ref["name"], ref["name"])
        for v in ps.get("volumes") or []:
            if "configMap" in v:
                v["configMap"]["name"] = names.get(v["configMap"]["name"], v["configMap"]["name"])


@dataclass
class _Rendered:
    objects: list[dict] = field(default_factory=list)
    generated: set[int] = field(default_factory=set)  # ids of generated ConfigMaps (hash suffix still due)


def _render(directory: Path) -> _Rendered:
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise RenderError(f"{directory}: no kustomization.yaml")
    (k,) = _load_yaml_docs(kfile)
    known = {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "labels",
        "configMapGenerator",
        "patches",
        "images",
        "replicas",
    }
    unknown = set(k) - known
    if unknown:
        raise RenderError(f"{kfile}: fields {sorted(unknown)} are not supported by render_lite")
    out = _Rendered()
    for res in k.get("resources") or []:
        path = (directory / res).resolve()
        if path.is_dir():
            sub = _render(path)
            out.generated |= sub.generated
            out.objects += sub.objects
        elif path.is_file():
            out.objects += _load_yaml_docs(path)
        else:
            raise RenderError(f"{kfile}: resource {res!r} not found")
    for gen in k.get("configMapGenerator") or []:
        data: dict[str, str] = {}
        for lit in gen.get("literals") or []:
            key, _, value = lit.partition("=")
            data[key] = value
        for f in gen.get("files") or []:
            key, _, src = f.rpartition("=") if "=" in f else ("", "", f)
            data[key or Path(src).name] = (directory / src).read_text(encoding="utf-8")
        behavior = gen.get("behavior", "create")
        existing = [o for o in out.objects if id(o) in out.generated and o["metadata"]["name"] == gen["name"]]
        if behavior == "create":
            if existing:
                raise RenderError(f"{kfile}: ConfigMap {gen['name']} already generated (use behavior: merge)")
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}
            out.objects.append(cm)
            out.generated.add(id(cm))
        elif behavior in ("merge", "replace"):
            if not existing:
                raise RenderError(
                    f"{kfile}: ConfigMap {gen['name']} to {behavior} is not generated by a base"
                )
            existing[0]["data"] = {**existing[0].get("data", {}), **data} if behavior == "merge" else data
        else:
            raise RenderError(f"{kfile}: unknown generator behavior {behavior!r}")
    for patch in k.get("patches") or []:
        where = f"{kfile}: patch {patch.get('path') or patch.get('target')}"
        body = (directory / patch["path"]).read_text(encoding="utf-8") if "path" in patch else patch["patch"]
        doc = yaml.safe_load(body)
        if isinstance(doc, list):  # JSON 6902
            target = patch.get("target") or {}
            hits = [i for i, o in enumerate(out.objects) if _matches(o, target)]
            if not hits:
                raise RenderError(f"{where}: no object matches the target")
            for i in hits:
                out.objects[i] = _json6902(out.objects[i], doc, where)
        else:  # strategic merge: target is the patch's own kind + name
            target = patch.get("target") or {
                "kind": doc.get("kind"),
                "name": doc.get("metadata", {}).get("name"),
            }
            hits = [i for i, o in enumerate(out.objects) if _matches(o, target)]
            if not hits:
                raise RenderError(f"{where}: no object matches {target}")
            for i in hits:
                was_generated = id(out.objects[i]) in out.generated
                out.objects[i] = _strategic_merge(out.objects[i], doc)
                if was_generated:
                    out.generated.add(id(out.objects[i]))
    for img in k.get("images") or []:
        for c in [c for o in out.objects for c in _containers(o)]:
            name, tag = _split_image(c.get("image", ""))
            if name == img["name"]:
                new = img.get("newName", name)
                c["image"] = (
                    f"{new}@{img['digest']}"
                    if "digest" in img
                    else f"{new}:{img.get('newTag', tag)}"
                    if img.get("newTag", tag)
                    else new
                )
    for rep in k.get("replicas") or []:
        for o in out.objects:
            if o["metadata"].get("name") == rep["name"] and "replicas" in (o.get("spec") or {}):
                o["spec"]["replicas"] = rep["count"]
    for lab in k.get("labels") or []:
        pairs = lab.get("pairs") or {}
        for o in out.objects:
            o["metadata"].setdefault("labels", {}).update(pairs)
            if lab.get("includeTemplates") and isinstance((o.get("spec") or {}).get("template"), dict):
                o["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
                for vct in o["spec"].get("volumeClaimTemplates") or []:
                    vct.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            if lab.get("includeSelectors"):
                raise RenderError(f"{kfile}: labels.includeSelectors is not supported by render_lite")
    if "namespace" in k:
        for o in out.objects:
            if o["kind"] != "Namespace":
                o["metadata"]["namespace"] = k["namespace"]
    return out


def render_lite(path: str | Path) -> list[dict]:
    """Pure-Python kustomize for the subset used under infra/k8s (raises RenderError on anything else)."""
    r = _render(Path(path).resolve())
    names = {}
    for o in r.objects:
        if id(o) in r.generated:
            old = o["metadata"]["name"]
            o["metadata"]["name"] = names[old] = f"{old}-{_kustomize_hash(o)}"
    for o in r.objects:
        _rename_configmap_refs(o, names)
    return r.objects


def render(path: str | Path, renderer: str = "auto") -> tuple[list[dict], str]:
    """(objects, renderer used). `auto` prefers the real kustomize and falls back to render_lite."""
    if renderer == "kustomize" or (renderer == "auto" and kustomize_command()):
        return render_kustomize(path), "kustomize"
    return render_lite(path), "lite"


# ----------------------------------------------------------------------------------------------- validation
def _model_name(api_version: str, kind: str) -> str:
    version = api_version.rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + kind  # apps/v1 Deployment -> V1Deployment


def _check_type(value, typ: str, path: str, errors: list[str]) -> None:
    from kubernetes import client

    if value is None:
        return
    if typ.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check_type(item, typ[5:-1], f"{path}[{i}]", errors)
    elif typ.startswith("dict("):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        inner = typ[5:-1].split(", ", 1)[1]
        for k, v in value.items():
            _check_type(v, inner, f"{path}.{k}", errors)
    elif typ == "str":
        quantity = re.search(r"\.(limits|requests|hard|capacity)\.[^.]+$", path)
        if not isinstance(value, str) and not (quantity and isinstance(value, int | float)):
            errors.append(f"{path}: expected a string, got {type(value).__name__} {value!r} (quote it)")
    elif typ == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
    elif typ == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true/false, got {type(value).__name__} {value!r}")
    elif typ == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            errors.append(f"{path}: expected a number, got {value!r}")
    elif typ in ("object", "datetime", "date"):
        return
    else:
        model = getattr(client.models, typ, None)
        if model is None:
            errors.append(f"{path}: unknown model type {typ}")
            return
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a {typ} object, got {type(value).__name__}")
            return
        json_to_attr = {v: k for k, v in model.attribute_map.items()}
        for k, v in value.items():
            if k not in json_to_attr:
                errors.append(f"{path}.{k}: unknown field for {typ}")
            else:
                _check_type(v, model.openapi_types[json_to_attr[k]], f"{path}.{k}", errors)


def schema_errors(obj: dict) -> list[str]:
    """Errors of one object against the Kubernetes OpenAPI types (kubernetes Python client models)."""
    from kubernetes import client

    kind, api = obj.get("kind"), obj.get("apiVersion")
    ident = f"{kind}/{(obj.get('metadata') or {}).get('name')}"
    if not kind or not api:
        return [f"{ident}: apiVersion and kind are required"]
    model = _model_name(api, kind)
    if getattr(client.models, model, None) is None:
        return [f"{ident}: {api} {kind} is not a known Kubernetes type (client model {model} missing)"]
    errors: list[str] = []
    _check_type(obj, model, ident, errors)
    if not errors:  # required fields: the models' setters raise on None

        class _Resp:
            data = json.dumps(obj)

        try:
            client.ApiClient().deserialize(_Resp(), model)
        except ValueError as e:
            errors.append(f"{ident}: {e}")
    return errors


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
        ident = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] == "Secret" and (o.get("data") or o.get("stringData")):
            errors.append(
                f"{ident}: a Secret with values is rendered; secrets come from secrets/*.template.yaml"
            )
        if o["kind"] != "Namespace" and not o["metadata"].get("namespace"):
            errors.append(f"{ident}: no namespace (render an overlay, not the base)")
        for ps in _pod_specs(o):
            sc = ps.get("securityContext") or {}
            if (
                sc.get("runAsNonRoot") is not True
                or not isinstance(sc.get("runAsUser"), int)
                or sc["runAsUser"] == 0
            ):
                errors.append(
                    f"{ident}: pod securityContext needs runAsNonRoot: true and a non-zero runAsUser"
                )
            volumes = {v["name"] for v in ps.get("volumes") or []}
            for v in ps.get("volumes") or []:
                if "configMap" in v and v["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
                    errors.append(
                        f"{ident}: volume {v['name']} uses ConfigMap {v['configMap']['name']}, not rendered"
                    )
        for c in _containers(o):
            where = f"{ident} container {c.get('name')}"
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
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes and not any(
                    m["name"] == t["metadata"]["name"]
                    for t in (o.get("spec") or {}).get("volumeClaimTemplates") or []
                ):
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
    errors += exposure_errors(objects, by_kind)
    return errors


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _secret_env(c: dict) -> set[str]:
    """Env names of a container that carry a Secret's value, directly or through $(VAR) composition."""
    tainted: set[str] = set()
    for e in c.get("env") or []:
        if (e.get("valueFrom") or {}).get("secretKeyRef") or set(_VAR_REF.findall(str(e.get("value", "")))) & tainted:
            tainted.add(e["name"])
    return tainted


def exposure_errors(objects: list[dict], by_kind: dict[str, dict[str, dict]]) -> list[str]:
    """Cluster exposure rules: NetworkPolicy coverage, secrets off command lines, PDBs that keep one replica."""
    errors: list[str] = []
    policies = [
        p for p in by_kind.get("NetworkPolicy", {}).values() if "Ingress" in (p["spec"].get("policyTypes") or [])
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


def check_overlay(path: str | Path, renderer: str = "auto") -> tuple[list[dict], list[str], str]:
    """(objects, errors, renderer used) for one overlay."""
    objects, used = render(path, renderer)
    errors = [e for o in objects for e in schema_errors(o)] + policy_errors(objects)
    return objects, errors, used


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overlays", nargs="*", help="kustomization folders (default: every infra/k8s/overlays/*)")
    ap.add_argument("--renderer", choices=["auto", "kustomize", "lite"], default="auto")
    a = ap.parse_args(argv)
    paths = [Path(p) for p in a.overlays] or sorted(p for p in OVERLAYS.iterdir() if p.is_dir())
    failed = False
    for path in paths:
        try:
            objects, errors, used = check_overlay(path, a.renderer)
        except RenderError as e:
            print(f"{path}: render failed: {e}", file=sys.stderr)
            failed = True
            continue
        kinds = sorted({o["kind"] for o in objects})
        print(
            f"{path}: {len(objects)} objects ({', '.join(kinds)}) rendered by {used}: "
            f"{'OK' if not errors else f'{len(errors)} error(s)'}"
        )
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        failed |= bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
