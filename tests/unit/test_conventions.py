"""Conventions a contributor relies on: one console script per command line (and the README uses them), the
extras each image installs, and pre-commit running the same checks as `make lint`."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS = PYPROJECT["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_points_at_a_cli_with_help(name, capsys):
    module, func = SCRIPTS[name].split(":")
    main = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as e:
        main(["--help"]) if name != "asr-data" else main(["validate", "--help"])
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_asr_data_lists_its_commands(capsys):
    from pipelines.data_cli import COMMANDS, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"asr-data {c}" in out for c in COMMANDS)
    assert main(["nope"]) == 2


def test_readme_uses_every_console_script():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [n for n in SCRIPTS if n not in readme] == []
    assert not re.search(r"python -m (registry|serving|pipelines)\b", readme)  # the scripts, not module paths


def test_extras_per_image():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"pipeline", "serving", "dev"} <= set(extras)
    names = lambda reqs: {re.split(r"[\[<>=; ]", r, maxsplit=1)[0].lower() for r in reqs}  # noqa: E731
    assert {"kfp", "nemo_toolkit", "mlflow"} <= names(extras["pipeline"])
    assert {"nvidia-pytriton", "aiohttp", "nvidia-riva-client"} <= names(extras["serving"])
    assert not {"kfp", "dvc", "great-expectations"} & names(extras["serving"])  # the serving image stays lean
    assert not {"kfp", "dvc", "great-expectations", "torch"} & names(PYPROJECT["project"]["dependencies"])
    assert "nemotron-asr-pipeline[pipeline,serving]" in extras["dev"]
    assert 'install -q -c requirements/constraints.txt -e ".[dev]"' in (ROOT / "Makefile").read_text()


def test_pre_commit_runs_the_make_lint_checks():
    hooks = [
        h for r in yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"] for h in r["hooks"]
    ]
    entries = {h["entry"].split()[0] + " " + (h["entry"].split() + [""])[1] for h in hooks}
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    made = {
        " ".join(line.strip().removeprefix("$(VENV)/bin/").split()[:2]).removesuffix(" .")
        for line in lint.splitlines()
    }
    assert {e.strip() for e in entries} == made
