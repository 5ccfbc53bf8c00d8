"""Tokenizer coverage: will the base model's tokenizer spell every training transcript, or emit <unk>?

Fine-tuning keeps the base model's tokenizer (a new one would re-initialise the decoder and joint). A character
the tokenizer lacks becomes <unk> in the training targets: the model learns to emit <unk>, and WER counts
every such word as wrong. Nemotron's real tokenizer lacks Greek final sigma "ς" (about one Greek word in
ten ends with it). This module runs before training, on the manifests build_manifest wrote:

* `check_coverage` round-trips every transcript through the tokenizer (encode, look for the <unk> id,
  decode and compare) and reports per language: the share of <unk> tokens, the rows that contain one, the
  offending characters with counts, round-trip mismatches; `passed` is False when a language's <unk> rate
  exceeds `max_unk_rate`.
* a text map (components.common.text.TEXT_MAPS, e.g. `el_final_sigma`) can be applied first: the report
  then says whether the *mapped* text is covered (and keeps the unmapped rates for comparison), and
  `apply_text_maps` rewrites the train/val manifests in that spelling. After decoding,
  `components.common.text.restore_after_decoding` puts the characters back.

The tokenizer is read straight from the `.nemo` tar (its `model_config.yaml` names the SentencePiece model)
with the `sentencepiece` library NeMo itself uses, so no model is restored. CLI:
`python -m components.common.coverage --help`.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.common.cli import run_check
from components.common.io import atomic_write_text
from components.common.manifest import read_manifest, write_manifest
from components.common.text import TextMap, get_text_maps, map_for_tokenizer

DEFAULT_MAX_UNK_RATE = 0.001  # <unk> tokens / tokens per language; a missing common letter is far above
TRAIN_SPLITS = ("train", "val")  # the splits the model learns from (val drives checkpoint choice)


class CoverageError(ValueError):
    """The tokenizer or the manifests cannot be read; the message names the file."""


class Tokenizer:
    """The two calls coverage needs, over a SentencePiece model or a NeMo TokenizerSpec."""

    def __init__(self, encode, decode, unk_id: int | None, name: str):
        self.encode, self.decode, self.unk_id, self.name = encode, decode, unk_id, name

    @classmethod
    def from_sentencepiece(cls, model_proto: bytes, name: str) -> Tokenizer:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError) as e:
            raise CoverageError(f"{name}: not a SentencePiece model ({e})") from None
        unk = sp.unk_id()
        return cls(sp.EncodeAsIds, sp.DecodeIds, unk if unk >= 0 else None, name)

    @classmethod
    def from_nemo_tokenizer(cls, tok, name: str = "model.tokenizer") -> Tokenizer:
        """A loaded NeMo model's tokenizer (model.tokenizer): when the model is in memory anyway."""
        unk = getattr(tok, "unk_id", None)
        return cls(tok.text_to_ids, tok.ids_to_text, unk if isinstance(unk, int) and unk >= 0 else None, name)


def load_tokenizer(source: str | os.PathLike) -> Tokenizer:
    """A `.nemo` file, a tokenizer directory (tokenizer.model inside) or a SentencePiece `.model` file."""
    p = Path(source)
    if p.is_dir():
        p = p / "tokenizer.model"
    if not p.is_file():
        raise CoverageError(f"{source}: no such tokenizer (.nemo, tokenizer dir or .model file)")
    if p.suffix == ".nemo" or tarfile.is_tarfile(p):
        return Tokenizer.from_sentencepiece(_nemo_tokenizer_bytes(p), str(p))
    return Tokenizer.from_sentencepiece(p.read_bytes(), str(p))


def _nemo_tokenizer_bytes(path: Path) -> bytes:
    """The SentencePiece model inside a .nemo tar, as its model_config.yaml's tokenizer.model_path names it."""
    import yaml

    try:
        with tarfile.open(path) as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            cfg_member = members.get("model_config.yaml")
            cfg = yaml.safe_load(tar.extractfile(cfg_member).read()) if cfg_member else {}
            tok_cfg = (cfg or {}).get("tokenizer") or {}
            if tok_cfg.get("type") == "agg" or "langs" in tok_cfg:
                raise CoverageError(
                    f"{path}: aggregate (per-language) tokenizer; check each language's tokenizer.model"
                )
            want = str(tok_cfg.get("model_path") or "").removeprefix("nemo:")
            name = want if want in members else None
            if name is None:
                found = sorted(n for n in members if n.endswith("tokenizer.model"))
                if len(found) != 1:
                    raise CoverageError(
                        f"{path}: expected one *tokenizer.model inside, found {found or 'none'}"
                    )
                name = found[0]
            return tar.extractfile(members[name]).read()
    except (tarfile.TarError, OSError) as e:
        raise CoverageError(f"{path}: cannot read the .nemo archive ({e})") from None


# ------------------------------------------------------------------------------------------------ report


@dataclass
class LanguageCoverage:
    lang: str
    n_texts: int = 0
    n_tokens: int = 0
    n_unk_tokens: int = 0
    n_texts_with_unk: int = 0
    n_roundtrip_mismatch: int = 0  # decode(encode(text)) != text, <unk> aside (e.g. NFKC folding)
    offending: dict[str, int] = field(default_factory=dict)  # character -> occurrences, most frequent first
    examples: list[str] = field(default_factory=list)  # a few texts with <unk>
    unk_rate_unmapped: float | None = None  # the rate before text maps, when maps were applied

    @property
    def unk_rate(self) -> float:
        return self.n_unk_tokens / self.n_tokens if self.n_tokens else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unk_rate"] = round(self.unk_rate, 6)
        d["offending"] = [
            {"char": ch, "codepoint": f"U+{ord(ch):04X}", "name": unicodedata.name(ch, "?"), "count": n}
            for ch, n in self.offending.items()
        ]
        return d


@dataclass
class CoverageReport:
    tokenizer: str
    text_maps: list[str]
    max_unk_rate: float
    languages: dict[str, LanguageCoverage]
    passed: bool
    failing: list[str]  # languages above max_unk_rate
    summary: str = ""

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "tokenizer": self.tokenizer,
            "text_maps": self.text_maps,
            "max_unk_rate": self.max_unk_rate,
            "failing": self.failing,
            "languages": {k: v.to_dict() for k, v in self.languages.items()},
            "summary": self.summary,
        }


def _measure(tok: Tokenizer, rows: Sequence[tuple[str, str]], n_examples: int) -> dict[str, LanguageCoverage]:
    langs: dict[str, LanguageCoverage] = {}
    chars: dict[str, Counter] = defaultdict(Counter)
    for text, lang in rows:
        c = langs.setdefault(lang, LanguageCoverage(lang))
        ids = list(tok.encode(text))
        c.n_texts += 1
        c.n_tokens += len(ids)
        n_unk = sum(1 for i in ids if i == tok.unk_id) if tok.unk_id is not None else 0
        if n_unk:
            c.n_unk_tokens += n_unk
            c.n_texts_with_unk += 1
            if len(c.examples) < n_examples:
                c.examples.append(text)
            chars[lang].update(text)
        elif " ".join(tok.decode(ids).split()) != " ".join(text.split()):
            c.n_roundtrip_mismatch += 1
    # A character is offending when it alone encodes to <unk>; only texts with <unk> can hold one.
    verdict: dict[str, bool] = {}
    for lang, counter in chars.items():
        bad = {}
        for ch, n in counter.most_common():
            if ch.isspace():
                continue
            if ch not in verdict:
                verdict[ch] = tok.unk_id in list(tok.encode(ch))
            if verdict[ch]:
                bad[ch] = n
        langs[lang].offending = bad
    return langs


def check_coverage(
    rows: Iterable[tuple[str, str]],
    tokenizer: Tokenizer | str | os.PathLike,
    max_unk_rate: float = DEFAULT_MAX_UNK_RATE,
    text_maps: str | Sequence[str] | None = None,
    n_examples: int = 3,
) -> CoverageReport:
    """Coverage of (text, lang) rows; with `text_maps`, of the mapped text (unmapped rates kept beside)."""
    if not 0 <= max_unk_rate <= 1:
        raise ValueError(f"max_unk_rate is a share of tokens in [0, 1], got {max_unk_rate}")
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    maps: list[TextMap] = get_text_maps(text_maps)
    rows = [(t, lang) for t, lang in rows]
    mapped = [(map_for_tokenizer(t, lang, maps), lang) for t, lang in rows] if maps else rows
    langs = _measure(tok, mapped, n_examples)
    if maps:
        before = _measure(tok, rows, 0)
        for lang, c in langs.items():
            c.unk_rate_unmapped = round(before[lang].unk_rate, 6)
    failing = sorted(lang for lang, c in langs.items() if c.unk_rate > max_unk_rate)
    rep = CoverageReport(
        tok.name, [m.name for m in maps], max_unk_rate, dict(sorted(langs.items())), not failing, failing
    )
    rep.summary = _summary(rep)
    return rep


def _summary(rep: CoverageReport) -> str:
    status = "PASSED" if rep.passed else "FAILED"
    lines = [
        f"Tokenizer coverage {status} (max <unk> rate {rep.max_unk_rate:g} per language; tokenizer {rep.tokenizer}"
        + (f"; text maps: {', '.join(rep.text_maps)})" if rep.text_maps else ")"),
        f"  {'lang':8s} {'texts':>7s} {'tokens':>9s} {'unk rate':>9s} {'texts w/ unk':>12s}  offending characters",
    ]
    for lang, c in rep.languages.items():
        chars = ", ".join(f"{ch!r} U+{ord(ch):04X} x{n}" for ch, n in list(c.offending.items())[:6])
        before = f" (unmapped {c.unk_rate_unmapped:.4f})" if c.unk_rate_unmapped is not None else ""
        flag = "  <-" if lang in rep.failing else ""
        lines.append(
            f"  {lang:8s} {c.n_texts:7d} {c.n_tokens:9d} {c.unk_rate:9.4f} {c.n_texts_with_unk:12d}  "
            f"{chars or '-'}{before}{flag}"
        )
    if not rep.passed:
        hint = (
            " or map them before training (--text-maps el_final_sigma for Greek ς)"
            if any("\u03c2" in c.offending for c in rep.languages.values())
            else ""
        )
        lines.append(f"Fix: remove or respell the offending characters in the transcripts{hint}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- manifests, CLI


def _manifest_files(manifest: str | os.PathLike, splits: Sequence[str]) -> list[Path]:
    p = Path(manifest)
    files = [p / f"{s}.jsonl" for s in splits if (p / f"{s}.jsonl").is_file()] if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise CoverageError(
            f"{manifest}: no manifest ({', '.join(f'{s}.jsonl' for s in splits)} in a directory)"
        )
    return files


def check_manifest_coverage(
    manifest: str | os.PathLike,
    tokenizer: Tokenizer | str | os.PathLike,
    max_unk_rate: float = DEFAULT_MAX_UNK_RATE,
    text_maps: str | Sequence[str] | None = None,
    out_path: str | os.PathLike | None = None,
    splits: Sequence[str] = TRAIN_SPLITS,
) -> CoverageReport:
    """Coverage of a manifest file, or of the `splits` of a build_manifest output directory.

    `out_path` gets the report as JSON (atomically). The pipeline step: call it after build_manifest with
    the base model's .nemo and stop the run when `passed` is False (the summary is one screen).
    """
    rows: list[tuple[str, str]] = []
    for f in _manifest_files(manifest, splits):
        rows += [
            (r["text"], r.get("lang") or r.get("target_lang") or "") for r in read_manifest(f, absolute=False)
        ]
    rep = check_coverage(rows, tokenizer, max_unk_rate, text_maps)
    if out_path:
        atomic_write_text(out_path, json.dumps(rep.to_dict(), ensure_ascii=False, indent=2))
    return rep


def apply_text_maps(
    manifest_dir: str | os.PathLike, text_maps: str | Sequence[str], splits: Sequence[str] = TRAIN_SPLITS
) -> dict[str, int]:
    """Rewrite the `text` of the `splits` manifests in the mapped spelling; returns changed lines per split.

    The original text is kept in `text_original` on changed lines; test.jsonl keeps the user's spelling,
    because evaluation compares restored hypotheses with it. Idempotent (mapping mapped text is a no-op).
    """
    maps = get_text_maps(text_maps)
    changed: dict[str, int] = {}
    for f in _manifest_files(manifest_dir, splits):
        rows = read_manifest(f, absolute=False)
        n = 0
        for r in rows:
            new = map_for_tokenizer(r["text"], r.get("lang"), maps)
            if new != r["text"]:
                r.setdefault("text_original", r["text"])
                r["text"] = new
                n += 1
        write_manifest(f, rows)
        changed[f.stem] = n
    return changed


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m components.common.coverage",
        description="Round-trip training transcripts through the base model's tokenizer; report the <unk> "
        "rate per language and the characters it lacks. Exit 1 when a language exceeds --max-unk-rate.",
    )
    p.add_argument("--manifest", required=True, help="a manifest .jsonl or a build_manifest output directory")
    p.add_argument("--tokenizer", required=True, help="base model .nemo, tokenizer directory or .model file")
    p.add_argument(
        "--max-unk-rate",
        type=float,
        default=DEFAULT_MAX_UNK_RATE,
        help="fail above this share of <unk> tokens in any language (default %(default)s)",
    )
    p.add_argument(
        "--text-maps",
        default="",
        help="comma-separated text maps to apply before checking, e.g. el_final_sigma",
    )
    p.add_argument(
        "--splits", default=",".join(TRAIN_SPLITS), help="splits of a directory (default train,val)"
    )
    p.add_argument("--out", help="write the report as JSON here")
    p.add_argument(
        "--apply",
        action="store_true",
        help="also rewrite the directory's train/val manifests with --text-maps",
    )
    return run_check(p, argv, _check, (CoverageError, ValueError))


def _check(a) -> CoverageReport:
    splits = [s.strip() for s in a.splits.split(",") if s.strip()]
    rep = check_manifest_coverage(a.manifest, a.tokenizer, a.max_unk_rate, a.text_maps or None, a.out, splits)
    if a.apply and a.text_maps:
        changed = apply_text_maps(a.manifest, a.text_maps, splits)
        print(f"text maps applied: {json.dumps(changed)}", file=sys.stderr)
    return rep


if __name__ == "__main__":
    sys.exit(main())
