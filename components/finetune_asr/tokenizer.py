"""The tiny model's tokenizer: cased SentencePiece unigram over every language's training text.

Why all languages (the fine-tune target included): Nemotron ships one multilingual tokenizer and the recipe keeps
it when fine-tuning (a new tokenizer re-initialises the decoder and joint; NeMo issues #15778, #8815). The tiny
base must look the same, so its tokenizer already covers the target's script although the base never trained on
it. Cased, because Nemotron outputs punctuated, capitalised text.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.vocab", "vocab.txt")


def build_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 256) -> Path:
    """Train a SentencePiece unigram tokenizer (cased, character_coverage 1.0) into `out_dir`.

    Writes tokenizer.model / tokenizer.vocab / vocab.txt: what NeMo's `tokenizer: {dir: out_dir, type: bpe}`
    loads. The vocabulary may come out smaller than `vocab_size` for a small text (hard_vocab_limit=false).
    Built in a temp dir and moved into place, so `out_dir` is either complete or absent.
    """
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    lines = [t.strip() for t in texts if t and t.strip()]
    if not lines:
        raise ValueError("build_tokenizer: no non-empty training text")
    out_dir = Path(out_dir)
    if out_dir.exists() and all((out_dir / f).exists() for f in TOKENIZER_FILES):
        raise FileExistsError(f"build_tokenizer: {out_dir} already holds a tokenizer; refusing to overwrite")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
        text_file = Path(tmp) / "text.txt"
        text_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        spm_dir = Path(tmp) / "spm"
        create_spt_model(
            str(text_file),
            vocab_size=vocab_size,
            sample_size=-1,
            do_lower_case=False,
            tokenizer_type="unigram",
            output_dir=str(spm_dir),
            character_coverage=1.0,
        )
        missing = [f for f in TOKENIZER_FILES if not (spm_dir / f).exists()]
        if missing:
            raise RuntimeError(f"build_tokenizer: SentencePiece did not write {missing} in {spm_dir}")
        if out_dir.exists():
            shutil.rmtree(out_dir)  # a partial leftover (checked complete ones above)
        os.replace(spm_dir, out_dir)
    return out_dir


def unknown_token_rows(tokenizer, texts: Iterable[str]) -> list[str]:
    """Texts the tokenizer can only encode with <unk> (e.g. Greek final sigma on the real Nemotron vocab)."""
    unk = getattr(tokenizer, "unk_id", None)
    if unk is None or unk < 0:
        return []
    return [t for t in texts if unk in tokenizer.text_to_ids(t)]
