"""The layers (docs/ARCHITECTURE.md "Layers") are a contract in pyproject.toml, checked by `make lint`
(lint-imports): the tree keeps it, and a deliberately added back-import breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("components", "registry", "serving", "pipelines")
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT.exists(), reason="import-linter is not installed (pip install -e .[dev])"
)


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # this copy's packages, not the installed ones
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy(tmp_path: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_the_layer_contract(tmp_path):
    r = _lint(_copy(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout


@pytest.mark.parametrize(
    "module, back_import, message",
    [
        (
            "components/common/_back.py",
            "from components.export_triton import core",
            "components.common is not allowed to import components.export_triton",
        ),
        (
            "components/finetune_asr/_back.py",
            "from components.build_manifest import core",
            "components.finetune_asr is not allowed to import components.build_manifest",
        ),
        (
            "registry/_back.py",
            "from components.export_triton.core import export_model",
            "registry is not allowed to import components.export_triton",
        ),
        ("serving/_back.py", "import registry.mlflow_adapter", "serving is not allowed to import registry"),
        (
            "components/common/_back.py",
            "import pipelines.local",
            "components.common is not allowed to import pipelines",
        ),
    ],
)
def test_a_back_import_breaks_the_contract(tmp_path, module, back_import, message):
    root = _copy(tmp_path)
    (root / module).write_text(f'"""A deliberate back-import."""\n\n{back_import}\n', encoding="utf-8")
    r = _lint(root)
    assert r.returncode != 0, r.stdout
    assert message in " ".join(r.stdout.split()), r.stdout
