"""register_model: every evaluated candidate becomes a model version with its lineage; `challenger` moves to it.

`champion` is not touched here: it moves in promote_model, which the pipeline only reaches through the gate.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from registry.mlflow_adapter import Registry, get_client
from registry.policy import CHALLENGER, CHAMPION


@dataclass
class RegisterResult:
    model_name: str
    version: str
    aliases: list[str]
    gate_passed: bool


def read_data_md5(dvc_file: str | Path) -> str:
    """The dataset version recorded by DVC (`outs[0].md5` of data.dvc)."""
    import yaml

    doc = yaml.safe_load(Path(dvc_file).read_text())
    try:
        return str(doc["outs"][0]["md5"])
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"{dvc_file}: no outs[0].md5 (is it a `dvc add` file?)") from None


def git_commit(repo: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def headline_metrics(evaluation: dict) -> dict[str, float]:
    """Flatten evaluation.json's per-language metrics into `<model>.<mode>.<lang>.<metric>` numbers."""
    flat: dict[str, float] = {}
    for model, modes in (evaluation.get("metrics") or {}).items():
        for mode, langs in (modes or {}).items():
            for lang, m in (langs or {}).items():
                for k in ("wer_raw", "wer_norm", "cer"):
                    if isinstance(m, dict) and isinstance(m.get(k), (int, float)):
                        flat[f"{model}.{mode}.{lang}.{k}"] = float(m[k])
    return flat


def model_card(name: str, sidecar: dict, evaluation: dict, lineage: dict[str, str]) -> str:
    """A short Markdown model card: what it is, what data, how good, what the gate said."""
    decision = evaluation.get("decision") or {}
    lines = [f"# {name}", "",
             f"- Model class: `{sidecar.get('model_class', '?')}`",
             f"- Base model: `{lineage.get('base_model_uri', '?')}` (sha256 `{sidecar.get('base_model_sha256', '?')}`)",
             f"- Data version (DVC md5): `{lineage.get('data_md5', '?')}`",
             f"- Languages: {', '.join(sidecar.get('languages', [])) or '?'}",
             f"- Streaming operating point: att_context_size `{evaluation.get('att_context_size', '?')}`",
             f"- Gate: **{'PASSED' if decision.get('passed') else 'FAILED'}**", "",
             "| model | mode | language | WER raw | WER norm | CER | utts |", "|---|---|---|---|---|---|---|"]
    for model, modes in (evaluation.get("metrics") or {}).items():
        for mode, langs in (modes or {}).items():
            for lang, m in (langs or {}).items():
                if isinstance(m, dict):
                    lines.append(f"| {model} | {mode} | {lang} | {m.get('wer_raw', float('nan')):.3f} | "
                                 f"{m.get('wer_norm', float('nan')):.3f} | {m.get('cer', float('nan')):.3f} | "
                                 f"{m.get('n_utts', '')} |")
    lines += ["", "## Gate rules", ""]
    for r in decision.get("rules", []):
        lines.append(f"- {'✅' if r.get('passed') else '❌'} {r.get('rule')}: {r.get('reason', '')}")
    lines += ["", "## Intended use and limitations", "",
              "Streaming and offline speech recognition for the languages above at the recorded operating point. "
              "WER was measured on held-out speakers of the pipeline's test split only; other domains, accents and "
              "recording conditions were not measured."]
    return "\n".join(lines) + "\n"


def register_candidate(model_dir: str | Path, evaluation_path: str | Path, model_name: str,
                       data_md5: str = "", base_model_uri: str = "", pipeline_run_id: str = "",
                       params: dict | None = None, commit: str = "", tracking_uri: str | None = None
                       ) -> RegisterResult:
    model_dir = Path(model_dir)
    evaluation = json.loads(Path(evaluation_path).read_text())
    sidecar_path = model_dir / "model.json"
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
    decision = evaluation.get("decision") or {}
    passed = bool(decision.get("passed"))
    reasons = "; ".join(f"{r.get('rule')}: {'pass' if r.get('passed') else 'FAIL'}"
                        for r in decision.get("rules", []))
    lineage = {"data_md5": data_md5 or "unknown", "git_commit": commit or git_commit(),
               "base_model_uri": base_model_uri or sidecar.get("base_model_uri", ""),
               "base_model_sha256": sidecar.get("base_model_sha256", ""),
               "pipeline_run_id": pipeline_run_id or "local"}
    tags = {**lineage, "gate.passed": str(passed).lower(), "gate.reasons": reasons[:5000],
            **{f"params.{k}": str(v) for k, v in (params or {}).items()},
            **{f"metrics.{k}": f"{v:.4f}" for k, v in headline_metrics(evaluation).items()}}
    card = model_card(model_name, sidecar, evaluation, lineage)
    reg = Registry(get_client(tracking_uri))
    info = reg.register(model_name, model_dir, tags=tags, description=card, aliases=(CHALLENGER,),
                        extra_files={"model_card.md": card,
                                     "evaluation/evaluation.json": json.dumps(evaluation, indent=2)})
    return RegisterResult(model_name, info.version, info.aliases, passed)


def promote(model_name: str, version: str, tracking_uri: str | None = None, actor: str = "pipeline") -> str:
    """Move `champion` to a version that passed its gate; returns the version."""
    info = Registry(get_client(tracking_uri)).promote(model_name, version, actor=actor)
    assert CHAMPION in info.aliases
    return info.version
