"""Output for people: library code logs to its module's logger (`log = logging.getLogger(__name__)`), never
prints; a command line (each `__main__`, each kfp component body) calls `configure` once.

Our records are written as `[step] message` (`[step] warning: message` from WARNING up), where `step` is the
component's package (`components.finetune_asr.trainer` -> `finetune_asr`) or the top-level package
(`registry`, `pipelines`, `serving`). That prefix is how `make demo` tells this project's story lines from
NeMo's and Lightning's chatter in a task's output (pipelines/console.py).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

PACKAGES = ("components", "registry", "pipelines", "serving")  # the loggers `configure` owns
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}  # quiet / default / verbose
# the `step` of each of this project's loggers: the components' packages and the top-level packages
STEPS = tuple(
    sorted(
        p.parent.name
        for p in Path(__file__).resolve().parents[1].glob("*/__init__.py")
        if p.parent.name != "common"
    )
) + ("common", *PACKAGES[1:])
STORY_LINE = re.compile(
    rf"^\s*\[(?P<step>{'|'.join(STEPS)})\] (?P<message>.*)$"
)  # a formatted record of ours


def step_of(logger_name: str) -> str:
    """`components.finetune_asr.trainer` -> `finetune_asr`; `registry.rollback` -> `registry`."""
    parts = logger_name.split(".")
    return parts[1] if parts[0] == "components" and len(parts) > 1 else parts[0]


class StepFormatter(logging.Formatter):
    """`[step] message`, with the level named from WARNING up and the traceback (if any) after it."""

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        text = f"[{step_of(record.name)}] {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record (a redirected or captured stderr too)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


_EXIT_HOOKED = False


def skip_final_gc_at_exit() -> None:
    """Freeze every object at exit (gc.freeze), so the interpreter's final collections skip them.

    A kfp step is a process that ends as soon as its outputs are written; with MLflow (pandas, SQLAlchemy,
    alembic) or NeMo imported, those collections took 1.4-2.2 s of a 6-8 s registry step on this machine, and
    0.12-0.14 s frozen: seconds of every unchanged re-run (docs/REPRODUCE.md). Safe: the other exit handlers
    (logging's flush, tempfile/weakref finalizers, MLflow's) still run, and the modules' objects are still
    released by reference counting as the interpreter clears them; only unreachable reference cycles are
    left to the operating system, which frees the process's memory anyway. Registered once per process."""
    global _EXIT_HOOKED
    if not _EXIT_HOOKED:
        import atexit
        import gc

        atexit.register(gc.freeze)
        _EXIT_HOOKED = True


def configure(verbosity: int = 0) -> None:
    """Route this project's loggers to stderr as `[step] message`: verbosity -1 (--quiet) warnings and errors
    only, 0 the story (INFO), 1 (--verbose) debug detail too. Other libraries' loggers are left as they are.
    Idempotent: calling it again replaces the handler (and sets the new level).

    Every kfp step body and command line calls it first, so it also makes the process's exit quick
    (`skip_final_gc_at_exit`)."""
    skip_final_gc_at_exit()
    level = LEVELS[max(-1, min(1, verbosity))]
    handler = _CurrentStderr()
    handler.setFormatter(StepFormatter())
    for name in PACKAGES:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _CurrentStderr)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False  # not again through a root handler (kfp's executor installs one)


def add_verbosity_flags(parser: argparse.ArgumentParser) -> None:
    """`--verbose/-v` and `--quiet/-q` on a CLI's parser, or on each of its sub-commands when it has them
    (flags given after the sub-command, as users type them). A parser with its own --quiet keeps it."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    targets = [sp for s in subs for sp in dict.fromkeys(s.choices.values())] or [parser]
    for target in targets:
        taken = {opt for a in target._actions for opt in a.option_strings}
        if "--verbose" not in taken and "-v" not in taken:
            target.add_argument("-v", "--verbose", action="store_true", help="also log debug detail")
        if "--quiet" not in taken and "-q" not in taken:
            target.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def verbosity(args: argparse.Namespace) -> int:
    """-1, 0 or 1 from the flags add_verbosity_flags added."""
    return 1 if getattr(args, "verbose", False) else -1 if getattr(args, "quiet", False) else 0


def configure_from(args: argparse.Namespace) -> None:
    """configure() at the verbosity the CLI's flags ask for."""
    configure(verbosity(args))


def reset() -> None:
    """Undo `configure` (tests: a CLI run in-process must not change how later code logs)."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _CurrentStderr)]:
            logger.removeHandler(old)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
