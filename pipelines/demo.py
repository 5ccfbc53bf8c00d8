"""`make demo`: the whole system on this machine, data to served model.

1. synthesize the demo corpus (el-GR, bg-BG, es-ES; espeak-ng voices) into data/ and version it with DVC
2. bootstrap the tiny base model (Nemotron class) WITHOUT the target language; register it in MLflow
3. run the Kubeflow pipeline locally (kfp.local): validate → manifests → fine-tune → evaluate → gate →
   register → promote → export to triton_repo/
4. start the real tritonserver over triton_repo/ and the gateway in front of it, transcribe the held-out clips
   through the gateway (OpenAI SDK offline, Riva client streaming), score, stop both
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from pipelines.console import Console
from pipelines.local import REPO_ROOT, load_params, pipeline_arguments, run_local, task_outputs

LOG_FILE = (
    REPO_ROOT / "outputs" / "demo.log"
)  # everything the demo and its tasks wrote (the terminal: the story)
_console: Console | None = None


def say(text: str = "") -> None:
    """A line of the story: the terminal and the demo log (plain print outside a Console)."""
    if _console is not None:
        _console.say(text)
    else:
        print(text, flush=True)


def banner(title: str) -> None:
    say(f"\n{'=' * 100}\n== {title}\n{'=' * 100}")


def dvc(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=REPO_ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def step_corpus(params: dict) -> str:
    from components.register_model.core import read_data_md5
    from components.synthesize_corpus.core import synthesize_corpus

    c = params["corpus"]
    banner("1/5 Demo corpus (espeak-ng) + DVC version")
    summary = synthesize_corpus(
        REPO_ROOT / c["out"],
        langs=tuple(c["langs"]),
        n_train=c["n_train"],
        n_val=c["n_val"],
        n_test=c["n_test"],
        seed=c["seed"],
    )
    print(summary)  # the full record: the log only
    dvc("add", "-q", c["out"])
    dvc("push", "-q")
    md5 = read_data_md5(REPO_ROOT / f"{c['out']}.dvc")
    say(f"data.dvc md5 {md5} pushed to the DVC remote ({dvc('remote', 'list').strip()})")
    return md5


def step_base_model(params: dict) -> str:
    """Pre-train (or reuse) the base without the target language; register it as <model>-base@base."""
    from components.build_manifest.core import build_manifests
    from components.finetune_asr.bootstrap import bootstrap_base_model
    from registry.mlflow_adapter import Registry, get_client
    from registry.policy import BASE

    b, name = params["bootstrap"], params["register_model"]["model_name"] + "-base"
    banner(f"2/5 Base model: tiny {b['langs']} (target {params['finetune_asr']['target_langs']} unseen)")
    man_dir = REPO_ROOT / b["cache_dir"] / "manifests"
    build_manifests(REPO_ROOT / params["corpus"]["out"], man_dir, seed=params["finetune_asr"]["seed"])
    nemo = bootstrap_base_model(
        train_manifest=man_dir / "train.jsonl",
        cache_dir=REPO_ROOT / b["cache_dir"],
        langs=list(b["langs"]),
        max_steps=int(b["max_steps"]),
        config=REPO_ROOT / b["config"],
        seed=int(params["corpus"]["seed"]),
    )
    reg = Registry(get_client())
    current = reg.by_alias(name, BASE)
    from components.common.io import sha256_file

    sha = sha256_file(nemo)
    if current and current.tags.get("checkpoint_sha256") == sha:
        say(f"base model already registered: models:/{name}@{BASE} (v{current.version})")
    else:
        info = reg.register(
            name,
            Path(nemo),
            tags={"role": "base", "languages": ",".join(b["langs"])},
            description="Tiny Nemotron-class base model, pre-trained on the demo corpus "
            f"without the target language ({','.join(b['langs'])}).",
            aliases=(BASE,),
        )
        say(f"registered base model models:/{name}@{BASE} (v{info.version})")
    return f"models:/{name}@{BASE}"


def step_pipeline(params: dict, base_uri: str) -> Path:
    banner("3/5 Kubeflow pipeline, run locally with kfp.local")
    args = pipeline_arguments(params, base_uri)
    print(json.dumps(args, indent=2))  # the log only
    say(f"pipeline arguments: in {LOG_FILE.name}; task output (NeMo, Lightning, kfp): in {LOG_FILE.name}")
    return run_local(args, REPO_ROOT / "outputs" / "kfp")


def run_evaluation(run_dir: Path, model_name: str) -> tuple[dict, Path | None]:
    """(evaluation.json, its path) of the run: its evaluate-wer task's, or, when that task came from kfp.local's
    cache (an unchanged re-run), the one registered with the version register_model returned."""
    ev_file = run_dir / "evaluate-wer" / "evaluation" / "evaluation.json"
    if ev_file.exists():
        return json.loads(ev_file.read_text()), ev_file
    version = task_outputs(run_dir, "register-model").get("version")
    if not version:
        return {}, None
    from registry import gate_record as gr
    from registry.mlflow_adapter import Registry, get_client

    reg = Registry(get_client())
    raw = reg._artifact_bytes(reg.get(model_name, str(version)), gr.EVALUATION_ARTIFACT)
    return (json.loads(raw), None) if raw else ({}, None)


def short_validation(summary: str) -> str:
    """validate_data's summary without the all-zero rows of its per-check table (the log has all of it)."""
    table_row = re.compile(r"^  [a-z_]+ +(error|warning) +(\d+)")
    lines = summary.splitlines()
    failing = [line for line in lines if (m := table_row.match(line)) and int(m.group(2)) > 0]
    header = ["check", "severity", "failed"]
    return "\n".join(
        line
        for line in lines
        if line in failing or not (table_row.match(line) or (line.split() == header and not failing))
    )


def report_pipeline(run_dir: Path, params: dict) -> dict:
    from registry.mlflow_adapter import Registry, get_client

    banner("4/5 Pipeline results")
    out: dict = {"run_dir": str(run_dir)}
    evaluation, ev_file = run_evaluation(run_dir, params["register_model"]["model_name"])
    if not (run_dir / "finetune-asr").exists():
        say(
            "Unchanged inputs (data md5, base sha256, settings, code): validation, manifests, fine-tune and "
            "evaluation came from kfp.local's cache; nothing was trained (docs/REPRODUCE.md)"
        )
    v = task_outputs(run_dir, "validate-data")
    say(
        "Validation:\n"
        + short_validation(str(v.get("summary", "(cached: the same dataset version passed before)")))
    )
    brief = json.loads(task_outputs(run_dir, "build-manifest").get("Output") or "{}")
    if not brief and evaluation.get("manifest"):  # cached: the manifests' own summary
        summary = Path(evaluation["manifest"]).parent / "summary.json"
        brief = json.loads(summary.read_text()) if summary.is_file() else {}
    counts, hours = brief.get("counts", {}), brief.get("hours", {})
    langs = sorted({lang for split in counts.values() for lang in split})
    say("\nManifests (clips / hours per split and language):")
    say("  " + f"{'split':6s}" + "".join(f"{lang:>18s}" for lang in langs))
    for split in ("train", "val", "test"):
        cells = "".join(
            f"{counts.get(split, {}).get(lang, 0):>9d} / {hours.get(split, {}).get(lang, 0):5.2f} h"
            for lang in langs
        )
        say(f"  {split:6s}{cells}")
    out["evaluation"] = str(ev_file or "")
    out["test_manifest"] = evaluation.get("manifest", "")
    att = task_outputs(run_dir, "preflight-finetune").get("att_context_size") or evaluation.get(
        "att_context_size", "?"
    )
    say(f"\nWER on held-out speakers (normalized; streaming at att_context_size {att}):")
    say(f"  {'language':10s} {'mode':10s} {'base':>8s} {'candidate':>10s}")
    metrics = evaluation.get("metrics", {})
    for mode in ("streaming", "offline"):
        for lang in sorted(metrics.get("candidate", {}).get(mode, {})):
            b = metrics.get("base", {}).get(mode, {}).get(lang, {}).get("wer_norm", float("nan"))
            c = metrics["candidate"][mode][lang].get("wer_norm", float("nan"))
            say(f"  {lang:10s} {mode:10s} {b:8.1%} {c:10.1%}")
    if ev_file:
        say(f"Evaluation report (HTML with plots): {run_dir / 'evaluate-wer' / 'evaluation' / 'report.html'}")
    decision = evaluation.get("decision", {})
    say(f"\nGate: {'PASSED' if decision.get('passed') else 'FAILED'}")
    for r in decision.get("rules", []):
        say(f"  [{'pass' if r.get('passed') else 'FAIL'}] {r.get('rule')}: {r.get('reason', '')}")
    name = params["register_model"]["model_name"]
    state = Registry(get_client()).state(name)
    say("\nRegistry:")
    for ver in state["versions"]:
        say(
            f"  {name} v{ver['version']:>3s} aliases={ver['aliases']} gate.passed={ver['gate.passed']} "
            f"data_md5={ver['data_md5']} sha256={ver['checkpoint_sha256'][:12]}"
        )
    history = (
        ", ".join(
            f"{h['op']} v{h['v']}" + (f" (from v{h['prev']})" if h.get("prev") else "")
            for h in state.get("champion_history", [])
        )
        or "(none)"
    )
    say(f"  champion: v{state.get('champion') or '-'}  history: {history}")
    e = task_outputs(run_dir, "export-triton")
    say(
        f"\nTriton model repository: {params['export_triton']['triton_repo']}/ version {e.get('version', '-')}"
    )
    out.update(registry=state, decision=decision, triton_version=e.get("version"))
    return out


def step_serve(params: dict, run_dir: Path, test_manifest: str = "") -> dict:
    """Serve the champion the way applications reach it: tritonserver behind the gateway (serving/gateway),
    offline clips through the OpenAI SDK, streaming clips through the Riva client, both unmodified."""
    import io

    import openai
    import riva.client
    import soundfile as sf

    from components.common.manifest import read_manifest
    from components.common.wer import score
    from serving.gateway.process import GatewayProcess
    from serving.server import TritonServer

    banner(
        "5/5 Serving: tritonserver + the gateway on loopback; held-out clips through the OpenAI SDK and Riva"
    )
    repo = REPO_ROOT / params["export_triton"]["triton_repo"]
    test = read_manifest(
        test_manifest or run_dir / "build-manifest" / "manifests" / "test.jsonl"
    )  # held-out split
    result: dict = {}
    with (
        TritonServer(repo, models=["asr_offline", "asr_streaming"]) as server,
        GatewayProcess(server.grpc_url.removeprefix("grpc://"), run_dir / "gateway.log") as gw,
    ):
        say(
            f"tritonserver ready on {server.grpc_url}; gateway: Riva gRPC {gw.grpc_addr}, OpenAI {gw.http_url}/v1"
        )
        oa = openai.OpenAI(api_key=gw.api_key, base_url=f"{gw.http_url}/v1", max_retries=0)
        asr = riva.client.ASRService(
            riva.client.Auth(uri=gw.grpc_addr, metadata_args=[["authorization", f"Bearer {gw.api_key}"]])
        )
        by_lang: dict[str, dict[str, list[str]]] = {}
        t0 = time.time()
        for i, row in enumerate(test):
            audio, rate = sf.read(row["audio_filepath"], dtype="int16")
            d = by_lang.setdefault(row["lang"], {"refs": [], "offline": [], "streaming": []})
            d["refs"].append(row["text"])
            wav = io.BytesIO()
            sf.write(wav, audio, rate, format="WAV", subtype="PCM_16")
            d["offline"].append(
                oa.audio.transcriptions.create(
                    model="asr_offline", file=("clip.wav", wav.getvalue()), language=row["lang"]
                ).text
            )
            cfg = riva.client.StreamingRecognitionConfig(
                config=riva.client.RecognitionConfig(
                    encoding=riva.client.AudioEncoding.LINEAR_PCM,
                    sample_rate_hertz=rate,
                    language_code=row["lang"],
                ),
                interim_results=False,
            )
            pcm = audio.tobytes()
            chunks = [pcm[k : k + int(0.16 * rate) * 2] for k in range(0, len(pcm), int(0.16 * rate) * 2)]
            finals = [
                r.alternatives[0].transcript
                for resp in asr.streaming_response_generator(chunks, cfg)
                for r in resp.results
                if r.is_final
            ]
            d["streaming"].append(finals[-1] if finals else "")
            if i < 3:
                say(
                    f"  [{row['lang']}] ref: {row['text']}\n           gateway (Riva streaming): {d['streaming'][-1]}"
                )
        say(f"\n{len(test)} clips x 2 APIs through the gateway in {time.time() - t0:.1f} s")
        say(f"  {'language':10s} {'offline WER':>12s} {'streaming WER':>14s}")
        for lang, d in sorted(by_lang.items()):
            off, st = score(d["refs"], d["offline"]), score(d["refs"], d["streaming"])
            result[lang] = {
                "offline_wer_norm": off.wer_norm,
                "streaming_wer_norm": st.wer_norm,
                "n_utts": len(d["refs"]),
            }
            say(f"  {lang:10s} {off.wer_norm:12.1%} {st.wer_norm:14.1%}")
    say("gateway and tritonserver stopped")
    return result


def main(overrides: list[str] | None = None, verbosity: int = 0) -> int:
    """The demo; its terminal output is the story, and LOG_FILE has everything (verbosity 1: both the same)."""
    global _console
    print(f"== make demo: the full log (NeMo, Lightning, kfp task output) goes to {LOG_FILE}", flush=True)
    with Console(LOG_FILE, verbosity) as console:
        _console = console
        try:
            return _run(overrides)
        except Exception as e:  # noqa: BLE001 (one line on the terminal, the traceback in the log)
            import traceback

            traceback.print_exc(file=console.log)
            say(f"\nerror: {type(e).__name__}: {e}\nthe full log: {LOG_FILE}")
            return 1
        finally:
            _console = None


def _run(overrides: list[str] | None) -> int:
    t0 = time.time()
    params = load_params(overrides=overrides)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from registry.mlflow_adapter import EXPERIMENT, Registry, default_tracking_uri, get_client

    # every task (kfp.local subprocesses inherit the environment) logs to the same tracking store and experiment,
    # whose artifact location sits next to the sqlite file rather than in the cwd
    os.environ.setdefault("MLFLOW_TRACKING_URI", default_tracking_uri())
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    Registry(get_client()).experiment_id()
    md5 = step_corpus(params)
    base_uri = step_base_model(params)
    run_dir = step_pipeline(params, base_uri)
    say(f"data.dvc md5 {md5}; the run trained on {task_outputs(run_dir, 'materialize-data').get('data_md5')}")
    summary = report_pipeline(run_dir, params)
    if summary.get("decision", {}).get("passed"):
        summary["serving"] = step_serve(params, run_dir, summary.get("test_manifest", ""))
    else:
        say("\nGate failed: nothing was promoted or exported; serving step skipped.")
    summary["seconds"] = round(time.time() - t0, 1)
    out = REPO_ROOT / "outputs" / "demo_summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    banner(f"Demo finished in {summary['seconds'] / 60:.1f} min — summary: {out}")
    say(f"the full log (NeMo, Lightning, kfp task output): {LOG_FILE}")
    return 0
