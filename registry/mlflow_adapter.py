"""MLflow model registry adapter: register, alias, promote, download. The MlflowClient is passed in.

A model reference (path, folder, models:/, runs:/) is turned into a local .nemo by registry/resolve.py.

Works on sqlite (local default) and against an `mlflow server` (cluster). Versions are created with the
low-level `create_model_version(source=<run artifact uri>/model, run_id=...)` route, which works on both. The
source is the fine-tune run's `model/` artifact when that run logged the checkpoint (one upload; `model_run_id`
tag); the registration's own run holds the model card, evaluation and gate record. Aliases, never stages.

Consistency rules (docs/REGISTRY.md says why):
- a version is created only after its artifacts are logged, with all its tags in the same call, so no version
  exists without its checkpoint or its lineage;
- registration is idempotent per `registration_key` (pipeline run + checkpoint), so a retry after a failure
  between creating the version and setting `challenger` finishes the job instead of adding a twin;
- `champion` moves only under the model's RegistryLock, after the version's checkpoint was downloaded and its
  sha256 checked; every move is appended to the champion history (registry/history.py) and read back;
- `champion` moves only on evidence (registry/evidence.py, registry/gate_record.py): a passing gate record bound to the checkpoint,
  or an audited override record written by `--force --reason`. `register` never sets `champion`.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from components.common.io import sha256_file
from components.common.tracking import EXPERIMENT, MODEL_RUN_TAG, default_tracking_uri, get_client
from components.common.tracking import experiment_id as _experiment_id
from registry import gate_record as gr
from registry import history, mlflow_errors
from registry.evidence import ChampionEvidence
from registry.history import HISTORY_TAG, Entry, utc_now
from registry.lock import RegistryLock
from registry.policy import BASE, CHALLENGER, CHAMPION, decide_promotion

REPO_ROOT = Path(__file__).resolve().parents[1]
# EXPERIMENT, default_tracking_uri and get_client: one client/experiment rule for the steps and the registry
# (components/common/tracking.py), re-exported here for the registry's callers.


class ConcurrentPromotionError(RuntimeError):
    """Read-back after a champion move found another writer's result: nothing is assumed, the caller retries."""


def default_actor() -> str:
    """Who is acting, for audit tags: $ASR_REGISTRY_ACTOR, else the login name, else 'unknown'."""
    try:
        return os.environ.get("ASR_REGISTRY_ACTOR") or getpass.getuser()
    except Exception:  # no passwd entry (containers running as a bare uid)
        return "unknown"


# Tag of a version whose checkpoint was logged by another run (the fine-tune's): the run of the registration
# itself, which holds the model card, the evaluation and the gate record. VersionInfo.run_id is that run.
REGISTRATION_RUN_TAG = "registration_run_id"


@dataclass
class VersionInfo:
    name: str
    version: str
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""
    run_id: str = ""


@contextlib.contextmanager
def _staged_checkpoint(nemo: Path):
    """A temp folder holding `nemo` as model.nemo (a hardlink: no copy of a 2.5 GB checkpoint where the
    filesystem allows) and the model.json beside it, if any."""
    with tempfile.TemporaryDirectory() as staged:
        try:
            os.link(nemo, Path(staged) / "model.nemo")
        except OSError:
            shutil.copy2(nemo, Path(staged) / "model.nemo")
        if (nemo.parent / "model.json").exists():
            shutil.copy2(nemo.parent / "model.json", Path(staged) / "model.json")
        yield staged


class Registry(ChampionEvidence):
    """Register, alias, promote, resolve; the champion-evidence methods come from registry/evidence.py."""

    def __init__(self, client, experiment: str = EXPERIMENT, lock_options: dict | None = None):
        self.client = client
        self.experiment = experiment
        self.lock_options = lock_options or {}  # RegistryLock(lease_s=, timeout_s=, poll_s=)

    def lock(self, name: str) -> RegistryLock:
        return RegistryLock(self.client, name, **self.lock_options)

    # -- experiments / runs ------------------------------------------------------------------------------
    def experiment_id(self) -> str:
        return _experiment_id(self.client, self.experiment)

    # -- registration -------------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        model_dir: str | os.PathLike,
        tags: dict[str, str] | None = None,
        description: str = "",
        aliases: tuple[str, ...] = (CHALLENGER,),
        run_id: str | None = None,
        extra_files: dict[str, str] | None = None,
        registration_key: str = "",
    ) -> VersionInfo:
        """Log `model_dir` (model.nemo + model.json) as run artifacts and create a model version from them.

        `model_dir` may also be a .nemo file: it is registered as model.nemo with the model.json beside it.
        With a `registration_key`, a version already registered under that key is reused (its aliases are
        set again): a retried pipeline step completes the registration instead of creating a second version."""
        if CHAMPION in aliases:
            raise ValueError(
                f"{name}: `{CHAMPION}` is never set at registration; it moves only through `promote` on a passing "
                "gate record (or an audited `promote --force --reason`)"
            )
        model_dir = Path(model_dir)
        if model_dir.is_file():
            with _staged_checkpoint(model_dir) as staged:
                return self.register(
                    name, staged, tags, description, aliases, run_id, extra_files, registration_key
                )
        nemo = model_dir / "model.nemo"
        if not nemo.is_file():
            raise FileNotFoundError(f"{nemo}: no model.nemo to register")
        sidecar = (
            json.loads((model_dir / "model.json").read_text()) if (model_dir / "model.json").exists() else {}
        )
        if registration_key and sidecar.get("sha256"):
            # Found under the sidecar's checkpoint: nothing is uploaded, so the local file is not hashed again
            # (seconds for a 2.5 GB .nemo on every unchanged re-run); the registry's copy was hashed when it
            # was registered and is verified on every download.
            done = self._registered_under(name, registration_key, sidecar["sha256"], aliases)
            if done is not None:
                return done
        sha = sha256_file(nemo)
        if sidecar.get("sha256") and sidecar["sha256"] != sha:
            raise ValueError(f"{nemo}: sha256 {sha} does not match its sidecar ({sidecar['sha256']})")
        if registration_key and not sidecar.get("sha256"):
            done = self._registered_under(name, registration_key, sha, aliases)
            if done is not None:
                return done
        run_id, model_run = self._log_registration_run(name, model_dir, nemo, sha, run_id, extra_files)
        try:
            self.client.create_registered_model(name)
        except Exception as e:  # already exists (any store)
            if not mlflow_errors.already_exists(e):
                raise
        all_tags = {
            "checkpoint_sha256": sha,
            "model_run_id": model_run,
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        if registration_key:
            all_tags["registration_key"] = registration_key
        if model_run != run_id:
            all_tags[REGISTRATION_RUN_TAG] = run_id
        # An `mlflow server` accepts an artifact source only with the run_id of the run that holds it, so the
        # version's MLflow run is the checkpoint's run; the registration run (model card, evaluation, gate
        # record) is the REGISTRATION_RUN_TAG, and VersionInfo.run_id reads it back (get()).
        mv = self.client.create_model_version(
            name,
            source=f"{self.client.get_run(model_run).info.artifact_uri}/model",
            run_id=model_run,
            tags=all_tags,
            description=description,
        )
        version = str(mv.version)
        for alias in aliases:
            self.client.set_registered_model_alias(name, alias, version)
        return self.get(name, version)

    def _registered_under(
        self, name: str, registration_key: str, sha: str, aliases: tuple[str, ...]
    ) -> VersionInfo | None:
        """The version already registered under `registration_key`, its aliases set again (None: none is);
        one registered with another checkpoint is refused."""
        done = self.find_registration(name, registration_key)
        if done is None:
            return None
        if done.tags.get("checkpoint_sha256") != sha:
            raise ValueError(
                f"{name} v{done.version} was registered under key {registration_key!r} "
                f"with a different checkpoint ({done.tags.get('checkpoint_sha256')})"
            )
        for alias in aliases:
            self.client.set_registered_model_alias(name, alias, done.version)
        return self.get(name, done.version)

    def _log_registration_run(
        self,
        name: str,
        model_dir: Path,
        nemo: Path,
        sha: str,
        run_id: str | None,
        extra_files: dict[str, str] | None,
    ) -> tuple[str, str]:
        """Log the registration's files to `run_id` (else a new run, terminated here), and the checkpoint
        too unless a run already holds it -> (registration run id, id of the run holding the checkpoint)."""
        own_run = run_id is None
        if own_run:
            run_id = self.client.create_run(self.experiment_id(), run_name=f"register-{name}").info.run_id
        model_run = self.find_model_run(sha, nemo.stat().st_size)
        if model_run is None:  # no run holds this checkpoint yet: upload it with this registration
            self.client.log_artifacts(run_id, str(model_dir), "model")
            model_run = run_id
        for artifact_path, text in (extra_files or {}).items():
            with tempfile.TemporaryDirectory() as tmp:
                p = Path(tmp) / Path(artifact_path).name
                p.write_text(text, encoding="utf-8")
                parent = str(Path(artifact_path).parent)
                self.client.log_artifact(run_id, str(p), None if parent == "." else parent)
        if own_run:
            self.client.set_terminated(run_id)
        return run_id, model_run

    def find_model_run(self, sha256: str, size: int) -> str | None:
        """A finished run that already logged this checkpoint as `model/model.nemo` (the fine-tune run tags
        itself with its sha256: components/common/tracking.py MODEL_RUN_TAG), or None. Its size is checked
        here; its bytes are checked against the sha256 whenever the version is downloaded (verify, promote)."""
        key = sha256.replace("'", "")
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        for i in range(0, len(experiments), 100):  # search_runs takes a bounded list of experiments
            runs = self.client.search_runs(
                experiments[i : i + 100],
                filter_string=f"tags.{MODEL_RUN_TAG} = '{key}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time ASC"],
            )
            for run in runs:
                files = {f.path: f.file_size for f in self.client.list_artifacts(run.info.run_id, "model")}
                if files.get("model/model.nemo") == size:
                    return run.info.run_id
        return None

    def find_registration(self, name: str, registration_key: str) -> VersionInfo | None:
        """The version registered under `registration_key`, if any (oldest wins)."""
        key = registration_key.replace("'", "")
        try:
            mvs = self.client.search_model_versions(f"name='{name}' and tags.registration_key='{key}'")
        except Exception as e:
            if mlflow_errors.missing(e):
                return None
            raise
        mvs = sorted(mvs, key=lambda mv: int(mv.version))
        return self.get(name, mvs[0].version) if mvs else None

    def get(self, name: str, version: str) -> VersionInfo:
        mv = self.client.get_model_version(name, str(version))
        tags = dict(mv.tags or {})
        run_id = tags.get(REGISTRATION_RUN_TAG) or mv.run_id or ""  # the registration run (register())
        return VersionInfo(name, str(mv.version), list(mv.aliases or []), tags, mv.source, run_id)

    def by_alias(self, name: str, alias: str) -> VersionInfo | None:
        """The version `alias` points at; None when the model or the alias does not exist. Any other failure
        (a broken store, a server error, no permission) raises: it must not read as "no champion"."""
        try:
            model = self.client.get_registered_model(name)
        except Exception as e:
            if mlflow_errors.missing(e):
                return None
            raise
        version = dict(model.aliases or {}).get(alias)  # MLflow reports an unset alias as a bad parameter
        return self.get(name, str(version)) if version is not None else None

    def versions(self, name: str) -> list[VersionInfo]:
        mvs = self.client.search_model_versions(f"name='{name}'")  # an unknown model: an empty list
        return sorted((self.get(name, mv.version) for mv in mvs), key=lambda v: int(v.version))

    # -- champion history and promotion ------------------------------------------------------------------
    def history(self, name: str) -> list[Entry]:
        """The recorded champion history, oldest first (registry/history.py)."""
        return history.parse(self._history_text(name))

    def _history_text(self, name: str) -> str:
        try:
            return dict(self.client.get_registered_model(name).tags or {}).get(HISTORY_TAG, "")
        except Exception as e:
            if mlflow_errors.missing(e):
                return ""
            raise

    def _append_history(self, name: str, entries: list[Entry], entry: Entry, text: str) -> list[Entry]:
        new = [*entries, entry]
        self.client.set_registered_model_tag(
            name, HISTORY_TAG, history.dump(new, dropped=history.dropped_count(text))
        )
        return new

    def reconcile(self, name: str) -> tuple[list[Entry], str | None]:
        """Make the history agree with the `champion` alias; call it holding the lock.

        A champion move writes the history entry first (the intent), then the alias. So the two disagree when
        a writer died in between: the last entry names a version that is not champion and its `prev` is the
        current champion; that unfinished entry is dropped. Any other disagreement is an alias moved by hand
        (UI, raw client): the alias is what serves, so the log records it as op `reconcile`."""
        text = self._history_text(name)
        entries = history.parse(text)
        champ = self.by_alias(name, CHAMPION)
        current = champ.version if champ else None
        if entries and entries[-1].version != current and entries[-1].prev == (current or ""):
            # finished moves stamp the version with the entry's time; an unfinished one does not
            last = entries[-1]
            tags = self.get(name, last.version).tags
            if last.at not in (tags.get("promoted_at"), tags.get("rollback.restored_at")):
                entries = entries[:-1]
                self._write_history(name, entries, history.dropped_count(text))
        st = history.stack(entries)
        if current is not None and (not st or st[-1] != current):
            try:  # a hand-set alias is recorded as it is; the log says whether it came with evidence
                self.champion_evidence(champ)
                why = ""
            except (gr.GateRecordError, OSError, ValueError) as e:
                why = f"unverified: {e}"[: Entry.WHY_CHARS]
            entries = self._append_history(
                name,
                entries,
                Entry(current, "reconcile", utc_now(), "registry", st[-1] if st else "", why=why),
                text,
            )
        return entries, current

    def _write_history(self, name: str, entries: list[Entry], dropped: int) -> None:
        if entries or dropped:
            self.client.set_registered_model_tag(name, HISTORY_TAG, history.dump(entries, dropped=dropped))
        else:
            self.client.delete_registered_model_tag(name, HISTORY_TAG)

    def move_champion(self, name: str, lock: RegistryLock, entries: list[Entry], entry: Entry) -> None:
        """Move `champion` to `entry.version` and log it; call it holding `lock`, with `entries` from reconcile.

        Order: history entry (intent), then the alias, then a read-back. If the alias write fails, the entry is
        taken back; if the process dies instead, the next reconcile drops it. Either way the registry is left
        with the old champion and a history that says so."""
        text = self._history_text(name)
        lock.check()
        self._append_history(name, entries, entry, text)
        try:
            self.client.set_registered_model_alias(name, CHAMPION, entry.version)
        except BaseException:
            try:
                self._write_history(name, entries, history.dropped_count(text))
            except Exception:  # the next reconcile drops the unfinished entry
                pass
            raise
        self._check_moved(name, entry.version, entry)

    def _check_moved(self, name: str, version: str, entry: Entry) -> None:
        """Read back: the alias and the log's last entry must be ours, or someone else wrote in between."""
        champ = self.by_alias(name, CHAMPION)
        last = self.history(name)[-1:]
        if champ is None or champ.version != version or not last or last[0] != entry:
            raise ConcurrentPromotionError(
                f"{name}: after moving champion to v{version} the registry shows champion="
                f"{champ.version if champ else None}, last history entry={last[0] if last else None}"
            )

    def promote(
        self,
        name: str,
        version: str,
        force: bool = False,
        reason: str = "",
        actor: str | None = None,
        run_id: str = "",
        verify: bool = True,
    ) -> VersionInfo:
        """Move `champion` to `version` if its gate record passed (or forced with a reason); audit-tag it.

        The `gate.passed` tag is display only: the decision comes from the verified gate record. Safe to
        retry: promoting the current champion again is a no-op."""
        version = str(version)
        info = self.get(name, version)
        if force and not reason.strip():
            raise ValueError("--force needs --reason: an override of the gate must say why")
        try:
            self.passing_gate_record(info)
            gate_passed = True
        except gr.GateRecordError:
            if not force:
                raise
            gate_passed = None
        decision = decide_promotion(gate_passed, force, reason)
        if verify:  # outside the lock: artifacts never change after registration
            self.verify(info)
        if decision.forced:  # the evidence first: the sidecar serves a forced version only with this record
            self.write_override(info, reason, actor or default_actor())
        with self.lock(name) as lock:
            entries, current = self.reconcile(name)
            who = actor or default_actor()
            if current != version:
                entry = Entry(
                    version,
                    "promote",
                    utc_now(),
                    who,
                    current or "",
                    decision.forced,
                    run_id,
                    decision.reason[: Entry.WHY_CHARS],
                )
                self.move_champion(name, lock, entries, entry)
            else:  # already champion: a retry, or promoted by someone else; fill in audit tags if missing
                entry = next((e for e in reversed(entries) if e.version == version), None)
                if entry is None or self.get(name, version).tags.get("promoted_at"):
                    return self.get(name, version)
            audit = {
                "promoted_at": entry.at,
                "promoted_by": entry.by or who,
                "promotion_reason": decision.reason,
                "previous_champion": entry.prev,
                "promotion_forced": str(decision.forced).lower(),
            }
            if run_id:
                audit["promotion_run_id"] = run_id
            if decision.forced:
                audit["promotion_override_reason"] = reason.strip()
            for k, v in audit.items():  # after the move: a version carries promoted_* only if it was champion
                self.client.set_model_version_tag(name, version, k, v)
        return self.get(name, version)

    # -- resolution ---------------------------------------------------------------------------------------
    def _artifact_bytes(self, info: VersionInfo, path: str) -> bytes | None:
        """One artifact of the version's run, or None when it does not exist."""
        if not info.run_id:
            return None
        with tempfile.TemporaryDirectory(prefix="gate-") as tmp:
            try:
                local = self.client.download_artifacts(info.run_id, path, tmp)
            except Exception:  # missing artifact: the caller names what is missing
                return None
            p = Path(local)
            return p.read_bytes() if p.is_file() else None

    def download(self, info: VersionInfo, dst_dir: str | os.PathLike) -> Path:
        """Download a version's model folder; verify the .nemo's sha256 against the registry tag."""
        dst = Path(dst_dir)
        dst.mkdir(parents=True, exist_ok=True)
        run = info.tags.get("model_run_id") or info.run_id  # the run that logged the checkpoint (one upload)
        local = Path(self.client.download_artifacts(run, "model", str(dst)))
        nemo = local / "model.nemo"
        expected = info.tags.get("checkpoint_sha256")
        if expected and sha256_file(nemo) != expected:
            raise ValueError(
                f"{info.name} v{info.version}: downloaded {nemo} does not match sha256 {expected}"
            )
        return nemo

    def state(self, name: str) -> dict:
        """Versions, aliases, key tags and the champion history: what `make demo` and `list` print."""
        keys = (
            "gate.passed",
            gr.RECORD_TAG,
            "data_md5",
            "base_model_uri",
            "checkpoint_sha256",
            "git_commit",
            "promoted_at",
            "promotion_forced",
        )
        champ = self.by_alias(name, CHAMPION)
        return {
            "model": name,
            "champion": champ.version if champ else None,
            "versions": [
                {"version": v.version, "aliases": v.aliases, **{k: v.tags.get(k, "") for k in keys}}
                for v in self.versions(name)
            ],
            "champion_history": [e.to_dict() for e in self.history(name)],
        }


__all__ = [
    "BASE",
    "CHALLENGER",
    "CHAMPION",
    "ConcurrentPromotionError",
    "EXPERIMENT",
    "Registry",
    "VersionInfo",
    "default_actor",
    "default_tracking_uri",
    "get_client",
    "utc_now",
]
