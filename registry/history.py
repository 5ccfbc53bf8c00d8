"""Champion history: a compact JSON log on the registered model, and the pure rules that read it.

Why a log on the registered model and not only tags on versions: rollback needs the *order* in which versions
held `champion`, and "previous champion" after several rollbacks is a stack question (undo, not "the version
promoted before this one"). The log is one registered-model tag, written only under the promotion lock
(registry/lock.py), so its read-modify-write cannot lose an entry. The `champion` alias stays the truth about
what serves; the log is reconciled to it whenever the two disagree (a writer died between the two writes).

Postgres stores a registered-model tag in VARCHAR(5000): the log keeps the newest entries that fit and says how
many it dropped. Full per-version detail (who, why, which run) lives in version tags, which have no such limit.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

HISTORY_TAG = "champion.history"
MAX_CHARS = 4800  # under Postgres' 5000-char registered-model tag column


def utc_now() -> str:
    """The time stamp of every registry record (history entries, audit tags, gate and override records)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Entry:
    """One change of `champion`: op is promote | rollback | reconcile; prev is the champion it replaced."""

    WHY_CHARS = 160

    version: str
    op: str
    at: str
    by: str = ""
    prev: str = ""
    forced: bool = False
    run: str = ""
    why: str = ""  # the reason, shortened (the full text is in the version's tags)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if v not in ("", False)}
        return {"v": d.pop("version"), **d}

    @classmethod
    def from_dict(cls, d: dict) -> Entry:
        return cls(
            version=str(d["v"]),
            op=str(d.get("op", "promote")),
            at=str(d.get("at", "")),
            by=str(d.get("by", "")),
            prev=str(d.get("prev", "")),
            forced=bool(d.get("forced", False)),
            run=str(d.get("run", "")),
            why=str(d.get("why", "")),
        )


def parse(value: str | None) -> list[Entry]:
    """The tag's text -> entries, oldest first. An unreadable tag is an error, not an empty history: rolling
    back on a history we cannot read would pick the wrong version."""
    if not value:
        return []
    try:
        doc = json.loads(value)
        return [Entry.from_dict(d) for d in doc["entries"]]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"registered-model tag {HISTORY_TAG!r} is not a champion history: {e}") from e


def dump(entries: list[Entry], dropped: int = 0, max_chars: int = MAX_CHARS) -> str:
    """Entries -> tag text, dropping the oldest until it fits in `max_chars`."""
    entries = list(entries)
    while True:
        text = json.dumps(
            {"dropped": dropped, "entries": [e.to_dict() for e in entries]},
            separators=(",", ":"),
            ensure_ascii=False,
        )
        if len(text) <= max_chars or len(entries) <= 1:
            return text
        entries.pop(0)
        dropped += 1


def dropped_count(value: str | None) -> int:
    if not value:
        return 0
    try:
        return int(json.loads(value).get("dropped", 0))
    except (ValueError, AttributeError, TypeError):
        return 0


def stack(entries: list[Entry]) -> list[str]:
    """Replay the log into the champion stack (bottom first; the top is the current champion).

    promote X pushes X; rollback to Y pops back to Y (or pushes Y if it is no longer on the stack, e.g. a
    `--to` older than the kept log); reconcile records an alias change made outside the log (pushes)."""
    st: list[str] = []
    for e in entries:
        if e.op == "rollback" and e.version in st:
            del st[st.index(e.version) + 1 :]
        elif not st or st[-1] != e.version:
            st.append(e.version)
    return st


def rollback_target(
    entries: list[Entry],
    current: str | None,
    to: str | None = None,
    also_champions: frozenset[str] = frozenset(),
) -> str:
    """The version a rollback moves `champion` to.

    Without `to`: the champion below the current one on the stack (undo). With `to`: that version, which must
    have been champion before (a rollback never promotes a version that never passed through promotion);
    `also_champions` are versions known to have been champion from their own tags, for logs that were trimmed."""
    st = stack(entries)
    if current is None:
        raise LookupError("no current champion: nothing to roll back")
    if st and st[-1] != current:
        raise LookupError(
            f"champion is v{current} but the history's last champion is v{st[-1]}: "
            "reconcile first (any promote/rollback does it under the lock)"
        )
    if to is not None:
        to = str(to)
        if to == current:
            raise ValueError(f"v{to} is already champion")
        if to not in {e.version for e in entries} | set(also_champions):
            raise LookupError(f"v{to} was never champion (history: {', '.join(e.version for e in entries)})")
        return to
    below = [v for v in st[:-1] if v != current]
    if not below:
        raise LookupError(f"v{current} has no previous champion in the recorded history")
    return below[-1]


__all__ = ["HISTORY_TAG", "Entry", "dropped_count", "dump", "parse", "rollback_target", "stack"]
