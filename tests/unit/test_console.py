"""pipelines/console.py: `make demo`'s terminal gets the story, its log file gets everything."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from pipelines.console import story_line
from tests.conftest import REPO_ROOT


def test_story_lines_are_ours_and_kfps_task_lines():
    assert (
        story_line("    [finetune_asr] finetune: step 50/300 loss 1.2")
        == "  [finetune_asr] finetune: step 50/300 loss 1.2"
    )
    assert story_line("\x1b[0m12:00:01.123 - INFO - Executing task \x1b[96m'validate-data'\x1b[0m") == (
        "  task validate-data: running"
    )
    assert story_line(
        "12:00:09.001 - INFO - Task 'validate-data' finished with status \x1b[92mSUCCESS\x1b[0m"
    ) == ("  task validate-data: SUCCESS")
    for chatter in (
        "[NeMo W 2026-12-06 05:27:40 nemo_logging:364] UserWarning: ...",
        "GPU available: False",
        "    [KFP Executor 2026-12-06 05:37:51,156 INFO]: Got executor_input:",
        "  lr: 0.003",
        "12:00:01.123 - INFO - Task 'x' outputs:",
    ):
        assert story_line(chatter) is None, chatter


def test_terminal_gets_the_story_and_the_log_everything(tmp_path):
    script = textwrap.dedent(f"""
        import logging, os, subprocess, sys
        from pipelines.console import Console
        with Console({str(tmp_path / "demo.log")!r}) as c:
            c.say("== 1/5 a banner")
            logging.getLogger("components.synthesize_corpus.core").info("wrote 3 clips")
            logging.getLogger("components.synthesize_corpus.core").debug("debug detail")
            print("[NeMo I 2026-12-06 05:00:30 mixins:194] Tokenizer initialized")
            os.write(2, b"I0000 sentencepiece_trainer.cc:166] C++ chatter\\n")
            subprocess.run([sys.executable, "-c", "print('child chatter')"], check=True)
            print("    [validate_data] Data validation PASSED")
        print("after the console")
    """)
    p = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "== 1/5 a banner",
        "  [synthesize_corpus] wrote 3 clips",
        "  [validate_data] Data validation PASSED",
        "after the console",
    ]
    assert p.stderr == ""
    log = (tmp_path / "demo.log").read_text()
    for text in (
        "== 1/5 a banner",
        "[synthesize_corpus] wrote 3 clips",
        "[NeMo I",
        "C++ chatter",
        "child chatter",
        "[validate_data] Data validation PASSED",
    ):
        assert text in log, text
    assert "debug detail" not in log


def test_docs_name_the_demo_log_the_demo_writes():
    from pipelines.demo import LOG_FILE

    assert LOG_FILE == REPO_ROOT / "outputs" / "demo.log"
    for doc in ("README.md", "docs/ARCHITECTURE.md"):
        assert "outputs/demo.log" in (REPO_ROOT / doc).read_text(encoding="utf-8"), doc


def test_the_demo_shows_only_failing_checks_of_the_validation_table():
    from pipelines.demo import short_validation

    summary = "\n".join(
        [
            "Data validation PASSED: 0 of 3 rows fail a hard check, 1 more have warnings (m.csv)",
            "  3 rows, 0.001 h decodable audio; rows per lang: bg-BG 3",
            "  check                    severity  failed",
            "  audio_exists             error          0",
            "  not_silent               warning        1",
            "All failures: /x/failures.csv",
        ]
    )
    assert short_validation(summary).splitlines() == [summary.splitlines()[i] for i in (0, 1, 2, 4, 5)]
    clean = summary.replace("warning        1", "warning        0")
    assert [line.split()[0] for line in short_validation(clean).splitlines()] == ["Data", "3", "All"]


def test_a_bracketed_word_that_is_no_step_stays_in_the_log():
    """The demo showed the gate table's continuation lines (`[ok] bg-BG ...`, release_gate's `[pass] ...`)
    twice on the terminal: `[ok]` looked like a step's prefix. Only this project's steps count."""
    for line in (
        "  [ok] bg-BG streaming wer_norm: base 1.1 -> candidate 0.6",
        "    [pass] target_improves[bg-BG]: x",
        "    [FAIL] rule: y",
    ):
        assert story_line(line) is None, line
    assert story_line("    [registry] warning: x") == "  [registry] warning: x"
