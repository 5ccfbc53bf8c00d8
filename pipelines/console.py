"""`make demo`'s two outputs: the story on the terminal, everything in a log file.

Inside `Console`, file descriptors 1 and 2 point at the log file, so whatever writes there (NeMo's config
dumps, Lightning's and CUDA-graph warnings, SentencePiece's C++ logging, dvc, tritonserver, every kfp task's
output) lands in the log only. The terminal gets:
- what the demo itself says (`say`: banners, tables; also written to the log);
- this project's log lines, `[step] message` (components.common.logs), from the demo process and from the
  kfp tasks' output;
- kfp.local's task lines (a task starts, a task finished with its status).
With verbosity 1 (`python -m pipelines demo -v`) the terminal gets everything, as before.
"""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

from components.common.logs import STORY_LINE, configure

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# kfp.local's own lines: "12:00:00.000 - INFO - Executing task 'validate-data'", "... Task 'x' finished with
# status SUCCESS", "... Pipeline 'x' finished with status FAILURE"
_KFP = re.compile(r"^\s*\d\d:\d\d:\d\d\.\d+ - (?P<level>[A-Z]+) - (?P<message>.*)$")
_KFP_STORY = re.compile(r"^(Executing task '|Task '[\w-]+' finished with status|Pipeline '[\w-]+' finished)")


def story_line(line: str) -> str | None:
    """The terminal's version of one output line, or None when it belongs in the log only."""
    line = _ANSI.sub("", line).rstrip()
    m = STORY_LINE.match(line)
    if m:
        return f"  [{m.group('step')}] {m.group('message')}"
    m = _KFP.match(line)
    if m and (_KFP_STORY.match(m.group("message")) or m.group("level") in ("ERROR", "CRITICAL")):
        message = m.group("message")
        message = re.sub(r"^Executing task '([\w-]+)'", r"task \1: running", message)
        message = re.sub(r"^Task '([\w-]+)' finished with status (\w+)", r"task \1: \2", message)
        return f"  {message}"
    return None


class _Split(io.TextIOBase):
    """A text stream that writes everything to the log and the story lines (story_line) to the terminal."""

    def __init__(self, log: io.TextIOBase, term: io.TextIOBase, everything: bool) -> None:
        self.log, self.term, self.everything, self._part = log, term, everything, ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self._part += text
        *done, self._part = self._part.split("\n")
        for line in done:
            shown = line if self.everything else story_line(line)
            if shown is not None:
                self.term.write(shown + "\n")
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.term.flush()

    def isatty(self) -> bool:
        return False


class Console:
    """`with Console(log_path) as c:` the demo's output split (module docstring); `c.say(text)` tells the story."""

    def __init__(self, log_path: str | os.PathLike, verbosity: int = 0) -> None:
        self.log_path = Path(log_path)
        self.verbosity = verbosity

    def __enter__(self) -> Console:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._streams = (sys.stdout, sys.stderr)
        self._fds = (os.dup(1), os.dup(2))
        self.term = open(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        self.log = open(self.log_path, "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        os.dup2(self.log.fileno(), 1)  # C libraries and child processes: the log
        os.dup2(self.log.fileno(), 2)
        split = _Split(self.log, self.term, everything=self.verbosity > 0)
        sys.stdout = sys.stderr = split
        configure(max(0, self.verbosity))  # this project's INFO records: `[step] message` -> the story
        return self

    def say(self, text: str = "") -> None:
        """A line (or lines) of the story: the terminal and the log."""
        self.log.write(text + "\n")
        self.term.write(text + "\n")

    def __exit__(self, *exc) -> None:
        sys.stdout.flush()
        sys.stdout, sys.stderr = self._streams
        os.dup2(self._fds[0], 1)
        os.dup2(self._fds[1], 2)
        for fd in self._fds:
            os.close(fd)
        self.log.close()
        self.term.close()
