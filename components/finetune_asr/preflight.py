"""Preflight: check a run's settings and data against the base checkpoint in seconds, before any training.

It opens the base `.nemo` as an archive and reads only its `model_config.yaml` and tokenizer, never the
weights, so a wrong lookahead, an unknown language, an unusable tokenizer or a test set that cannot exist
fails here, named, instead of after hours of GPU time. Every failing check is reported at once.
The step has no retry: its failures are deterministic (components.common.errors).
"""

from __future__ import annotations

import json
import logging
import tarfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.common.errors import DeterministicError
from components.common.manifest import read_manifest
from components.common.settings import parse_att_context_size
from components.finetune_asr.settings import FinetuneSettings, apply

log = logging.getLogger(__name__)
SUPPORTED_TOKENIZERS = ("bpe",)  # SentencePiece (NeMo `type: bpe`); `agg` (per-language) is refused by name


class PreflightError(DeterministicError):
    """One or more checks failed; the message lists each with its reason."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)
    att_context_size: list[int] | None = None  # the lookahead the run evaluates and serves at (resolved)
    offline_att_context_size: list[int] | None = None  # the checkpoint's most accurate (largest lookahead)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def lines(self) -> list[str]:
        return [f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]


def read_nemo_config(nemo_path: str | Path) -> dict:
    """The `model_config.yaml` inside a `.nemo` (a tar): seeks past the weights, does not read them."""
    import yaml

    path = Path(nemo_path)
    if not path.is_file():
        raise PreflightError(f"base model: {path} does not exist")
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and member.name.removeprefix("./") == "model_config.yaml":
                    return yaml.safe_load(tar.extractfile(member).read()) or {}
    except (tarfile.TarError, OSError) as e:
        raise PreflightError(f"base model: {path} is not a readable .nemo archive ({e})") from None
    raise PreflightError(f"base model: {path} has no model_config.yaml (not a NeMo checkpoint)")


def _lookaheads(cfg: dict) -> list[list[int]]:
    att = (cfg.get("encoder") or {}).get("att_context_size")
    if not att:
        return []
    return [list(map(int, a)) for a in att] if isinstance(att[0], (list, tuple)) else [list(map(int, att))]


def check_run(
    base_nemo: str | Path,
    manifest_dir: str | Path,
    settings: FinetuneSettings,
    att_context_size: str | None = None,
) -> PreflightReport:
    """Every check, collected (not stopped at the first failure). Raises nothing; see `run_preflight`."""
    t0 = time.monotonic()
    rep = PreflightReport()
    cfg = read_nemo_config(base_nemo)
    prompts: dict[str, int] = dict((cfg.get("model_defaults") or {}).get("prompt_dictionary") or {})
    recipe = _check_recipe(rep, cfg, settings)  # 1.
    _check_lookaheads(rep, cfg, settings, att_context_size, recipe)  # 2.
    _check_languages(rep, prompts, settings)  # 3.
    tok_ok = _check_tokenizer(rep, cfg)  # 4. (5. coverage below)
    # 6. the data can be trained on and evaluated
    rows = _rows_by_split(Path(manifest_dir))
    _check_data(rep, rows, settings, prompts)
    if tok_ok and rows.get("train"):
        _check_coverage(rep, base_nemo, rows, settings)
    rep.seconds = round(time.monotonic() - t0, 2)
    return rep


def _check_recipe(rep: PreflightReport, cfg: dict, settings: FinetuneSettings):
    """1. The recipe applies to this model -> the recipe (None when it does not resolve)."""
    try:
        recipe = apply(settings)
        d_model = int((cfg.get("encoder") or {}).get("d_model") or 0)
        sched = recipe.optim.get("sched") or {}
        if sched.get("name") == "NoamAnnealing" and d_model and int(sched.get("d_model", 0)) != d_model:
            rep.add(
                "recipe",
                False,
                f"{recipe.path.name}: Noam d_model {sched.get('d_model')} but the model's "
                f"encoder d_model is {d_model} (the peak lr would be off by sqrt of their ratio)",
            )
        else:
            missing = [k for k in ("encoder", "decoder", "joint", "tokenizer") if k not in cfg]
            rep.add(
                "recipe",
                not missing,
                f"{settings.recipe} ({recipe.path.name}) applies"
                if not missing
                else f"the model config lacks {missing}",
            )
    except ValueError as e:
        recipe = None
        rep.add("recipe", False, str(e))
    return recipe


def _check_lookaheads(
    rep: PreflightReport, cfg: dict, settings: FinetuneSettings, att_context_size: str | None, recipe
) -> None:
    """2. The deployed and the training lookaheads are ones the checkpoint supports."""
    supported = _lookaheads(cfg)
    rep.offline_att_context_size = max(supported, key=lambda a: (a[1], a[0])) if supported else None
    wanted = (
        parse_att_context_size(att_context_size)
        if att_context_size
        else (recipe.deploy_att_context_size if recipe else None)
    )
    rep.att_context_size = wanted
    for label, att in (
        ("att_context_size", wanted),
        ("train_att_context_size", parse_att_context_size(settings.train_att_context_size)),
    ):
        if att is None:
            continue
        ok = not supported or att in supported
        rep.add(
            label, ok, f"{att} is supported" if ok else f"{att} is not one of the checkpoint's {supported}"
        )


def _check_languages(rep: PreflightReport, prompts: dict[str, int], settings: FinetuneSettings) -> None:
    """3. Every target and replay language is a key of the prompt dictionary."""
    langs = {"target": settings.targets, "replay": settings.replays}
    unknown = [lang for group in langs.values() for lang in group if prompts and lang not in prompts]
    rep.add(
        "languages",
        not unknown,
        f"{sorted(set(settings.targets + settings.replays))} are prompt keys"
        if not unknown
        else f"{unknown} are not in the checkpoint's prompt dictionary ({len(prompts)} keys, e.g. "
        f"{sorted(prompts)[:8]})",
    )


def _check_tokenizer(rep: PreflightReport, cfg: dict) -> bool:
    """4. The tokenizer is one SentencePiece model (what coverage and text maps handle) -> whether it is."""
    tok_cfg = cfg.get("tokenizer") or {}
    tok_type = str(tok_cfg.get("type") or ("agg" if "langs" in tok_cfg else "?"))
    tok_ok = tok_type in SUPPORTED_TOKENIZERS
    rep.add(
        "tokenizer",
        tok_ok,
        f"SentencePiece ({tok_type})"
        if tok_ok
        else (
            "aggregate tokenizer (type 'agg', one SentencePiece model per language): not supported by this "
            "pipeline's coverage check and text maps; fine-tune a checkpoint with one multilingual tokenizer"
            if tok_type == "agg"
            else f"tokenizer type {tok_type!r} is not supported (SentencePiece `bpe` is)"
        ),
    )
    return tok_ok


def _rows_by_split(manifest_dir: Path) -> dict[str, list[dict]]:
    out = {}
    for split in ("train", "val", "test"):
        f = manifest_dir / f"{split}.jsonl"
        out[split] = read_manifest(f, absolute=False) if f.is_file() else []
    return out


def _same_lang(prompts: dict[str, int]):
    def key(lang: str):
        return prompts.get(lang, lang)  # en and en-US share a prompt index: the same language

    return key


def _check_data(
    rep: PreflightReport, rows: dict[str, list[dict]], s: FinetuneSettings, prompts: dict
) -> None:
    key = _same_lang(prompts)
    speakers: dict[object, set] = defaultdict(set)
    counts: dict[str, dict[object, int]] = {split: defaultdict(int) for split in rows}
    for split, part in rows.items():
        for r in part:
            lang = key(r.get("target_lang") or r["lang"])
            counts[split][lang] += 1
            speakers[lang].add(r.get("speaker", ""))
    problems = []
    for lang in s.targets:
        if not counts["train"].get(key(lang)):
            problems.append(f"{lang}: no train rows")
        if counts["train"].get(key(lang)) and not counts["test"].get(key(lang)):
            spk = sorted(speakers.get(key(lang), set()))
            why = (
                f"one speaker ({spk[0]!r}): speaker-disjoint splits cannot hold out a test set; add a "
                "`split` column to the metadata or more speakers"
                if len(spk) <= 1
                else "raise test_ratio or add a `split` column to the metadata"
            )
            problems.append(f"{lang}: no test rows, so the candidate could never be evaluated ({why})")
    for lang in s.replays:
        if not counts["train"].get(key(lang)):
            problems.append(f"{lang}: replay language without train rows to replay")
        elif not counts["test"].get(key(lang)):
            problems.append(f"{lang}: replay language without test rows (its regression cannot be gated)")
    summary = ", ".join(
        f"{lang} train {counts['train'].get(key(lang), 0)} / test {counts['test'].get(key(lang), 0)}"
        for lang in s.targets + s.replays
    )
    rep.add("data", not problems, summary if not problems else "; ".join(problems))


def _check_coverage(
    rep: PreflightReport, base_nemo, rows: dict[str, list[dict]], s: FinetuneSettings
) -> None:
    from components.common.coverage import CoverageError, check_coverage

    langs = set(s.targets + s.replays)
    # the rows the fine-tune trains on (train split, target + replay languages): the fine-tune's own check
    pairs = [
        (r["text"], r.get("target_lang") or r["lang"])
        for r in rows["train"]
        if (r.get("target_lang") or r["lang"]) in langs
    ]
    try:
        cov = check_coverage(pairs, str(base_nemo), s.max_unk_rate, s.text_maps or None)
    except (CoverageError, ValueError) as e:
        rep.add("tokenizer coverage", False, str(e))
        return
    hint = (
        "" if cov.passed else " (fix the text, pass a text map such as el_final_sigma, or raise max_unk_rate)"
    )
    rep.add("tokenizer coverage", cov.passed, cov.summary.replace("\n", " ") + hint)


def run_preflight(
    base_nemo: str | Path,
    manifest_dir: str | Path,
    settings: FinetuneSettings,
    att_context_size: str | None = None,
    report_path: str | Path | None = None,
) -> PreflightReport:
    """check_run, printed, written to `report_path` (JSON), and raised as PreflightError when a check fails."""
    rep = check_run(base_nemo, manifest_dir, settings, att_context_size)
    if report_path:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(rep.to_dict(), indent=2, ensure_ascii=False) + "\n")
    text = "\n".join(rep.lines())
    log.debug("preflight (%.1f s):\n%s", rep.seconds, text)
    if not rep.passed:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in rep.checks if not c.ok)
        raise PreflightError(failed)
    return rep
