"""Helpers shared by the two python-backend models (runtime/model_offline.py, runtime/model_streaming.py).

Those files are copied into every version folder; the server's PYTHONPATH (or the installed package in the
production image) makes this module importable from them. No Triton import here, so it is testable anywhere.
"""

from __future__ import annotations

import json
import os

from components.common.io import sha256_file
from components.common.languages import LANG_TAG_RE
from components.common.text import strip_lang_tags


def config_param(model_config: dict, key: str, default: str = "") -> str:
    """A `parameters { key: ... string_value: ... }` entry of config.pbtxt (as the backend's JSON config)."""
    return model_config.get("parameters", {}).get(key, {}).get("string_value", default) or default


def load_verified_checkpoint(version_dir: str) -> tuple[str, dict]:
    """(model.nemo path, model.json) of a version folder; refuses a checkpoint whose sha256 differs from the one
    export recorded, so a server serves only what the registry approved."""
    with open(os.path.join(version_dir, "model.json"), encoding="utf-8") as f:
        meta = json.load(f)
    nemo_path = os.path.join(version_dir, "model.nemo")
    expected, actual = meta.get("sha256", ""), sha256_file(nemo_path)
    if expected and actual != expected:
        raise ValueError(
            f"{nemo_path}: sha256 {actual} != {expected} recorded in model.json; refusing to serve"
        )
    return nemo_path, meta


def model_settings(args: dict) -> tuple[dict, str, dict, list[int] | None, int]:
    """What both models read in initialize(): (model_config, verified .nemo path, model.json,
    att_context_size (config parameter, else the export's), max samples per request)."""
    model_config = json.loads(args["model_config"])
    nemo_path, meta = load_verified_checkpoint(os.path.join(args["model_repository"], args["model_version"]))
    att = config_param(model_config, "att_context_size")
    att_context_size = json.loads(att) if att else meta.get("att_context_size")
    max_samples = int(float(config_param(model_config, "max_audio_s", "120")) * 16000)
    return model_config, nemo_path, meta, att_context_size, max_samples


def lang_tag_filter(model_config: dict):
    """text -> text for the `strip_lang_tags` config parameter: with "true" (the default) the `<xx-XX>` tags a
    prompt model writes in `auto` mode are removed; text without a tag is returned untouched (byte-identical
    to in-process NeMo, which the parity tests check)."""
    if config_param(model_config, "strip_lang_tags", "true").lower() not in ("1", "true", "yes"):
        return lambda text: text
    return lambda text: strip_lang_tags(text) if LANG_TAG_RE.search(text) else text
