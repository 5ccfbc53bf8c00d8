"""The fine-tune's artifact: model.nemo written atomically, and its model.json sidecar (the model card)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from components.common.io import atomic_write_text, sha256_file


def save_model_atomic(model, path: str | os.PathLike) -> str:
    """model.save_to a temp file next to `path`, then rename: a reader never sees a partial .nemo."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".nemo")
    os.close(fd)
    try:
        model.save_to(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; servers and other users read models
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(path)


def model_card(model, **extra: Any) -> dict:
    """The sidecar's model-derived fields (docs/ARCHITECTURE.md, model artifact contract)."""
    enc = model.encoder
    return {
        "model_class": str(model.cfg.get("target") or f"{type(model).__module__}.{type(model).__name__}"),
        "prompt_dictionary": dict(model.cfg.model_defaults.get("prompt_dictionary", {})),
        "att_context_sizes": [list(a) for a in getattr(enc, "att_context_size_all", [])],
        "vocab_size": int(model.tokenizer.vocab_size),
        **extra,
    }


def write_sidecar(model_path: str | os.PathLike, card: dict) -> str:
    """model.json next to model.nemo, written last and atomically: its presence means the .nemo is complete."""
    model_path = Path(model_path)
    doc = {"sha256": sha256_file(model_path), "model_file": model_path.name, **card}
    out = model_path.with_name("model.json")
    atomic_write_text(out, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    os.chmod(out, 0o644)
    return str(out)
