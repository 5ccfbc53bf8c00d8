"""`make rehearse`: the whole pipeline at Nemotron 3.5's real size, on this machine, with NVIDIA's recipe.

The same components and DAG as `make demo` and the cluster, run by kfp.local, but:
- the base is a Nemotron-shaped 600 M model (components/finetune_asr/nemotron_shape.py: the released
  architecture, a 13,087-piece tokenizer, the full prompt dictionary; random weights whose blank bias is
  calibrated so that greedy decoding emits tokens, or the parity checks below would compare empty strings);
- `recipe=nemotron35`: AdamW + Noam, batch_duration, bf16-mixed where the CPU has native bf16, unified prompt
  mode with replay distillation, the fused joint, every lookahead trained, [56,3] evaluated and served;
- a small slice of the demo corpus (espeak-ng, el/bg/es), versioned with DVC;
- a rehearsal gate policy: the chain must run end to end, not learn (a few steps of a random model).
Then the real tritonserver loads both exported models and must answer the test clips, offline and
streaming, with exactly the text in-process inference gives on the exported checkpoint.

It prints (and writes to outputs/rehearsal/rehearsal.{json,md}) wall time, peak RSS and artifact size per
step, and checks the budget: <= 30 min and <= 20 GB peak RSS on a 2-core, 24 GB machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.local import REPO_ROOT, load_params, pipeline_arguments, run_local, task_outputs

OUT = REPO_ROOT / "outputs" / "rehearsal"
CACHE = REPO_ROOT / ".cache"
MODEL_NAME = "nemotron35-rehearsal"
SLICE = {"langs": ("el-GR", "bg-BG", "es-ES"), "n_train": 8, "n_val": 1, "n_test": 2, "seed": 0}
BUDGET_S, BUDGET_RSS_GB = 30 * 60, 20.0
# What the rehearsal sets on top of the nemotron35 recipe (all recorded as overrides in the run's params):
OVERRIDES = [
    "finetune_asr.recipe=nemotron35",
    "finetune_asr.max_steps=3",  # a few steps: the chain must run at full size, not learn
    "finetune_asr.batch_duration=10",  # seconds of audio per batch (the recipe's 200 s is for 80 GB GPUs)
    "finetune_asr.replay_per_lang=4",
    "finetune_asr.checkpoint_every=0",
    f"register_model.model_name={MODEL_NAME}",
    "evaluate_wer.gate_floor_override_reason=rehearsal: 3 steps of a randomly initialised model cannot improve WER",
]
REHEARSAL_POLICY = """\
# The rehearsal's gate: a few steps of a randomly initialised model cannot improve WER; the chain must run.
mode: streaming
metric: wer_norm
rules:
  target_improves: {min_improvement: -1000.0}
  target_ceiling: {max_wer: 1000.0}
  replay_max_regression: {max_increase: 1000.0}
  streaming_offline_gap: {max_gap: 1000.0}
"""


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    peak_rss_gb: float = 0.0
    artifact_mb: float = 0.0
    note: str = ""


@dataclass
class Rehearsal:
    steps: list[Step] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    seconds: float = 0.0

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        self.steps.append(Step(name))
        return self.steps[-1]


class RssSampler:
    """Samples this process tree every `every` s: per kfp task (its `--function_to_execute` process and
    children) and per phase of this script, the peak RSS and the time it was seen running."""

    def __init__(self, every: float = 0.5) -> None:
        import psutil

        self.psutil, self.every = psutil, every
        self.me = psutil.Process()
        self.phase = ""
        self.peak: dict[str, float] = {}
        self.seen: dict[str, list[float]] = {}
        self.total_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _task_of(self, proc) -> str:
        try:
            cmd = proc.cmdline()
        except (self.psutil.Error, OSError):
            return ""
        return cmd[cmd.index("--function_to_execute") + 1] if "--function_to_execute" in cmd else ""

    def _descendants(self, proc) -> list:
        try:
            return proc.children(recursive=True)
        except (self.psutil.Error, OSError):
            return []

    def _rss(self, proc) -> float:
        try:
            return proc.memory_info().rss
        except (self.psutil.Error, OSError):
            return 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            now = time.monotonic()
            usage: dict[str, float] = {}
            children = self.me.children(recursive=True)
            total = self._rss(self.me) + sum(self._rss(c) for c in children)
            self.total_peak = max(self.total_peak, total)
            members: dict[str, dict[int, object]] = {}  # task -> its processes (kfp's sh wrapper and python)
            for child in children:
                task = self._task_of(child)
                if task:
                    tree = members.setdefault(task, {})
                    for proc in [child, *self._descendants(child)]:
                        tree[proc.pid] = proc
            for task, procs in members.items():
                usage[task] = sum(self._rss(p) for p in procs.values())
            if self.phase and not usage:
                usage[self.phase] = total
            for name, rss in usage.items():
                self.peak[name] = max(self.peak.get(name, 0.0), rss)
                first_last = self.seen.setdefault(name, [now, now])
                first_last[1] = now


def _du_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6 if path.exists() else 0.0


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def corpus_slice(rep: Rehearsal) -> tuple[Path, str]:
    """A small slice of the demo corpus (same synthesizer), versioned with DVC; returns (data dir, md5)."""
    from components.register_model.core import read_data_md5
    from components.synthesize_corpus.core import synthesize_corpus

    root = CACHE / "rehearsal"
    data = root / "data"
    t0 = time.monotonic()
    synthesize_corpus(
        data,
        langs=SLICE["langs"],
        n_train=SLICE["n_train"],
        n_val=SLICE["n_val"],
        n_test=SLICE["n_test"],
        seed=SLICE["seed"],
        progress=False,
    )
    dvc = [sys.executable, "-m", "dvc"]
    if not (root / ".dvc").is_dir():
        subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=root, check=True)
    subprocess.run([*dvc, "add", "-q", "data"], cwd=root, check=True)
    md5 = read_data_md5(root / "data.dvc")
    s = rep.step("corpus slice + dvc add")
    s.seconds, s.artifact_mb, s.note = time.monotonic() - t0, _du_mb(data), f"data md5 {md5[:12]}"
    return data, md5


def nemotron_base(rep: Rehearsal, data: Path) -> str:
    """Built in a child process (the CLI a user runs), so its 3.6 GB are returned before training starts."""
    t0 = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "components.finetune_asr",
            "nemotron-shape",
            "--text",
            str(data / "metadata.csv"),
            "--out",
            str(CACHE / "nemotron_shape"),
            "--calibrate-audio",
            str(sorted(data.rglob("*.wav"))[0]),
        ],
        cwd=REPO_ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    path = json.loads(out.stdout.strip().splitlines()[-1])["model_path"]
    card = json.loads(Path(path).with_name("model.json").read_text())
    s = rep.step("Nemotron-shaped base (build or cache)")
    s.seconds, s.artifact_mb = time.monotonic() - t0, _du_mb(Path(path))
    s.note = f"{card['parameters']['total'] / 1e6:.0f} M params, {card['vocab_size']} pieces"
    rep.facts["base"] = {
        "path": path,
        "parameters": card["parameters"],
        "vocab_size": card["vocab_size"],
        "att_context_sizes": card["att_context_sizes"],
        "prompt_keys": len(card["prompt_dictionary"]),
    }
    return path


def pipeline(rep: Rehearsal, data: Path, md5: str, base: str, sampler: RssSampler) -> Path:
    policy = OUT / "rehearsal_gate.yaml"
    policy.write_text(REHEARSAL_POLICY)
    params = load_params(
        overrides=[
            *OVERRIDES,
            f"corpus.out={data}",
            f"evaluate_wer.gate_policy={policy}",
            f"export_triton.triton_repo={OUT / 'triton_repo'}",
        ]
    )
    args = pipeline_arguments(params, base)  # data_rev empty: the slice in place, its DVC md5 computed
    args["work_root"] = str(OUT / "work")
    print(
        json.dumps(
            {k: v for k, v in args.items() if k not in ("gpu_tolerations", "gpu_node_selector")},
            indent=1,
            default=str,
        ),
        flush=True,
    )
    t0 = time.monotonic()
    run_dir = run_local(args, OUT / "kfp", enable_caching=False)  # a rehearsal measures every step
    rep.facts["pipeline_seconds"] = round(time.monotonic() - t0, 1)
    for task, (first, last) in sampler.seen.items():
        if task in PIPELINE_TASKS:
            s = rep.step(task)
            s.seconds, s.peak_rss_gb = last - first, sampler.peak[task] / 1e9
            s.artifact_mb = _du_mb(run_dir / task.replace("_", "-"))
    return run_dir


LINEAGE = (
    "data_md5",
    "git_commit",
    "base_model_uri",
    "base_model_sha256",
    "checkpoint_sha256",
    "pipeline_run_id",
)
PIPELINE_TASKS = (
    "materialize_data",
    "resolve_base",
    "validate_data",
    "build_manifest",
    "preflight_finetune",
    "finetune_asr",
    "evaluate_wer",
    "register_model",
    "release_gate",
    "promote_model",
    "export_triton",
)


def check_lineage(rep: Rehearsal, run_dir: Path) -> None:
    from registry.mlflow_adapter import Registry, get_client
    from registry.policy import CHAMPION

    version = Registry(get_client()).by_alias(MODEL_NAME, CHAMPION)
    tags = dict(version.tags) if version else {}
    unknown = sorted(
        {k for k, v in tags.items() if str(v).strip().lower() == "unknown"}
        | {k for k in LINEAGE if not str(tags.get(k, "")).strip()}
    )
    rep.checks["registered and promoted to champion"] = version is not None
    rep.checks["lineage holds no 'unknown' or empty tag"] = bool(tags) and not unknown
    if unknown:
        print(f"lineage tags without a value: {unknown}", flush=True)
    ft = (
        json.loads((run_dir / "finetune-asr" / "model" / "model.json").read_text())
        if (run_dir / "finetune-asr" / "model" / "model.json").is_file()
        else {}
    )
    hp = ft.get("hyperparameters", {})
    rep.facts["finetune"] = {
        k: hp.get(k)
        for k in (
            "lr",
            "peak_lr",
            "scheduler",
            "warmup_steps",
            "batch_duration",
            "precision",
            "prompt_mode",
            "replay_distill",
        )
    }
    rep.facts["finetune"]["overrides"] = ft.get("overrides")
    rep.facts["registry_version"] = version.version if version else None
    rep.facts["lineage"] = {
        k: tags.get(k) for k in ("data_md5", "git_commit", "base_model_uri", "checkpoint_sha256")
    }


def serve(rep: Rehearsal, run_dir: Path, sampler: RssSampler) -> None:
    """The real tritonserver on the exported repository; served text == in-process text, both modes."""
    import soundfile as sf

    from components.common.asr_infer import AsrModel
    from components.common.manifest import read_manifest
    from components.common.settings import parse_att_context_size
    from serving.client import transcribe_offline, transcribe_streaming
    from serving.server import TritonServer

    att = parse_att_context_size(task_outputs(run_dir, "preflight-finetune")["att_context_size"])
    offline_att = parse_att_context_size(
        task_outputs(run_dir, "preflight-finetune").get("offline_att_context_size")
    )
    repo = OUT / "triton_repo"
    version = max(int(p.name) for p in (repo / "asr_offline").iterdir() if p.name.isdigit())
    rows = read_manifest(run_dir / "build-manifest" / "manifests" / "test.jsonl")
    audios = [sf.read(r["audio_filepath"], dtype="float32")[0] for r in rows]
    langs = [r["lang"] for r in rows]
    sampler.phase = "serve: tritonserver + in-process reference"
    t0 = time.monotonic()
    with TritonServer(repo, models=["asr_offline", "asr_streaming"], startup_timeout_s=900) as server:
        load_s = time.monotonic() - t0
        got_off = [
            transcribe_offline(server.grpc_url, a, lang) for a, lang in zip(audios, langs, strict=True)
        ]
        got_str = [
            transcribe_streaming(server.grpc_url, a, lang, chunk_s=0.32, sequence_id=500 + i)
            for i, (a, lang) in enumerate(zip(audios, langs, strict=True))
        ]
        serve_s = time.monotonic() - t0 - load_s
    local = AsrModel.load(str(repo / "asr_offline" / str(version) / "model.nemo"))
    want_off = local.transcribe(audios, langs, att_context_size=offline_att or att)
    want_str = []
    for audio, lang in zip(audios, langs, strict=True):
        state, text, step = local.new_stream(lang, att), "", 5120
        for i in range(0, len(audio), step):
            text = local.stream_step(state, audio[i : i + step], last=i + step >= len(audio))
        want_str.append(text)
    sampler.phase = ""
    s = rep.step("serve: tritonserver + in-process reference")
    s.seconds, s.peak_rss_gb = time.monotonic() - t0, sampler.peak.get(s.name, 0.0) / 1e9
    s.artifact_mb = _du_mb(repo)
    s.note = f"load {load_s:.0f} s, {len(rows)} clips x 2 modes {serve_s:.0f} s"
    rep.checks["served text is not empty"] = any(got_off) and any(got_str)
    rep.checks["served offline text == in-process"] = got_off == want_off
    rep.checks["served streaming text == in-process"] = got_str == want_str
    rep.facts["serving"] = {
        "att_context_size": att,
        "offline_att_context_size": offline_att,
        "clips": len(rows),
        "examples": [
            {"lang": lang, "offline": o, "streaming": st}
            for lang, o, st in zip(langs, got_off, got_str, strict=True)
        ][:3],
    }
    if got_off != want_off or got_str != want_str:
        print(
            json.dumps(
                {
                    "served_offline": got_off,
                    "in_process_offline": want_off,
                    "served_streaming": got_str,
                    "in_process_streaming": want_str,
                },
                ensure_ascii=False,
                indent=1,
            ),
            flush=True,
        )


def table(rep: Rehearsal) -> str:
    lines = ["| step | wall time | peak RSS | artifacts | note |", "|---|---:|---:|---:|---|"]
    for s in rep.steps:
        lines.append(
            f"| {s.name} | {s.seconds:.0f} s | {s.peak_rss_gb:.1f} GB | {s.artifact_mb:,.0f} MB | {s.note} |"
        )
    return "\n".join(lines)


# Disk a rehearsal writes at its peak: the base .nemo, the fine-tuned .nemo, MLflow's copy of it and the Triton
# repository (2.55 GB each), plus NeMo's extraction of a checkpoint into the temp folder on every restore (the
# two Triton stubs and the in-process reference at once). CI once ran the disk full here: tritonserver's stub
# died in NeMo's extraction ("[Errno 28] No space left on device") after 10 minutes of work.
NEED_DISK_GB = 20.0


class DiskError(RuntimeError):
    pass


def check_disk(out: Path, tmp: Path, need_gb: float = NEED_DISK_GB) -> None:
    """Refuse to start, naming the folder, when its filesystem has less than `need_gb` free."""
    for path in dict.fromkeys((out, tmp)):
        probe = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        free_gb = shutil.disk_usage(probe).free / 1e9
        if free_gb < need_gb:
            raise DiskError(
                f"{path}: {free_gb:.1f} GB free, the rehearsal needs about {need_gb:.0f} GB "
                "(four 2.55 GB checkpoints plus NeMo's extraction of one per restore); free some space first"
            )


def main(argv: list[str] | None = None) -> int:
    t_start = time.monotonic()
    os.environ.setdefault("ASR_THREADS", str(os.cpu_count() or 2))
    if OUT.exists():
        shutil.rmtree(OUT)  # every rehearsal starts from an empty registry and repository
    try:
        check_disk(OUT, Path(tempfile.gettempdir()))
    except DiskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{OUT / 'mlflow.db'}"
    rep = Rehearsal()
    with RssSampler() as sampler:
        _say("1/4 corpus slice (demo synthesizer) + DVC")
        data, md5 = corpus_slice(rep)
        _say("2/4 Nemotron-shaped base model (600 M architecture, random weights)")
        sampler.phase = "Nemotron-shaped base (build or cache)"
        base = nemotron_base(rep, data)
        rep.step(sampler.phase).peak_rss_gb = sampler.peak.get(sampler.phase, 0.0) / 1e9
        sampler.phase = ""
        _say("3/4 the pipeline through kfp.local, recipe nemotron35")
        run_dir = pipeline(rep, data, md5, base, sampler)
        check_lineage(rep, run_dir)
        rep.checks["lineage data_md5 is data.dvc's md5"] = rep.facts["lineage"].get("data_md5") == md5
        _say("4/4 the real tritonserver serves both models")
        serve(rep, run_dir, sampler)
    rep.seconds = time.monotonic() - t_start
    peak = max([s.peak_rss_gb for s in rep.steps] + [0.0])
    rep.checks[f"wall time <= {BUDGET_S // 60} min"] = rep.seconds <= BUDGET_S
    rep.checks[f"peak RSS <= {BUDGET_RSS_GB:.0f} GB (the whole process tree)"] = (
        sampler.total_peak / 1e9 <= BUDGET_RSS_GB
    )
    rep.facts["peak_rss_gb_whole_tree"] = round(sampler.total_peak / 1e9, 2)
    md = table(rep)
    print("\n" + md)
    print(
        f"\ntotal {rep.seconds / 60:.1f} min; peak RSS of one step {peak:.1f} GB "
        f"(whole process tree {sampler.total_peak / 1e9:.1f} GB)"
    )
    for name, ok in rep.checks.items():
        print(f"  [{'pass' if ok else 'FAIL'}] {name}")
    (OUT / "rehearsal.json").write_text(json.dumps(asdict(rep), indent=2, ensure_ascii=False, default=str))
    (OUT / "rehearsal.md").write_text(md + "\n")
    print(f"\nreport: {OUT / 'rehearsal.json'} and rehearsal.md; MLflow: {os.environ['MLFLOW_TRACKING_URI']}")
    return 0 if all(rep.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
