"""`python -m pipelines run-local` on a user's own data, as a new user would try it.

Defects pinned (full-size rehearsal issue): with one speaker the split left no test rows and the run trained
a model that could never be evaluated; `--set finetune_asr.replay_langs=` (meaning "no replay") died with a
raw kfp ValueError; the CLI ended with kfp's RuntimeError traceback instead of one line naming the step.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import REPO_ROOT
from tests.unit.test_preflight import _nemo, tokenizer_dir  # noqa: F401 (fixture)


def _one_speaker_dataset(root: Path) -> Path:
    (root / "clips").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [("bg-BG", "bg_only", "Включи светлината в кухнята.")] * 4 + [
        ("el-GR", f"el_{i}", "Άναψε το φως στην κουζίνα.") for i in range(4)
    ]
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["audio", "text", "lang", "speaker"])
        for i, (lang, spk, text) in enumerate(rows):
            sf.write(
                root / "clips" / f"{i}.wav", (0.2 * rng.standard_normal(16000)).astype(np.float32), 16000
            )
            w.writerow([f"clips/{i}.wav", text, lang, spk])
    return root


@pytest.mark.slow  # three kfp.local steps (~1 min)
def test_single_speaker_run_stops_at_preflight_with_one_line(tmp_path, tokenizer_dir):  # noqa: F811
    data = _one_speaker_dataset(tmp_path / "data")
    base = _nemo(tmp_path / "base.nemo", tokenizer_dir)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "run-local",
            "--base-model-uri",
            str(base),
            "--set",
            f"corpus.out={data}",
            "--set",
            "finetune_asr.replay_langs=",
            "--set",
            "build_manifest.test_ratio=0.5",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert last.startswith("error: step preflight-finetune failed: data: bg-BG: no test rows"), last
    assert "one speaker ('bg_only')" in last and "`split` column" in last
    assert "Traceback" not in proc.stderr + proc.stdout  # the reason, not a stack
    logs = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    assert "Executing task 'preflight-finetune'" in logs and "Executing task 'finetune-asr'" not in logs
