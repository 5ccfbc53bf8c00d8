"""components.common.logs: library code logs, CLIs configure it (`[step] message`, --verbose/--quiet)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from components.common import logs
from tests.conftest import REPO_ROOT

# modules that are a command line or a kfp component body: they may print their result for the user
ENTRY_POINTS = ("__main__.py", "component.py")
LIBRARY_DIRS = ("components", "registry", "pipelines", "serving")
# library modules that print on purpose: the demo's own terminal story, a component's one-line failure reason
# that pipelines/local.py reads back, a CLI function that lives beside its library code
ALLOWED = {
    "pipelines/data_cli.py",  # the asr-data console script (a CLI)
    "pipelines/reproduce.py",  # `asr-pipeline reproduce` prints its comparison, as the demo prints its story
    "pipelines/demo.py",
    "pipelines/console.py",
    "pipelines/rehearse.py",
    "components/common/errors.py",
    "components/common/coverage.py",
    "components/common/cli.py",  # the tail check-style CLIs share: their summary and `error: ...` line
    "serving/client.py",
}


def _prints_to_stderr(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
            if any(k.arg == "file" for k in node.keywords) or path.name not in ENTRY_POINTS:
                lines.append(node.lineno)
    return lines


def test_library_code_logs_instead_of_printing():
    offenders = []
    for top in LIBRARY_DIRS:
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT).as_posix()
            if path.name in ENTRY_POINTS or rel in ALLOWED:
                continue
            offenders += [f"{rel}:{n}" for n in _prints_to_stderr(path)]
    assert offenders == [], f"print() in library code (use logging): {offenders}"


def test_records_read_as_step_and_message(capsys):
    logs.configure()
    logging.getLogger("components.finetune_asr.trainer").info("finetune: step %d/%d", 50, 300)
    logging.getLogger("registry.rollback").warning("no previous champion")
    logging.getLogger("components.finetune_asr").debug("hidden at the default level")
    err = capsys.readouterr().err.splitlines()
    assert err == ["[finetune_asr] finetune: step 50/300", "[registry] warning: no previous champion"]
    assert logs.STORY_LINE.match("    " + err[0]).group("step") == "finetune_asr"  # kfp indents task output


@pytest.mark.parametrize(
    "flags, level", [([], logging.INFO), (["-v"], logging.DEBUG), (["--quiet"], logging.WARNING)]
)
def test_cli_flags_set_the_level(flags, level):
    import argparse

    p = argparse.ArgumentParser()
    logs.add_verbosity_flags(p)
    logs.configure_from(p.parse_args(flags))
    assert logging.getLogger("components").level == level


def test_every_cli_takes_verbose_and_quiet():
    import subprocess
    import sys

    for module in (
        "components.validate_data",
        "components.common.coverage",
        "components.build_manifest",
        "components.evaluate_wer",
        "components.export_triton",
        "components.synthesize_corpus",
    ):
        out = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
        assert "--verbose" in out and "--quiet" in out, module


def test_a_step_process_skips_the_final_garbage_collection():
    """`configure` is the first call of every kfp step body: the process it starts ends right after writing its
    outputs, and the interpreter's final collections over MLflow's/NeMo's objects took 1.4-2.2 s of a 6-8 s
    registry step (docs/REPRODUCE.md). The objects are frozen at exit (gc.freeze) after every other exit
    handler; a handler registered before `configure` runs after it and sees them frozen."""
    import subprocess
    import sys

    code = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0, flush=True))\n"
        "from components.common.logs import configure\n"
        "configure()\n"
        "print('frozen before exit:', gc.get_freeze_count() > 0, flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["frozen before exit: False", "frozen at exit: True"], out.stdout
