"""Gateway + monitoring manifests (issue 18): rendered in both overlays, alert rules and dashboard parse and
name only metrics the code exports, the sync sidecar has its liveness probe and parity metric, and the
sidecar's parity helpers (reject a version, heartbeat) behave."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
MON = K8S / "base" / "monitoring"


from tests.unit.test_infra import check, sync  # noqa: E402  (infra/ scripts loaded as modules there)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {o: check.render(K8S / "overlays" / o) for o in ("dev", "prod")}


def _exported_metrics() -> set[str]:
    """Every series name the gateway exports (+ the sidecar's), as Prometheus exposes them."""
    from prometheus_client import generate_latest

    from serving.gateway.app import Metrics

    m = Metrics()
    m.requests.labels("riva", "Recognize", "OK").inc()
    m.latency.labels("riva", "Recognize").observe(0.1)
    m.chunk_latency.labels("champion").observe(0.01)
    m.audio.labels("riva").inc(1)
    m.rtf.labels("riva").observe(0.1)
    m.sessions.labels("champion", "1").inc()
    text = generate_latest(m.registry).decode()
    names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }
    assert "asr_serving_parity_ok" in (K8S / "base" / "triton" / "sync_champion.py").read_text()
    return names | {"asr_serving_parity_ok"}


def _metric_names(expr: str) -> set[str]:
    return {n for n in re.findall(r"\b(asr_[a-z_]+)", expr)}


def test_alert_rules_cover_the_slos_and_name_exported_metrics():
    doc = yaml.safe_load((MON / "prometheus-rules.yaml").read_text())
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    assert {
        "AsrChunkLatencyP99OverBudget",
        "AsrGatewayErrorRate",
        "AsrNoReadyTriton",
        "AsrPostDeployParityFailed",
    } <= set(rules)
    exported = _exported_metrics()
    for name, r in rules.items():
        assert r["labels"]["severity"] and r["annotations"]["summary"], name
        assert r["expr"].count("(") == r["expr"].count(")"), name
        assert _metric_names(r["expr"]) <= exported, (name, _metric_names(r["expr"]) - exported)


def test_dashboard_and_scrape_configs_parse_and_use_exported_metrics():
    dash = json.loads((MON / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(dash["panels"]) >= 6 and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    used = set().union(*map(_metric_names, exprs))
    assert used <= _exported_metrics(), used - _exported_metrics()
    assert {
        "asr_gateway_chunk_seconds_bucket",
        "asr_gateway_active_streams",
        "asr_gateway_sessions_total",
        "asr_gateway_real_time_factor_bucket",
        "asr_gateway_audio_seconds_total",
    } <= used
    scrape = yaml.safe_load((MON / "prometheus-scrape.yaml").read_text())
    assert {j["job_name"] for j in scrape["scrape_configs"]} == {
        "asr-triton",
        "asr-triton-sync",
        "asr-gateway",
    }


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_gateway_and_monitoring_objects_render_and_validate(rendered, overlay):
    objs = rendered[overlay]
    names = {
        (
            o["kind"],
            o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] == "ConfigMap" else o["metadata"]["name"],
        )
        for o in objs
    }
    for kind in ("Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler"):
        assert (kind, "asr-gateway") in names, kind
    assert {
        ("ConfigMap", "asr-prometheus-rules"),
        ("ConfigMap", "asr-grafana-dashboard"),
        ("ConfigMap", "asr-prometheus-scrape"),
    } <= names
    for o in objs:
        assert not check.schema_errors(o), check.schema_errors(o)
    assert not check.policy_errors(objs)
    gw = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "asr-gateway")
    c = gw["spec"]["template"]["spec"]["containers"][0]
    assert (
        c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    )
    triton = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "triton")
    side = triton["spec"]["template"]["spec"]["containers"][1]
    assert side["name"] == "sync-champion" and "--alive" in side["livenessProbe"]["exec"]["command"]
    assert side["ports"] == [{"name": "sync-metrics", "containerPort": 9102}]


def test_reject_version_moves_both_models_aside_and_remembers_the_checkpoint(tmp_path):
    for model in sync.MODELS:
        for v in (1, 2):
            d = tmp_path / model / str(v)
            d.mkdir(parents=True)
            (d / "model.json").write_text(json.dumps({"sha256": f"sha-{v}"}))
    moved = sync.reject_version(tmp_path, 2, "parity failed")
    assert len(moved) == 2 and sync.served_sha256(tmp_path) == (1, "sha-1")
    assert sync.rejected_sha256(tmp_path) == {"sha-2"}
    assert "parity failed" in (tmp_path / "asr_offline" / ".rejected-2" / "REJECTED.txt").read_text()


def test_liveness_follows_the_heartbeat(tmp_path):
    beat = str(tmp_path / "alive")
    assert not sync.alive(beat)
    sync.heartbeat(beat)
    assert sync.alive(beat, max_age_s=60)
    old = time.time() - 120
    import os

    os.utime(beat, (old, old))
    assert not sync.alive(beat, max_age_s=60)
