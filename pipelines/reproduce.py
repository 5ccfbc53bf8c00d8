"""`python -m pipelines reproduce <model> <version>`: re-run a registered version from its lineage and compare.

1. Read the version's lineage: its tags and `lineage.json` (data rev/commit/md5, code version, base URI pinned to a
   registry version + sha256, every pipeline parameter, the environment it ran in) and its `evaluation.json`.
2. Refuse, by name, a checkout that is dirty or at another commit than the one recorded.
3. Re-run the pipeline with kfp.local, cache off, with exactly those parameters: the dataset at the recorded
   data.dvc commit (its md5 is verified), the base at the recorded registry version and sha256. Only where the
   run writes changes: the candidate registers as `<model>-reproduce` and exports to a scratch Triton
   repository (the production aliases and serving are untouched), and this machine's paths for the version
   cache, work dir and MLflow store. None of them is an input of training or evaluation.
4. Compare: candidate WER per language and mode within `wer_tolerance` (0 on CPU: the numbers are identical),
   the weights' sha256 (tensors in name order; identical on CPU) and the .nemo file's sha256 (differs even when
   the weights are identical: the archive holds file times and the run's own manifest paths; docs/REPRODUCE.md).
   When they disagree, name the first input that differs (code, data, base, a parameter, the environment).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

WER_TOLERANCE_CPU = 0.0  # CPU, deterministic settings: identical weights give identical transcripts
PATH_KNOBS = ("data_cache", "work_root", "triton_repo", "mlflow_tracking_uri")  # this machine's, not inputs


class ReproduceRefused(RuntimeError):
    """The checkout or the lineage does not allow a faithful re-run (named)."""


@dataclass
class Comparison:
    reproduced: bool
    wer: dict[str, tuple[float, float]] = field(default_factory=dict)  # "<mode>/<lang>" -> (recorded, new)
    weights_equal: bool = False
    checkpoint_equal: bool = False
    differences: list[str] = field(default_factory=list)  # inputs that differ, in order (first = the cause)
    run_dir: str = ""
    new_version: str = ""

    def lines(self, tolerance: float) -> list[str]:
        out = [f"{'language/mode':24s} {'recorded':>9s} {'re-run':>9s}"]
        out += [
            f"{k:24s} {a:9.4f} {b:9.4f}" + ("" if abs(a - b) <= tolerance else "  DIFFERS")
            for k, (a, b) in sorted(self.wer.items())
        ]
        out.append(
            f"weights sha256 {'identical' if self.weights_equal else 'DIFFER'}; .nemo file sha256 "
            f"{'identical' if self.checkpoint_equal else 'differs (archive file times, run paths)'}"
        )
        if self.differences:
            out.append(f"first input that differs: {self.differences[0]}")
            out += [f"  also: {d}" for d in self.differences[1:]]
        elif not self.reproduced:
            out.append(
                "no recorded input differs: the difference comes from nondeterministic kernels "
                "(docs/REPRODUCE.md)"
            )
        out.append("REPRODUCED" if self.reproduced else "NOT REPRODUCED")
        return out


def weights_sha256(nemo: str | Path) -> str:
    """sha256 over the checkpoint's tensors (name, dtype, shape, bytes) in name order: what training computed,
    without the archive's metadata."""
    import torch

    with tarfile.open(nemo) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt")), None)
        if member is None:
            raise ValueError(f"{nemo}: no model_weights.ckpt inside")
        state = torch.load(io.BytesIO(tar.extractfile(member).read()), map_location="cpu", weights_only=True)
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}\0{t!r}\n".encode())
            continue
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}\0{t.dtype}\0{tuple(state[name].shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_lineage(reg, model: str, version: str) -> tuple:
    """(version info, lineage.json, evaluation.json) of a registered version; refused by name when absent."""
    from registry import gate_record as gr

    info = reg.get(model, version)
    raw = reg._artifact_bytes(info, "lineage.json")
    if raw is None:
        raise ReproduceRefused(
            f"{model} v{version}: no lineage.json (registered before lineage was recorded); "
            "cannot re-run it faithfully"
        )
    ev = reg._artifact_bytes(info, gr.EVALUATION_ARTIFACT)
    return info, json.loads(raw), json.loads(ev) if ev else {}


def check_checkout(recorded: str, current: str) -> None:
    """A dirty checkout, or one at another commit, cannot re-run the recorded code: refuse, naming both."""
    from components.common.version import is_dirty

    if is_dirty(recorded):
        raise ReproduceRefused(
            f"the version was trained from an uncommitted checkout ({recorded}): its code "
            "cannot be checked out again"
        )
    if is_dirty(current):
        raise ReproduceRefused(
            f"this checkout is dirty ({current}): commit or stash first, then `git checkout {recorded}`"
        )
    if current != recorded:
        raise ReproduceRefused(
            f"this checkout is at {current}, the version was trained at {recorded}: "
            f"`git checkout {recorded}` first"
        )


def arguments_from_lineage(doc: dict, model: str, scratch: Path, base_model_uri: str | None = None) -> dict:
    """The pipeline's arguments: every recorded parameter, with the version pinned (module docstring, 3.)."""
    from components.common.settings import coerce
    from pipelines.local import REPO_ROOT
    from pipelines.settings import all_knobs, kfp_value

    recorded = doc.get("parameters") or {}
    args = {}
    for section, k in all_knobs():
        value = recorded.get(k.name, k.default)
        args[k.name] = kfp_value(k, coerce(k, value, f"lineage {section}."))
    if doc.get("data_rev"):  # a moving revision (HEAD, a branch) is pinned to the commit it resolved to
        args["data_rev"] = doc.get("data_commit") or doc.get("data_md5", "")
    args["base_model_uri"] = base_model_uri or doc.get("base_model_resolved") or doc.get("base_model_uri", "")
    args["base_model_sha256"] = doc.get("base_model_sha256", "")
    args["model_name"] = f"{model}-reproduce"
    args["triton_repo"] = str(scratch / "triton_repo")
    args["data_cache"] = str(REPO_ROOT / ".cache" / "data_versions")
    args["work_root"] = str(scratch / "work")
    import os

    args["mlflow_tracking_uri"] = os.environ.get("MLFLOW_TRACKING_URI", "")
    return args


def _wer(evaluation: dict) -> dict[str, float]:
    cand = (evaluation.get("metrics") or {}).get("candidate") or {}
    return {
        f"{mode}/{lang}": float(m["wer_norm"])
        for mode, langs in cand.items()
        for lang, m in (langs or {}).items()
        if isinstance(m, dict) and isinstance(m.get("wer_norm"), (int, float))
    }


def compare(
    doc: dict, recorded_eval: dict, recorded_nemo: Path, run_dir: Path, args: dict, tolerance: float
) -> Comparison:
    from components.common.version import environment
    from pipelines.local import task_outputs

    data, base = task_outputs(run_dir, "materialize-data"), task_outputs(run_dir, "resolve-base")
    model_dir = run_dir / "finetune-asr" / "model"
    new_eval = json.loads((run_dir / "evaluate-wer" / "evaluation" / "evaluation.json").read_text())
    new_card = json.loads((model_dir / "model.json").read_text())
    diffs = []
    for key, new in (
        ("git_commit", base.get("code_version")),
        ("data_md5", data.get("data_md5")),
        ("base_model_sha256", base.get("sha256")),
    ):
        if str(doc.get(key, "")) != str(new):
            diffs.append(f"{key}: recorded {doc.get(key)!r}, re-run {new!r}")
    from components.common.settings import SettingsError, coerce
    from pipelines.settings import all_knobs

    recorded = doc.get("parameters") or {}
    pinned = set(PATH_KNOBS) | {"data_rev", "base_model_uri", "base_model_sha256", "model_name"}
    for _, k in all_knobs():  # compared as typed values: kfp renders an int parameter 2 as "2.0" in text
        if k.name in pinned or k.name not in recorded or k.name not in args:
            continue
        try:
            same = coerce(k, recorded[k.name]) == coerce(k, args[k.name])
        except SettingsError:
            same = str(recorded[k.name]) == str(args[k.name])
        if not same:
            diffs.append(f"parameter {k.name}: recorded {recorded[k.name]!r}, re-run {args[k.name]!r}")
    env_now, env_then = environment(), doc.get("environment") or {}
    diffs += [
        f"environment {k}: recorded {env_then[k]!r}, here {env_now.get(k)!r}"
        for k in sorted(env_then)
        if str(env_then[k]) != str(env_now.get(k))
    ]
    a, b = _wer(recorded_eval), _wer(new_eval)
    wer = {k: (a[k], b.get(k, float("nan"))) for k in a}
    wer_ok = bool(a) and set(a) == set(b) and all(abs(x - y) <= tolerance for x, y in wer.values())
    weights_equal = weights_sha256(recorded_nemo) == weights_sha256(model_dir / "model.nemo")
    checkpoint_equal = doc.get("checkpoint_sha256") == new_card.get("sha256")
    on_cpu = str(env_then.get("cuda", "none")) == "none"
    return Comparison(
        wer_ok and (weights_equal or not on_cpu), wer, weights_equal, checkpoint_equal, diffs, str(run_dir)
    )


def reproduce(
    model: str,
    version: str,
    *,
    tracking_uri: str | None = None,
    wer_tolerance: float | None = None,
    base_model_uri: str | None = None,
    allow_dirty: bool = False,
    pipeline_root: str | Path | None = None,
) -> Comparison:
    from components.common.version import code_version
    from pipelines.local import REPO_ROOT, run_local
    from registry.mlflow_adapter import Registry, get_client

    reg = Registry(get_client(tracking_uri))
    info, doc, recorded_eval = read_lineage(reg, model, version)
    if not allow_dirty:
        check_checkout(str(doc.get("git_commit", "")), code_version())
    tolerance = WER_TOLERANCE_CPU if wer_tolerance is None else wer_tolerance
    root = Path(pipeline_root or REPO_ROOT / "outputs" / "reproduce")
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=f"{model}-v{version}-"))
    args = arguments_from_lineage(doc, model, scratch, base_model_uri)
    print(
        f"[reproduce] {model} v{version}: data {doc.get('data_md5')} @ {args['data_rev'] or 'in place'}, "
        f"base {args['base_model_uri']} ({doc.get('base_model_sha256', '')[:12]}), code {doc.get('git_commit')}",
        file=sys.stderr,
        flush=True,
    )
    run_dir = run_local(args, scratch / "kfp", enable_caching=False)
    nemo = reg.download(info, scratch / "recorded")
    result = compare(doc, recorded_eval, nemo, run_dir, args, tolerance)
    from pipelines.local import task_outputs

    result.new_version = str(task_outputs(run_dir, "register-model").get("version", ""))
    return result


def main(
    model: str,
    version: str,
    *,
    wer_tolerance: float | None = None,
    base_model_uri: str | None = None,
    allow_dirty: bool = False,
) -> int:
    from pipelines.local import PipelineFailed

    try:
        result = reproduce(
            model,
            version,
            wer_tolerance=wer_tolerance,
            base_model_uri=base_model_uri,
            allow_dirty=allow_dirty,
        )
    except ReproduceRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PipelineFailed as e:
        print(f"error: the re-run failed: {e}", file=sys.stderr)
        return 1
    tolerance = WER_TOLERANCE_CPU if wer_tolerance is None else wer_tolerance
    print("\n".join(result.lines(tolerance)))
    return 0 if result.reproduced else 1
