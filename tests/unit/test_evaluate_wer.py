"""evaluate_wer: the gate (pure rules), and evaluate() end to end on the tiny fixture model."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components.common.evaluation import EvaluationSummary
from components.evaluate_wer.gate import PolicyError, decide, load_policy

REPO = Path(__file__).resolve().parents[2]


def _m(wer: float, n: int = 10) -> dict:
    return {"wer_norm": wer, "wer_raw": wer + 0.05, "cer": wer / 2, "n_utts": n}


def _metrics(base: dict, cand: dict, cand_off: dict | None = None) -> dict:
    """base/cand: {lang: streaming wer_norm}; offline = streaming unless cand_off given."""
    cand_off = cand_off or cand
    return {
        "target_langs": ["bg-BG"],
        "replay_langs": ["el-GR", "es-ES"],
        "metrics": {
            "base": {
                "streaming": {k: _m(v) for k, v in base.items()},
                "offline": {k: _m(v) for k, v in base.items()},
            },
            "candidate": {
                "streaming": {k: _m(v) for k, v in cand.items()},
                "offline": {k: _m(v) for k, v in cand_off.items()},
            },
        },
        "delta_ci": {"bg-BG": {"delta": -0.5, "low": -0.6, "high": -0.4}},
    }


GOOD = _metrics({"bg-BG": 1.15, "el-GR": 0.64, "es-ES": 0.50}, {"bg-BG": 0.59, "el-GR": 0.66, "es-ES": 0.55})


def _failed(decision) -> list[str]:
    return [r.rule for r in decision.rules if not r.passed]


def test_default_policy_passes_the_measured_demo_story():
    d = decide(GOOD, load_policy(None))
    assert d.passed, d.summary()
    rules = {r.rule for r in d.rules}
    assert {
        "target_improves[bg-BG]",
        "target_ceiling[bg-BG]",
        "replay_max_regression[el-GR]",
        "replay_max_regression[es-ES]",
        "streaming_offline_gap[bg-BG]",
    } <= rules
    r = next(r for r in d.rules if r.rule == "replay_max_regression[es-ES]")
    assert (
        r.value == pytest.approx(0.05) and r.threshold == pytest.approx(0.05) and r.passed
    )  # exactly 5 points


def test_replay_regression_fails_the_gate():
    m = _metrics({"bg-BG": 1.15, "el-GR": 0.64, "es-ES": 0.50}, {"bg-BG": 0.59, "el-GR": 1.0, "es-ES": 0.55})
    d = decide(m, load_policy(None))
    assert not d.passed and _failed(d) == ["replay_max_regression[el-GR]"]
    assert "el-GR" in d.summary() and "+0.3600" in d.summary()


def test_target_not_improving_fails():
    m = _metrics({"bg-BG": 0.60, "el-GR": 0.6, "es-ES": 0.5}, {"bg-BG": 0.60, "el-GR": 0.6, "es-ES": 0.5})
    assert _failed(decide(m, load_policy(None))) == ["target_improves[bg-BG]"]


def test_target_ceiling_and_gap():
    m = _metrics(
        {"bg-BG": 1.5, "el-GR": 0.6, "es-ES": 0.5},
        {"bg-BG": 1.2, "el-GR": 0.6, "es-ES": 0.5},
        cand_off={"bg-BG": 1.0, "el-GR": 0.6, "es-ES": 0.5},
    )
    assert _failed(decide(m, load_policy(None))) == ["target_ceiling[bg-BG]", "streaming_offline_gap[bg-BG]"]


def test_missing_language_fails_not_passes():
    m = copy.deepcopy(GOOD)
    del m["metrics"]["candidate"]["streaming"]["es-ES"]
    d = decide(m, load_policy(None))
    assert not d.passed and "replay_max_regression[es-ES]" in _failed(d)


def test_policy_thresholds_are_data_and_ci_rule():
    strict = load_policy(
        "mode: streaming\nrules:\n  replay_max_regression: {max_increase: 0.01}\n  target_ci_below_zero: {}\n"
    )
    d = decide(GOOD, strict)
    assert _failed(d) == ["replay_max_regression[el-GR]", "replay_max_regression[es-ES]"]
    m = copy.deepcopy(GOOD)
    m["delta_ci"]["bg-BG"] = {"delta": -0.1, "low": -0.3, "high": 0.05}
    assert _failed(decide(m, strict))[0] == "target_ci_below_zero[bg-BG]"


def test_bad_policies_are_named():
    with pytest.raises(PolicyError, match="unknown rule 'replay_regresion'"):
        load_policy("rules:\n  replay_regresion: {max_increase: 0.1}\n")
    with pytest.raises(PolicyError, match="'rules' mapping"):
        load_policy("mode: streaming\n")
    with pytest.raises(PolicyError, match="mode must be"):
        load_policy("mode: live\nrules: {}\n")
    assert not decide(GOOD, {"rules": {}}).passed  # nothing measured against -> never a pass


# ------------------------------------------------------------------ end to end on the tiny model
@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)  # see test_asr_infer.tiny_model_path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_asr_infer import build_tiny_model  # same builder and cache dir as the asr_infer tests

    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny_asr_model")


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory) -> Path:
    import soundfile as sf

    from components.common.manifest import write_manifest

    d = tmp_path_factory.mktemp("manifests")
    (d / "audio").mkdir()
    rows = []
    texts = {
        "bg-BG": ["Включи светлината.", "Добро утро, как сте?", "Температурата е двадесет."],
        "el-GR": ["Καλημέρα σας.", "Τι ώρα είναι;"],
    }
    rng = np.random.default_rng(0)
    for lang, items in texts.items():
        for k, text in enumerate(items):
            uid = f"{lang}-{k}"
            n = int(16000 * (0.8 + 0.3 * k))
            t = np.arange(n) / 16000
            a = 0.3 * np.sin(2 * np.pi * (150 + 300 * k + 200 * t) * t) + 0.05 * rng.standard_normal(n)
            sf.write(d / "audio" / f"{uid}.wav", a.astype(np.float32), 16000, subtype="PCM_16")
            rows.append(
                {
                    "audio_filepath": f"audio/{uid}.wav",
                    "duration": n / 16000,
                    "text": text,
                    "lang": lang,
                    "target_lang": lang,
                    "speaker": f"s{k}",
                    "id": uid,
                }
            )
    write_manifest(d / "test.jsonl", rows)
    return d


def test_evaluate_end_to_end(tiny_model_path, manifest_dir, tmp_path, caplog):
    import logging

    from components.evaluate_wer.core import evaluate

    caplog.set_level(logging.INFO, logger="components.evaluate_wer")

    out = tmp_path / "eval"
    res = evaluate(
        str(tiny_model_path),
        str(tiny_model_path),
        str(manifest_dir),
        str(out),
        ["bg-BG"],
        ["el-GR"],
        [56, 1],
        load_policy(None),
        batch_size=2,
        seed=0,
        champion_model=str(tiny_model_path),
    )
    text = (out / "evaluation.json").read_text(encoding="utf-8")
    ev = json.loads(text)
    record = _check_summary(text, ev, res)
    _check_decision(out, ev, res)
    _check_outputs(out, record, caplog.text)
    _check_latency_curve(out, ev, res)
    _check_golden_set(out, tiny_model_path)


def _check_summary(text: str, ev: dict, res) -> EvaluationSummary:
    """evaluation.json: the typed record, every model x mode x language scored, sha256s, CIs."""
    # one typed record (components/common/evaluation.py) serialises to the very JSON evaluate_wer wrote
    record = EvaluationSummary.from_json(text)
    assert record.to_json() == text and record.to_dict() == ev
    assert record.decision.passed is res.passed and record.champion_delta_ci["bg-BG"].n_resamples == 1000
    for model in ("base", "candidate", "champion"):
        for mode in ("streaming", "offline"):
            for lang, n in (("bg-BG", 3), ("el-GR", 2), ("overall", 5)):
                s = ev["metrics"][model][mode][lang]
                assert {"wer_raw", "wer_norm", "cer", "n_utts"} <= set(s) and s["n_utts"] == n
    assert ev["att_context_size"] == [56, 1] and ev["target_langs"] == ["bg-BG"]
    # every model is named by its sha256 (the gate record binds the verdict to it); the floor was met
    assert (
        ev["candidate_sha256"] == ev["base_sha256"] == ev["champion_sha256"]
        and len(ev["candidate_sha256"]) == 64
    )
    assert ev["policy_floor"]["violations"] == [] and len(ev["policy_floor"]["sha256"]) == 64
    # the champion was scored on the same utterances: identical model -> CI of candidate - champion holds 0
    assert ev["champion_delta_ci"]["bg-BG"]["low"] <= 0.0 <= ev["champion_delta_ci"]["bg-BG"]["high"]
    assert next(r for r in ev["decision"]["rules"] if r["rule"] == "champion_not_worse[bg-BG]")["passed"]
    # identical models: every delta is 0 and its CI contains 0; the target did not improve -> gate fails
    for lang in ("bg-BG", "el-GR"):
        ci = ev["delta_ci"][lang]
        assert ci["delta"] == 0.0 and ci["low"] <= 0.0 <= ci["high"] and ci["n_resamples"] == 1000
        assert (ci["mode"], ci["metric"]) == ("streaming", "wer_norm")  # the default policy's
    return record


def _check_decision(out: Path, ev: dict, res) -> None:
    """decision.json: identical models, so the target did not improve and the gate fails."""
    dec = json.loads((out / "decision.json").read_text(encoding="utf-8"))
    assert dec == ev["decision"] and dec["passed"] is False and res.passed is False
    failed = [r["rule"] for r in dec["rules"] if not r["passed"]]
    assert "target_improves[bg-BG]" in failed and "replay_max_regression[el-GR]" not in failed
    assert all({"rule", "value", "threshold", "passed", "reason"} <= set(r) for r in dec["rules"])


def _check_outputs(out: Path, record: EvaluationSummary, log_text: str) -> None:
    """utterances.jsonl, the offline HTML report (autoescaped jinja2) and the logged table."""
    lines = (out / "utterances.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and {"base_streaming", "candidate_offline"} <= set(json.loads(lines[0]))
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 3 and "FAILED" in html  # per-language, str/off, curve
    assert "WER vs latency" in html and "Evaluation speed" in html
    assert not re.search(r"<(link|script)[^>]*(href|src)=[\"']?(https?:)?//", html)  # renders offline
    from components.evaluate_wer.report import TEMPLATE, render_html  # a jinja2 template file, autoescaped

    assert (Path(render_html.__code__.co_filename).parent / TEMPLATE).is_file()
    record.candidate_model = "<script>x</script>"
    assert "&lt;script&gt;x&lt;/script&gt;" in render_html(record) and "<script>" not in render_html(record)
    assert "gate: FAILED" in log_text  # the table is logged (components.common.logs)


def _check_latency_curve(out: Path, ev: dict, res) -> None:
    """The candidate's WER-vs-latency curve (every supported lookahead, latency from the chunk size), and
    offline at the largest lookahead."""
    curve = ev["latency_curve"]
    assert curve == json.loads((out / "latency_curve.json").read_text(encoding="utf-8")) == res.latency_curve
    assert [p["att_context_size"] for p in curve] == [[56, 0], [56, 1], [56, 6], [56, 13]]
    assert [p["latency_ms"] for p in curve] == [80.0, 160.0, 560.0, 1120.0]  # (right+1) x 8 x 10 ms
    assert [p["deployed"] for p in curve] == [False, True, False, False]
    deployed = curve[1]["metrics"]
    for lang in ("bg-BG", "el-GR", "overall"):
        assert deployed[lang]["wer_norm"] == ev["metrics"]["candidate"]["streaming"][lang]["wer_norm"]
    assert len({p["metrics"]["overall"]["cer"] for p in curve}) > 1  # the lookahead changes the output
    # offline = the largest lookahead (streaming is token-identical to offline at a given lookahead here), so
    # the streaming-vs-offline gap compares two operating points
    assert ev["offline_att_context_size"] == [56, 13]
    for lang in ("bg-BG", "el-GR", "overall"):
        assert ev["metrics"]["candidate"]["offline"][lang]["cer"] == curve[-1]["metrics"][lang]["cer"]
    assert ev["timings_s"]["candidate"]["streaming_rtfx"] > 0 and ev["stream_batch"] == 16


def _check_golden_set(out: Path, tiny_model_path) -> None:
    """The golden set for post-deploy parity: 2 clips per language, the candidate's offline text of each."""
    from components.common.asr_infer import AsrModel
    from components.evaluate_wer.golden import check_parity, load_golden_set

    items, audios = load_golden_set(out / "golden")
    assert sorted(i.lang for i in items) == ["bg-BG", "bg-BG", "el-GR", "el-GR"]
    model = AsrModel.load(str(tiny_model_path))
    assert check_parity(
        out / "golden", lambda a, lg: model.transcribe([a], [lg], att_context_size=[56, 1])[0]
    ).passed


def test_summary_record_refuses_a_malformed_summary_by_field():
    from components.common.evaluation import SummaryError

    with pytest.raises(SummaryError, match=r"unknown field\(s\) \['wer'\] in delta_ci\[bg-BG\]"):
        EvaluationSummary.from_dict({"delta_ci": {"bg-BG": {"delta": 0, "low": 0, "high": 0, "wer": 1}}})
    with pytest.raises(SummaryError, match=r"decision.rules\[0\] lacks \['rule'\]"):
        EvaluationSummary.from_dict({"decision": {"passed": True, "rules": [{"passed": True}]}})
    with pytest.raises(SummaryError, match=r"unknown field\(s\) \['extra'\] in the summary"):
        EvaluationSummary.from_json('{"extra": 1}')
    with pytest.raises(SummaryError, match="not JSON"):
        EvaluationSummary.from_json("{")


def test_evaluate_errors_name_the_problem(tiny_model_path, manifest_dir, tmp_path):
    from components.evaluate_wer.core import evaluate, parse_att_context_size

    with pytest.raises(ValueError, match=r"no test utterances for language\(s\) \['es-ES'\]"):
        evaluate(
            str(tiny_model_path),
            str(tiny_model_path),
            str(manifest_dir),
            str(tmp_path),
            ["bg-BG"],
            ["es-ES"],
            None,
            load_policy(None),
        )
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        evaluate(
            str(tiny_model_path),
            str(tiny_model_path),
            str(tmp_path),
            str(tmp_path),
            ["bg-BG"],
            [],
            None,
            load_policy(None),
        )
    assert parse_att_context_size("[56,1]") == [56, 1] and parse_att_context_size("") is None
    with pytest.raises(ValueError, match="two integers"):
        parse_att_context_size("[56]")


def test_cli_help_and_component_interface():
    r = subprocess.run(
        [sys.executable, "-m", "components.evaluate_wer", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "--target-langs" in r.stdout and "--gate-policy" in r.stdout
    from components.evaluate_wer.component import evaluate_wer

    spec = evaluate_wer.component_spec
    assert set(spec.outputs) >= {"passed", "decision", "metrics", "report", "evaluation", "mlflow_run_id"}
    assert set(spec.inputs) >= {
        "manifests",
        "base_model_uri",
        "candidate",
        "att_context_size",
        "settings",  # the step's record, gate_policy included (tests/unit/test_step_settings.py)
        "mlflow_tracking_uri",
        "pipeline_run_id",
    }


def test_batched_streaming_evaluation_equals_one_stream_at_a_time(tiny_model_path, manifest_dir):
    """The evaluator streams utterances concurrently (stream_step_batch); its transcripts are the ones a
    client streaming each utterance alone gets, whatever the number of concurrent streams."""
    from components.common.asr_infer import AsrModel
    from components.common.audio import load_audio
    from components.common.manifest import read_manifest
    from components.evaluate_wer.core import transcribe_streaming, transcribe_streaming_batch

    asr = AsrModel.load(str(tiny_model_path), device="cpu")
    rows = read_manifest(manifest_dir / "test.jsonl")
    audios = [load_audio(r["audio_filepath"]) for r in rows] + [np.zeros(0, np.float32)]
    langs = [r["lang"] for r in rows] + ["el-GR"]
    alone = [transcribe_streaming(asr, a, lg, [56, 6], 0.16) for a, lg in zip(audios, langs, strict=True)]
    assert len(set(alone)) == len(alone)  # distinct outputs: the comparison is not trivial
    for n_streams in (16, 2):  # all at once; and a pool that refills as streams end
        assert transcribe_streaming_batch(asr, audios, langs, [56, 6], 0.16, n_streams) == alone


def test_summary_metrics_and_mlflow_run(tiny_model_path, manifest_dir, tmp_path, monkeypatch):
    """run_step logs the report to MLflow (real sqlite store) and flattens every number for KFP Metrics."""
    from mlflow import MlflowClient

    from components.evaluate_wer.core import run_step, summary_metrics

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "eval-test")
    policy = "mode: offline\nmetric: cer\nrules:\n  target_improves: {}\n"  # inline YAML, CI follows it
    res = run_step(
        str(manifest_dir),
        str(tiny_model_path),
        str(tiny_model_path.parent),
        "bg-BG",
        "el-GR",
        "[56,6]",
        policy,
        out_dir=str(tmp_path / "eval"),
        pipeline_run_id="run-123",
        max_utts_per_lang=2,
        latency_curve=False,
        n_resamples=200,
        floor_override_reason="test: the CI follows a policy's own mode and metric",
    )
    floor = json.loads(Path(res.evaluation_path).read_text(encoding="utf-8"))["policy_floor"]
    assert floor["violations"] and floor["override_reason"].startswith("test:")  # below the floor, audited
    assert {(d["mode"], d["metric"], d["n_resamples"]) for d in res.delta_ci.values()} == {
        ("offline", "cer", 200)
    }
    assert [r["rule"] for r in res.decision["rules"]] == ["target_improves[bg-BG]"]
    flat = summary_metrics(res)
    assert flat["gate_passed"] == 0.0 and flat["delta_wer_norm_delta_bg-BG"] == 0.0
    assert {
        "candidate_streaming_wer_norm_bg-BG",
        "base_offline_cer_el-GR",
        "candidate_streaming_rtfx",
    } <= set(flat)
    assert not any("_att56-" in k for k in flat)  # no curve requested
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(res.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["pipeline_run_id"] == "run-123"
    assert run.data.tags["gate_passed"] == "false" and run.data.params["att_context_size"] == "[56, 6]"
    assert (
        run.data.metrics["candidate_streaming_wer_norm_bg-BG"] == flat["candidate_streaming_wer_norm_bg-BG"]
    )
    names = {f.path for f in client.list_artifacts(res.mlflow_run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/evaluation.json", "evaluation/decision.json"} <= names
    assert not (tmp_path / "eval" / "_base_model").exists()


def test_latency_curve_metrics_are_flattened():
    from components.evaluate_wer.core import EvaluationResult, summary_metrics

    curve = [
        {
            "att_context_size": [56, 0],
            "latency_ms": 80.0,
            "deployed": False,
            "metrics": {"bg-BG": {"wer_norm": 0.5}, "overall": {"wer_norm": 0.4}},
        },
        {
            "att_context_size": [56, 3],
            "latency_ms": 320.0,
            "deployed": True,
            "metrics": {"bg-BG": {"wer_norm": 0.3}, "overall": {"wer_norm": 0.2}},
        },
    ]
    r = EvaluationResult(
        passed=True,
        decision={},
        metrics={},
        delta_ci={},
        evaluation_path="",
        decision_path="",
        report_path="",
        utterances_path="",
        latency_curve=curve,
    )
    flat = summary_metrics(r)
    assert flat == {
        "gate_passed": 1.0,
        "candidate_streaming_att56-0_latency_ms": 80.0,
        "candidate_streaming_att56-0_wer_norm_bg-BG": 0.5,
        "candidate_streaming_att56-0_wer_norm_overall": 0.4,
        "candidate_streaming_att56-3_latency_ms": 320.0,
        "candidate_streaming_att56-3_wer_norm_bg-BG": 0.3,
        "candidate_streaming_att56-3_wer_norm_overall": 0.2,
    }


@pytest.mark.slow  # ~70 s: a kfp.local subprocess imports NeMo and evaluates with the full latency curve
def test_component_through_kfp_local(tiny_model_path, manifest_dir, tmp_path, monkeypatch):
    """The kfp wrapper as the pipeline runs it: KFP Metrics per language/mode, report, MLflow run id."""
    from kfp import dsl, local

    from components.evaluate_wer.component import evaluate_wer

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))

    def only_eval(manifests_uri, model_uri):
        m = dsl.importer(artifact_uri=manifests_uri, artifact_class=dsl.Dataset)
        c = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
        t = evaluate_wer(
            manifests=m.output,
            base_model_uri=str(tiny_model_path),
            candidate=c.output,
            target_langs="bg-BG",
            replay_langs="el-GR",
            settings="att_context_size=[56,6]\ngate_policy=",
            pipeline_run_id="kfp-local-run",
        )
        return t.outputs["metrics"]

    # real types, not the strings `from __future__ import annotations` would leave for kfp to parse
    only_eval.__annotations__ = {"manifests_uri": str, "model_uri": str, "return": dsl.Metrics}
    metrics = dsl.pipeline(only_eval)(
        manifests_uri=str(manifest_dir), model_uri=str(tiny_model_path.parent)
    ).output
    md = metrics.metadata
    for model in ("base", "candidate"):
        for mode in ("streaming", "offline"):
            for lang in ("bg-BG", "el-GR", "overall"):
                assert f"{model}_{mode}_wer_norm_{lang}" in md
    assert md["gate_passed"] == 0.0 and "candidate_streaming_att56-0_wer_norm_bg-BG" in md
    from mlflow import MlflowClient

    runs = MlflowClient(tracking_uri=uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=uri).search_experiments()],
        filter_string="tags.pipeline_run_id = 'kfp-local-run'",
    )
    assert len(runs) == 1 and runs[0].data.metrics["gate_passed"] == 0.0
