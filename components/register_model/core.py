"""register_model: every evaluated candidate becomes a model version with its lineage; `challenger` moves to it.

`champion` is not touched here: it moves in promote_model, which the pipeline only reaches through the gate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from components.common.evaluation import EvaluationSummary
from components.common.io import sha256_file
from components.common.version import GIT_COMMIT_FILE, CodeVersionError, code_version
from registry import gate_record as gr
from registry.mlflow_adapter import Registry, get_client, utc_now
from registry.policy import CHALLENGER, CHAMPION


@dataclass
class RegisterResult:
    model_name: str
    version: str
    aliases: list[str]
    gate_passed: bool
    model_card: str = ""  # the card as registered (Markdown), titled with the version
    sha256: str = ""  # the registered checkpoint's

    @property
    def champion(self) -> bool:
        """The version was already `champion` when registered: an unchanged re-run (promote then moves nothing)."""
        return CHAMPION in self.aliases


def read_data_md5(dvc_file: str | Path) -> str:
    """The dataset version recorded by DVC (`outs[0].md5` of data.dvc)."""
    import yaml

    doc = yaml.safe_load(Path(dvc_file).read_text())
    try:
        return str(doc["outs"][0]["md5"])
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"{dvc_file}: no outs[0].md5 (is it a `dvc add` file?)") from None


def git_commit(repo: str | Path = ".", commit_file: str | Path = GIT_COMMIT_FILE) -> str:
    """The code's commit: git in a checkout, the image's baked-in file on the cluster (components.common.version);
    "unknown" only for a manual registration outside both (the pipeline passes resolve_base's, never unknown)."""
    try:
        return code_version(repo, commit_file)
    except CodeVersionError:
        return "unknown"


def _summary(evaluation: EvaluationSummary | dict) -> EvaluationSummary:
    """The typed evaluation summary (its dict form, e.g. a parsed evaluation.json, is read into the record)."""
    return (
        evaluation if isinstance(evaluation, EvaluationSummary) else EvaluationSummary.from_dict(evaluation)
    )


def headline_metrics(evaluation: EvaluationSummary | dict) -> dict[str, float]:
    """Flatten evaluation.json's per-language metrics into `<model>.<mode>.<lang>.<metric>` numbers."""
    flat: dict[str, float] = {}
    for model, modes in _summary(evaluation).metrics.items():
        for mode, langs in (modes or {}).items():
            for lang, m in (langs or {}).items():
                for k in ("wer_raw", "wer_norm", "cer"):
                    if isinstance(m, dict) and isinstance(m.get(k), (int, float)):
                        flat[f"{model}.{mode}.{lang}.{k}"] = float(m[k])
    return flat


def _fmt(x, spec: str = ".3f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "–"


def data_statistics(
    evaluation: EvaluationSummary | dict, sidecar: dict, manifest_summary: dict | None = None
) -> list[str]:
    """Markdown lines on the data: the manifests' clips/hours per split x language when the summary is at hand,
    the fine-tune's rows per language (sidecar), and the held-out utterances/words the WER rests on."""
    lines: list[str] = []
    if manifest_summary and manifest_summary.get("counts"):
        counts, hours = manifest_summary["counts"], manifest_summary.get("hours") or {}
        langs = sorted({lg for split in counts.values() for lg in split})
        lines += ["| split | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
        for split in ("train", "val", "test"):
            if split in counts:
                cells = [
                    f"{counts[split].get(lg, 0)} clips / {hours.get(split, {}).get(lg, 0):.2f} h"
                    for lg in langs
                ]
                lines.append(f"| {split} | " + " | ".join(cells) + " |")
        lines.append("")
    if sidecar.get("rows_per_lang"):
        rows = ", ".join(f"{lg} {n}" for lg, n in sorted(sidecar["rows_per_lang"].items()))
        lines.append(f"- Fine-tune rows per language: {rows} ({sidecar.get('train_steps', '?')} steps)")
    cand = (_summary(evaluation).metrics.get("candidate") or {}).get("streaming") or {}
    held = [
        f"{lg} {m.get('n_utts', '?')} utts / {m.get('n_ref_words', '?')} words"
        for lg, m in sorted(cand.items())
        if lg != "overall" and isinstance(m, dict)
    ]
    if held:
        lines.append(f"- Held-out test set (speakers unseen in training): {', '.join(held)}")
    return lines


def model_card(
    name: str,
    sidecar: dict,
    evaluation: EvaluationSummary | dict,
    lineage: dict[str, str],
    manifest_summary: dict | None = None,
    version: str = "",
) -> str:
    """The model card (Markdown): what it is, from what data, how good (with CIs), at what latency, what the gate
    said, and what it is (not) for. Stored as the version's description and as `model_card.md` beside it."""
    evaluation = _summary(evaluation)
    decision = evaluation.decision
    att = evaluation.att_context_size
    piece = evaluation.stream_piece_s
    gate = "no decision recorded" if not decision else ("PASSED" if decision.passed is True else "FAILED")
    target = evaluation.target_langs or sidecar.get("target_languages") or sidecar.get("languages") or []
    replay = evaluation.replay_langs or sidecar.get("replay_languages") or []
    title = f"# {name}" + (f" v{version}" if version else "")
    lines = [
        title,
        "",
        f"- Model class: `{sidecar.get('model_class', '?')}`",
        f"- Base model: `{lineage.get('base_model_uri') or '?'}` "
        f"(sha256 `{lineage.get('base_model_sha256') or sidecar.get('base_model_sha256') or '?'}`)",
        f"- Checkpoint sha256: `{sidecar.get('sha256', '?')}`",
        f"- Data version (DVC md5 of data.dvc): `{lineage.get('data_md5', '?')}`",
        f"- Code: git `{lineage.get('git_commit', '?')}`, pipeline run `{lineage.get('pipeline_run_id', '?')}`",
        f"- Languages: target {', '.join(target) or '?'}; kept (replay) {', '.join(replay) or 'none'}; "
        f"all: {', '.join(sidecar.get('languages', [])) or '?'}",
        f"- Latency operating point: streaming with att_context_size `{att if att is not None else '?'}`"
        + (f", fed in {piece * 1000:.0f} ms pieces" if isinstance(piece, (int, float)) else ""),
        f"- Gate: **{gate}**",
        "",
        "## Data",
        "",
        *data_statistics(evaluation, sidecar, manifest_summary),
        "",
        "## Word error rate",
        "",
        "Held-out test split; `norm` = lower-cased, punctuation removed. Δ = candidate − base streaming WER "
        "(norm) with its paired-bootstrap confidence interval (negative = better).",
        "",
        "| language | mode | base WER norm | candidate WER raw | candidate WER norm | candidate CER | utts |"
        " Δ WER [CI] |",
        "|---|---|---|---|---|---|---|---|",
        *_wer_rows(evaluation),
    ]
    lines += ["", "## Gate rules", ""]
    rules = decision.rules if decision else []
    for r in rules:
        lines.append(f"- {'PASS' if r.passed else 'FAIL'} `{r.rule}`: {r.reason}")
    if not rules:
        lines.append("- (none recorded)")
    lines += _intended_use(target, replay)
    return "\n".join(lines) + "\n"


def _wer_rows(evaluation: EvaluationSummary) -> list[str]:
    """The WER table's rows: streaming first, then per language with "overall" last; Δ on streaming rows."""
    rows = []
    metrics = evaluation.metrics
    base, cand = metrics.get("base") or {}, metrics.get("candidate") or {}
    cis = evaluation.delta_ci
    for mode in sorted(set(base) | set(cand), key=lambda m: (m != "streaming", m)):
        langs = sorted(
            set(base.get(mode) or {}) | set(cand.get(mode) or {}), key=lambda lg: (lg == "overall", lg)
        )
        for lg in langs:
            b, c = (base.get(mode) or {}).get(lg) or {}, (cand.get(mode) or {}).get(lg) or {}
            ci = cis.get(lg) if mode == "streaming" else None
            delta = f"{ci.delta:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] ({ci.confidence:.0%})" if ci else ""
            rows.append(
                f"| {lg} | {mode} | {_fmt(b.get('wer_norm'))} | {_fmt(c.get('wer_raw'))} | "
                f"{_fmt(c.get('wer_norm'))} | {_fmt(c.get('cer'))} | {c.get('n_utts', b.get('n_utts', ''))} |"
                f" {delta} |"
            )
    return rows


def _intended_use(target: list[str], replay: list[str]) -> list[str]:
    """The card's last section: what the model is for, and what was not measured."""
    return [
        "",
        "## Intended use and limitations",
        "",
        f"- Intended use: speech recognition with punctuation and capitalization for {', '.join(target) or 'the target languages'}"
        + (f" (and {', '.join(replay)}, checked for regressions)" if replay else "")
        + ", streaming at the operating point above or offline. Pass the language prompt (`target_lang`).",
        "- WER was measured only on the held-out speakers of this dataset version; other domains, accents, "
        "microphones, noise and speaking styles were not measured, and short test sets give wide intervals "
        "(see the CI column).",
        "- Languages not listed above were neither trained nor evaluated here: expect them to be worse than "
        "the base model (forgetting).",
        "- Streaming at a smaller right context than the operating point above (lower latency) was not gated "
        "and is usually less accurate.",
        "- Not for decisions about people without human review of the transcript.",
    ]


MAX_DESCRIPTION = 5000  # MLflow's model-version description column (VARCHAR(5000) on Postgres)


def card_description(card: str, artifact: str = "model_card.md") -> str:
    """The card as a version description, cut to fit the column; the full card is always the artifact."""
    if len(card) <= MAX_DESCRIPTION:
        return card
    note = f"\n\n… (cut to fit; the full card is the run artifact `{artifact}`)\n"
    return card[: MAX_DESCRIPTION - len(note)].rsplit("\n", 1)[0] + note


def _manifest_summary(evaluation: EvaluationSummary) -> dict | None:
    """build_manifest's summary.json sits beside the test manifest the evaluation read, when still reachable."""
    manifest = evaluation.manifest
    if not manifest:
        return None
    p = Path(manifest).parent / "summary.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (OSError, ValueError):
        return None


LINEAGE_ARTIFACT = "lineage.json"


def parse_parameters(text: str) -> dict[str, str]:
    """The pipeline's `name=value` lines -> {name: value}. A line that does not start with a lower-case
    identifier and `=` continues the previous value (a gate policy's YAML text spans lines)."""
    params: dict[str, str] = {}
    name = ""
    for line in text.split("\n"):
        head, sep, value = line.partition("=")
        if sep and head.isidentifier() and head == head.lower():
            name, params[head] = head, value
        elif name:
            params[name] += "\n" + line
    return params


def _lineage(
    model_dir: Path,
    sidecar: dict,
    run: dict,
    data_md5: str,
    commit: str,
    base_model_uri: str,
    pipeline_run_id: str,
) -> dict:
    """The version's lineage tags: data, code, base model (the run's resolved base must be the one the
    sidecar says it trained from) and pipeline run."""
    lineage = {
        "data_md5": data_md5 or "unknown",
        "git_commit": commit,
        "base_model_uri": base_model_uri or sidecar.get("base_model_uri", ""),
        "base_model_sha256": sidecar.get("base_model_sha256", ""),
        "pipeline_run_id": pipeline_run_id or "local",
    }
    for key in ("data_rev", "data_commit", "base_model_resolved"):
        if run.get(key):
            lineage[key] = str(run[key])
    if run.get("base_model_sha256"):
        sidecar_base = sidecar.get("base_model_sha256", "")
        if sidecar_base and sidecar_base != run["base_model_sha256"]:
            raise ValueError(
                f"{model_dir}: trained from base sha256 {sidecar_base}, but the run resolved the base "
                f"to {run['base_model_sha256']}; refusing to register a wrong lineage"
            )
        lineage["base_model_sha256"] = run["base_model_sha256"]
    return lineage


def _version_tags(
    lineage: dict,
    record,
    record_text: str,
    evaluation: EvaluationSummary,
    params: dict | None,
    evaluation_run_id: str,
) -> dict[str, str]:
    """The version's tags: lineage, the gate's outcome and record hash, parameters, headline metrics, the
    judged operating point and the model card's artifact name."""
    reasons = "; ".join(f"{r['rule']}: {'pass' if r['passed'] else 'FAIL'}" for r in record.rules)
    tags = {
        **lineage,
        "gate.passed": str(record.passed).lower(),
        "gate.reasons": reasons[:5000],
        gr.RECORD_TAG: gr.sha256_bytes(record_text.encode("utf-8")),
        gr.POLICY_TAG: record.policy_sha256,
        **{f"params.{k}": str(v) for k, v in (params or {}).items()},
        **{f"metrics.{k}": f"{v:.4f}" for k, v in headline_metrics(evaluation).items()},
    }
    if evaluation_run_id:
        tags["evaluation_run_id"] = evaluation_run_id
    if record.floor_override_reason:  # a policy below the floor was let through by an audited override
        tags["gate.floor_override_reason"] = record.floor_override_reason[:5000]
    if (
        evaluation.att_context_size is not None
    ):  # the operating point the gate judged (rollback re-exports at it)
        tags["att_context_size"] = json.dumps(evaluation.att_context_size)
        tags.setdefault(
            "params.att_context_size", tags["att_context_size"]
        )  # what the Triton sync sidecar reads
    for lg, ci in evaluation.delta_ci.items():
        tags[f"metrics.delta_ci.{lg}"] = f"{ci.delta:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}]"
    tags["model_card"] = "model_card.md"
    return tags


def register_candidate(
    model_dir: str | Path,
    evaluation_path: str | Path,
    model_name: str,
    data_md5: str = "",
    base_model_uri: str = "",
    pipeline_run_id: str = "",
    params: dict | None = None,
    commit: str = "",
    tracking_uri: str | None = None,
    manifest_summary: dict | None = None,
    run: dict | None = None,
    evaluation_run_id: str = "",
) -> RegisterResult:
    """Register a candidate with its lineage, gate record and model card; move `challenger` to it.

    The gate record (registry/gate_record.py) binds the decision to this checkpoint's sha256, the exact
    evaluation.json logged beside it and the policy; its sha256 becomes the `gate.record_sha256` tag. An
    evaluation for another checkpoint, or whose `decision.passed` is not a JSON boolean, is refused by name.

    Idempotent in a pipeline: the checkpoint's sha256 + the evaluation's sha256 form a registration key, so a
    retry after a failure (e.g. between creating the version and setting `challenger`) completes the first
    attempt, and a re-run of an unchanged pipeline (cached fine-tune and evaluation) creates no second version.

    `run` (the pipeline's lineage: data_rev, data_commit, base_model_resolved, every parameter) is stored with the
    version as `lineage.json`; `python -m pipelines reproduce` re-runs the pipeline from it.

    `evaluation_run_id`: the MLflow run evaluate_wer logged (its artifacts hold the golden set the serving
    sidecar replays after a deploy), tagged `evaluation_run_id` when given."""
    model_dir = Path(model_dir)
    evaluation_text = Path(evaluation_path).read_text(encoding="utf-8")
    evaluation = EvaluationSummary.from_json(evaluation_text)
    sidecar_path = model_dir / "model.json"
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
    # register() checks the file against the sidecar before uploading it
    sha = sidecar.get("sha256") or sha256_file(model_dir / "model.nemo")
    record = gr.build_record(evaluation_text, sha, pipeline_run_id or "local", utc_now())
    passed = record.passed
    run = dict(run or {})
    lineage = _lineage(
        model_dir, sidecar, run, data_md5, commit or git_commit(), base_model_uri, pipeline_run_id
    )
    lineage_doc = {
        **lineage,
        "checkpoint_sha256": sha,
        "parameters": dict(run.get("parameters") or {}),
        "environment": dict(run.get("environment") or {}),
    }
    record_text = record.to_json()
    tags = _version_tags(lineage, record, record_text, evaluation, params, evaluation_run_id)
    card = model_card(
        model_name,
        {**sidecar, "sha256": sha},
        evaluation,
        lineage,
        manifest_summary or _manifest_summary(evaluation),
    )
    key = ""
    if lineage["pipeline_run_id"] not in ("", "local"):
        key = f"{sha}/{gr.sha256_bytes(evaluation_text.encode('utf-8'))[:16]}"
    reg = Registry(get_client(tracking_uri))
    info = reg.register(
        model_name,
        model_dir,
        tags=tags,
        description=card_description(card),
        aliases=(CHALLENGER,),
        extra_files={
            "model_card.md": card,
            gr.EVALUATION_ARTIFACT: evaluation_text,
            gr.RECORD_ARTIFACT: record_text,
            LINEAGE_ARTIFACT: json.dumps(lineage_doc, indent=2, sort_keys=True) + "\n",
        },
        registration_key=key,
    )
    titled = card.replace(f"# {model_name}\n", f"# {model_name} v{info.version}\n", 1)
    return RegisterResult(model_name, info.version, info.aliases, passed, titled, sha)


def promote(
    model_name: str,
    version: str,
    tracking_uri: str | None = None,
    actor: str = "pipeline",
    run_id: str = "",
    already_champion: bool = False,
) -> str:
    """Move `champion` to a version that passed its gate, after verifying its checkpoint; returns the version.

    Safe to retry (promoting the current champion again is a no-op) and safe to run concurrently with other
    pipelines (the registry's lock serialises champion moves).

    `already_champion` (register_model saw the version as champion moments ago: an unchanged re-run): nothing
    to move, and the registry is not opened (a process's MLflow start-up, ~3.5 s). Should another pipeline have
    moved champion in between, that is the same outcome as its promotion landing just after this one."""
    if already_champion:
        return str(version)
    info = Registry(get_client(tracking_uri)).promote(model_name, version, actor=actor, run_id=run_id)
    assert CHAMPION in info.aliases
    return info.version
