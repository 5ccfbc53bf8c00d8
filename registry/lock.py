"""A lease lock for one registered model that works on every MLflow store (sqlite file, Postgres, `mlflow server`).

Why this shape: MLflow has no compare-and-set on tags, but `create_registered_model` is atomic on every store
(a unique name: the database's primary key, surfaced as RESOURCE_ALREADY_EXISTS by the server too). So the lock
is a registered model named `<model>--lock`; holding it means having created it, releasing it means deleting it
(a hard delete). Its tags carry the owner token and a lease expiry, so a holder that died (killed pod,
power cut) blocks others for at most `lease_s`: a waiter that finds an expired lease deletes it, after checking
that the owner it saw is still the owner.

Guarantee: while every holder finishes its critical section within `lease_s` (default 600 s; a promotion
takes seconds), at most one process holds the lock for a model. A holder calls `check()` right before its
writes, so one whose lease was broken stops instead of writing. What is left outside the guarantee (a holder
stalled past its lease *between* `check()` and a write, or two waiters breaking the same expired lease within
the same few milliseconds) is caught afterwards: writers read their result back and raise
`ConcurrentPromotionError` if another writer got in.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from registry import mlflow_errors

LOCK_SUFFIX = "--lock"


class LockTimeout(TimeoutError):
    """Another process held the lock for longer than we were willing to wait."""


class LockLost(RuntimeError):
    """Our lease expired and someone else broke it: stop before writing."""


_already_exists = mlflow_errors.already_exists  # by MLflow error_code, never by message text
_missing = mlflow_errors.missing


class RegistryLock:
    """`with RegistryLock(client, "asr"):` — mutual exclusion for promotions/rollbacks of model "asr"."""

    def __init__(
        self, client, model_name: str, lease_s: float = 600.0, timeout_s: float = 120.0, poll_s: float = 0.2
    ):
        self.client = client
        self.name = f"{model_name}{LOCK_SUFFIX}"
        self.lease_s, self.timeout_s, self.poll_s = lease_s, timeout_s, poll_s
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.held = False

    def _try_create(self) -> bool:
        tags = {"lock.owner": self.token, "lock.expires_at": f"{time.time() + self.lease_s:.3f}"}
        try:
            self.client.create_registered_model(
                self.name, tags=tags, description="promotion lock (registry/lock.py); deleted when released"
            )
            return True
        except Exception as e:
            if _already_exists(e):
                return False
            if "locked" in str(e).lower():  # sqlite busy (SQLite's own error, no MLflow code): try again
                return False
            raise

    def _owner(self) -> tuple[str, float] | None:
        try:
            rm = self.client.get_registered_model(self.name)
        except Exception as e:
            if _missing(e):
                return None
            raise
        tags = dict(rm.tags or {})
        return tags.get("lock.owner", ""), float(tags.get("lock.expires_at", "0") or 0)

    def _break_if_expired(self) -> None:
        seen = self._owner()
        if seen is None or seen[1] > time.time():
            return
        again = self._owner()  # re-read right before deleting: never delete a lease that was just renewed
        if again is not None and again[0] == seen[0]:
            try:
                self.client.delete_registered_model(self.name)
            except Exception as e:
                if not _missing(e):
                    raise

    def acquire(self) -> RegistryLock:
        deadline = time.monotonic() + self.timeout_s
        while True:
            if self._try_create():
                self.held = True
                return self
            self._break_if_expired()
            if time.monotonic() > deadline:
                owner = self._owner()
                raise LockTimeout(
                    f"{self.name}: held by {owner[0] if owner else '?'} for over {self.timeout_s:.0f} s"
                )
            time.sleep(self.poll_s * (0.5 + uuid.uuid4().int % 100 / 100))  # jitter: no lock-step retries

    def check(self) -> None:
        """Raise LockLost unless we still own an unexpired lease (call right before writing)."""
        owner = self._owner()
        if owner is None or owner[0] != self.token or owner[1] <= time.time():
            raise LockLost(f"{self.name}: lease lost (now {owner[0] if owner else 'free'})")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        owner = self._owner()
        if owner is not None and owner[0] == self.token:
            try:
                self.client.delete_registered_model(self.name)
            except Exception as e:
                if not _missing(e):
                    raise

    def __enter__(self) -> RegistryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_lock_model(name: str) -> bool:
    return name.endswith(LOCK_SUFFIX)


__all__ = ["LOCK_SUFFIX", "LockLost", "LockTimeout", "RegistryLock", "is_lock_model"]
