"""Export a verified `.nemo` into the Triton model repository as a new, atomically written version.

Layout written (see triton_repo/README.md):

    <repo>/asr_offline/config.pbtxt        dynamic batcher, whole utterances
    <repo>/asr_offline/<N>/model.py        python-backend source (runtime/model_offline.py)
    <repo>/asr_offline/<N>/model.nemo      hardlink (or copy) of the verified checkpoint
    <repo>/asr_offline/<N>/model.json      sha256 + lineage, checked again when Triton loads the version
    <repo>/asr_streaming/...               same, sequence batcher, one StreamState per correlation id

Why this shape: a version folder is built in a hidden temp dir inside the model folder (same filesystem) and
renamed into place, so Triton never sees half a version; the sha256 the registry recorded is checked before
anything is written, and by model.py before anything is served.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from components.common import settings
from components.common.io import atomic_write_text, sha256_file

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
RUNTIME = HERE / "runtime"

OFFLINE = "asr_offline"
STREAMING = "asr_streaming"
MODELS = (OFFLINE, STREAMING)
_RUNTIME_SOURCE = {OFFLINE: "model_offline.py", STREAMING: "model_streaming.py"}
_TEMPLATE = {OFFLINE: "asr_offline.pbtxt.tmpl", STREAMING: "asr_streaming.pbtxt.tmpl"}
log = logging.getLogger(__name__)


class ExportError(ValueError):
    """The export was refused; the message names the file and the reason. Nothing was written."""


@dataclass
class ServingConfig:
    """Knobs that end up in the generated config.pbtxt files (defaults fit the 2-core CPU box)."""

    max_batch_size: int = 8  # offline: utterances per execute()
    max_queue_delay_us: int = 2000  # offline: wait this long to fill a batch
    instances: int = 1  # model instances per model (KIND_CPU); each holds one copy of the model
    stream_max_batch_size: int = 16  # streaming: chunks of different streams advanced in one batched step
    stream_queue_delay_us: int = 0  # streaming: wait this long for more streams' chunks to join a step
    # streaming: streams the oldest strategy schedules at once; more wait in a backlog until one ends, so this
    # is the number of concurrent clients served without stalling (it costs no memory in Triton itself)
    max_candidate_sequences: int = 256
    max_sequence_idle_us: int = 60_000_000  # streaming: an abandoned stream is freed after 60 s
    max_audio_s: float = 120.0  # longest utterance / chunk accepted; longer requests get an error
    strip_lang_tags: bool = True  # remove the <xx-XX> tags `auto` mode emits from served text
    # streaming: longest single chunk; a longer one would hold every other stream for its encoder steps
    # (one execute()); send shorter chunks: the gateway (serving/gateway) cuts client audio into 160 ms pieces
    max_chunk_s: float = 0.5
    max_stream_s: float = 3600.0  # streaming: the per-stream audio budget; the stream is ended beyond it


@dataclass
class ExportResult:
    version: int
    paths: dict[str, str]  # model name -> version folder
    sha256: str
    configs: dict[str, str] = field(default_factory=dict)  # model name -> config.pbtxt
    removed: list[str] = field(default_factory=list)  # version folders deleted by the keep-K policy
    reused: bool = (
        False  # the newest version already served this checkpoint at these settings: nothing written
    )


def parse_att_context_size(value: str | list[int] | None) -> list[int] | None:
    """components.common.settings.parse_att_context_size (the one rule), refusing with an ExportError."""
    try:
        return settings.parse_att_context_size(value)
    except settings.SettingsError as e:
        raise ExportError(str(e)) from None


def offline_lookahead(
    nemo_path: str | os.PathLike,
    offline_att_context_size: str | list[int] | None,
    streaming: list[int] | None,
) -> list[int] | None:
    """The lookahead `asr_offline` runs at: the given one, else the most accurate one the checkpoint supports
    (largest right context, then left: the rule evaluate_wer's offline scores used), read from the model.json
    beside the checkpoint; without that list, the streaming lookahead (logged)."""
    given = parse_att_context_size(offline_att_context_size)
    sidecar = Path(nemo_path).parent / "model.json"
    try:
        sizes = [
            list(a) for a in json.loads(sidecar.read_text(encoding="utf-8")).get("att_context_sizes") or []
        ]
    except (OSError, ValueError, AttributeError):
        sizes = []
    if given is not None:
        if sizes and given not in sizes:
            raise ExportError(
                f"offline_att_context_size {given} is not supported by the model (supported: {sizes})"
            )
        return given
    if sizes:
        return max(sizes, key=lambda a: (a[1], a[0]))
    logging.getLogger(__name__).warning(
        "%s: no att_context_sizes beside the checkpoint; asr_offline uses the streaming lookahead %s",
        sidecar,
        streaming,
    )
    return streaming


def render_config(model: str, att_context_size: list[int] | None, serving: ServingConfig) -> str:
    """Fill a config template; `Template.substitute` raises on any placeholder left unfilled."""
    text = (TEMPLATES / _TEMPLATE[model]).read_text(encoding="utf-8")
    return Template(text).substitute(
        name=model,
        max_batch_size=serving.max_batch_size,
        stream_max_batch_size=serving.stream_max_batch_size,
        stream_queue_delay_us=serving.stream_queue_delay_us,
        max_queue_delay_us=serving.max_queue_delay_us,
        instances=serving.instances,
        max_candidate_sequences=serving.max_candidate_sequences,
        max_sequence_idle_us=serving.max_sequence_idle_us,
        max_audio_s=serving.max_audio_s,
        strip_lang_tags="true" if serving.strip_lang_tags else "false",
        max_chunk_s=serving.max_chunk_s,
        max_stream_s=serving.max_stream_s,
        att_context_size=json.dumps(att_context_size) if att_context_size else "",
    )


def existing_versions(model_dir: str | os.PathLike) -> list[int]:
    """Numbered version folders of one model, ascending (hidden temp folders are not versions)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def serving_version(
    repo: str | os.PathLike,
    sha256: str,
    att_context_size: list[int] | None,
    offline_att_context_size: list[int] | None = None,
    configs: dict[str, str] | None = None,
) -> int | None:
    """The newest version number if both models' newest version already holds `sha256` at these lookaheads
    (and, given `configs`, with these config.pbtxt texts); else None. An unset `offline_att_context_size` is the
    checkpoint's own largest lookahead, fixed by its sha256."""
    repo = Path(repo)
    newest = {m: (existing_versions(repo / m) or [None])[-1] for m in MODELS}
    if len(set(newest.values())) != 1 or None in newest.values():
        return None
    version = newest[MODELS[0]]
    for m in MODELS:
        try:
            doc = json.loads((repo / m / str(version) / "model.json").read_text(encoding="utf-8"))
            config = (repo / m / "config.pbtxt").read_text(encoding="utf-8")
        except (OSError, ValueError):
            return None
        if doc.get("sha256") != sha256 or doc.get("att_context_size") != att_context_size:
            return None
        if (
            offline_att_context_size is not None
            and doc.get("offline_att_context_size") != offline_att_context_size
        ):
            return None
        if configs is not None and config != configs[m]:
            return None
    return version


def _place_checkpoint(src: Path, dst: Path, sha256: str) -> None:
    """Hardlink when on the same filesystem (a 2.5 GB .nemo is not copied twice), else copy and re-verify."""
    try:
        os.link(src, dst)
        return
    except OSError:
        pass
    shutil.copyfile(src, dst)
    if sha256_file(dst) != sha256:
        raise ExportError(
            f"{dst}: copy of {src} does not match sha256 {sha256} (disk full or file changing?)"
        )


@contextlib.contextmanager
def _repo_lock(repo: Path):
    """Serialise exporters of one repository so two of them never pick the same version number."""
    with open(repo / ".export.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def export_model(
    nemo_path: str | os.PathLike,
    triton_repo: str | os.PathLike,
    expected_sha256: str | None,
    model_info: dict | None = None,
    att_context_size: list[int] | None = None,
    keep_versions: int = 3,
    serving: ServingConfig | None = None,
    offline_att_context_size: str | list[int] | None = None,
) -> ExportResult:
    """Write version N+1 of `asr_offline` and `asr_streaming`, then keep only the newest `keep_versions`;
    when version N already serves this checkpoint with these settings, write nothing and return N (reused).

    `asr_streaming` runs at `att_context_size`; `asr_offline` at `offline_att_context_size`, by default the
    checkpoint's largest lookahead (`offline_lookahead`), the operating point evaluate_wer scored offline at.

    `expected_sha256` is what the registry recorded for the checkpoint; a mismatch is refused before anything
    is written. None means "trust the file" (manual CLI use) and records the sha256 that was computed.
    """
    nemo_path = Path(nemo_path)
    repo = Path(triton_repo)
    serving = serving or ServingConfig()
    att_context_size = parse_att_context_size(att_context_size)
    actual = _checked_sha256(nemo_path, expected_sha256, model_info, keep_versions)
    offline_att = offline_lookahead(nemo_path, offline_att_context_size, att_context_size)
    atts = {OFFLINE: offline_att, STREAMING: att_context_size}
    configs = {m: render_config(m, atts[m], serving) for m in MODELS}  # fail before writing

    repo.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    removed: list[str] = []
    with _repo_lock(repo):
        same = serving_version(repo, actual, att_context_size, offline_att, configs)
        if same is not None:  # idempotent: a re-run on the same candidate adds no Triton version
            return ExportResult(
                version=same,
                paths={m: str(repo / m / str(same)) for m in MODELS},
                sha256=actual,
                configs={m: str(repo / m / "config.pbtxt") for m in MODELS},
                reused=True,
            )
        version = max([0, *(v for m in MODELS for v in existing_versions(repo / m))]) + 1
        sidecar = {
            "model": None,
            "version": version,
            "sha256": actual,
            "source": str(nemo_path.resolve()),
            "att_context_size": att_context_size,
            "offline_att_context_size": offline_att,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model_info": model_info or {},
        }
        for model in MODELS:
            model_dir = repo / model
            model_dir.mkdir(exist_ok=True)
            _write_version(model_dir, version, model, nemo_path, actual, sidecar)
            atomic_write_text(model_dir / "config.pbtxt", configs[model])
            os.chmod(model_dir / "config.pbtxt", 0o644)
            paths[model] = str(model_dir / str(version))
            removed += _prune(model_dir, keep_versions)
    return ExportResult(
        version=version,
        paths=paths,
        sha256=actual,
        configs={m: str(repo / m / "config.pbtxt") for m in MODELS},
        removed=removed,
    )


def _checked_sha256(
    nemo_path: Path, expected_sha256: str | None, model_info: dict | None, keep_versions: int
) -> str:
    """The checkpoint's sha256, after the arguments are checked; a mismatch with `expected_sha256` is refused
    before anything is written."""
    if keep_versions < 1:
        raise ExportError(f"keep_versions must be >= 1, got {keep_versions}")
    if not nemo_path.is_file():
        raise ExportError(f"{nemo_path}: checkpoint not found")
    try:
        json.dumps(model_info or {})
    except TypeError as e:
        raise ExportError(f"model_info is not JSON-serialisable: {e}") from e
    actual = sha256_file(nemo_path)
    if expected_sha256 is not None and actual != expected_sha256.strip().lower():
        raise ExportError(
            f"{nemo_path}: sha256 {actual} does not match the expected {expected_sha256} "
            "(the registry's checkpoint_sha256); refusing to export"
        )
    return actual


def _write_version(
    model_dir: Path, version: int, model: str, nemo_path: Path, sha256: str, sidecar: dict
) -> None:
    """model_dir/<version>/ (runtime, checkpoint, model.json), built aside and renamed into place."""
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".tmp-{version}-"))
    try:
        shutil.copyfile(RUNTIME / _RUNTIME_SOURCE[model], tmp / "model.py")
        _place_checkpoint(nemo_path, tmp / "model.nemo", sha256)
        atomic_write_text(tmp / "model.json", json.dumps({**sidecar, "model": model}, indent=2) + "\n")
        # mkstemp/mkdtemp make 0600/0700; the server may run as another user
        os.chmod(tmp / "model.json", 0o644)
        os.chmod(tmp, 0o755)
        os.rename(tmp, model_dir / str(version))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prune(model_dir: Path, keep_versions: int) -> list[str]:
    """Remove all but the newest `keep_versions` versions; returns what was removed."""
    removed = []
    for old in existing_versions(model_dir)[:-keep_versions]:
        # rename first so a half-deleted folder is never mistaken for a version
        doomed = model_dir / f".del-{old}-{os.getpid()}"
        os.rename(model_dir / str(old), doomed)
        shutil.rmtree(doomed)
        removed.append(str(model_dir / str(old)))
    return removed


def read_sidecar(nemo_path: str | os.PathLike) -> dict | None:
    """The model artifact's JSON sidecar (`model.json` beside `model.nemo`, or `<name>.json`), if present."""
    nemo_path = Path(nemo_path)
    for cand in (nemo_path.with_suffix(".json"), nemo_path.parent / "model.json"):
        if cand.is_file():
            try:
                return json.loads(cand.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ExportError(f"{cand}: not valid JSON ({e})") from e
    return None


def export_step(
    model_name: str,
    triton_repo: str,
    alias: str = "champion",
    att_context_size: str = "",
    offline_att_context_size: str = "",
    mlflow_tracking_uri: str = "",
    candidate_sha256: str = "",
) -> tuple[int, str]:
    """What the export_triton component does: export the registry's `alias` version of `model_name` into
    `triton_repo` (the component passes its settings record's fields by name: components/export_triton/
    settings.py); returns (Triton version, sha256). `candidate_sha256` (the pipeline's registered candidate, now
    champion): when the newest Triton version already serves it at these lookaheads, nothing is exported and
    MLflow is not even opened (an unchanged re-run)."""
    from registry.mlflow_adapter import Registry, get_client
    from registry.resolve import resolve_alias

    atts = (
        parse_att_context_size(att_context_size or None),
        parse_att_context_size(offline_att_context_size or None),
    )
    if candidate_sha256 and (same := serving_version(triton_repo, candidate_sha256, *atts)) is not None:
        log.info(
            "%s: the candidate %s is already Triton version %s: nothing exported",
            model_name,
            candidate_sha256[:12],
            same,
        )
        return same, candidate_sha256
    os.makedirs(triton_repo, exist_ok=True)
    info = Registry(get_client(mlflow_tracking_uri or None)).by_alias(model_name, alias)
    if info is not None:  # idempotent re-run: the newest version already serves it (no download)
        same = serving_version(triton_repo, info.tags.get("checkpoint_sha256", ""), *atts)
        if same is not None:
            log.info(
                "%s@%s (v%s) is already Triton version %s: nothing exported",
                model_name,
                alias,
                info.version,
                same,
            )
            return same, info.tags["checkpoint_sha256"]
    with tempfile.TemporaryDirectory(dir=triton_repo, prefix=".download-") as dst:  # same fs: hardlink
        nemo, sha256, info = resolve_alias(
            model_name, alias, dst, client=get_client(mlflow_tracking_uri or None)
        )
        r = export_model(
            nemo,
            triton_repo,
            sha256,
            {**info, "alias": alias},
            att_context_size or None,
            offline_att_context_size=offline_att_context_size or None,
        )
    log.info(
        "exported %s@%s as version %s%s: %s",
        model_name,
        alias,
        r.version,
        " (already there)" if r.reused else "",
        r.paths,
    )
    return r.version, r.sha256
