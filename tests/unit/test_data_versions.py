"""Dataset version per run (issue 16 item 1): materialize_data pulls exactly the version `data_rev` names with
DVC (a local remote here), verifies DVC's md5 and caches by it; resolve_base pins the base and its sha256; the
code version is never "unknown"."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.common.version import CodeVersionError, code_version, is_dirty
from components.materialize_data import core as mat
from components.materialize_data.core import DataVersionError, dvc_md5, materialize, resolve_rev
from components.register_model.core import read_data_md5


def sh(*cmd: str, cwd) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def dvc(*args: str, cwd) -> str:
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict:
    """A git + DVC repository whose data.dvc has two committed versions, both pushed to a local remote; the
    repository's own DVC cache is then emptied, so materialising must pull from the remote."""
    root = tmp_path_factory.mktemp("dvcrepo")
    sh("git", "init", "-q", cwd=root)
    sh("git", "config", "user.email", "t@example.com", cwd=root)
    sh("git", "config", "user.name", "t", cwd=root)
    dvc("init", "-q", cwd=root)
    dvc("remote", "add", "-d", "local", str(root.parent / f"{root.name}-remote"), cwd=root)
    (root / "data" / "clips").mkdir(parents=True)
    (root / "data" / "metadata.csv").write_text("audio,text,lang,speaker\nclips/a.wav,Hola.,es-ES,a\n")
    (root / "data" / "clips" / "a.wav").write_bytes(b"A" * 100)
    dvc("add", "-q", "data", cwd=root)
    dvc("push", "-q", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "data v1", cwd=root)
    v1 = read_data_md5(root / "data.dvc")
    (root / "data" / "clips" / "b.wav").write_bytes(b"B" * 50)
    (root / "data" / "metadata.csv").write_text(
        "audio,text,lang,speaker\nclips/a.wav,Hola.,es-ES,a\nclips/b.wav,Adiós.,es-ES,b\n"
    )
    dvc("add", "-q", "data", cwd=root)
    dvc("push", "-q", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "data v2", cwd=root)
    sh("git", "tag", "v2", cwd=root)
    v2 = read_data_md5(root / "data.dvc")
    shutil.rmtree(root / ".dvc" / "cache")
    return {"root": root, "v1": v1, "v2": v2, "remote": root.parent / f"{root.name}-remote"}


def test_an_older_version_is_pulled_verified_and_then_cached(repo, tmp_path, monkeypatch):
    cache = tmp_path / "versions"
    m = materialize(str(repo["root"]), "HEAD~1", "/nonexistent", cache)
    assert m.source == "pulled" and m.data_md5 == repo["v1"] != repo["v2"]
    assert m.data_commit == sh("git", "rev-parse", "HEAD~1", cwd=repo["root"]).strip()
    assert Path(m.data_root) == cache / repo["v1"].removesuffix(".dir")
    assert sorted(p.name for p in (Path(m.data_root) / "clips").iterdir()) == ["a.wav"]  # v1 had one clip
    assert dvc_md5(m.data_root) == repo["v1"]

    def no_hashing(*a, **k):
        raise AssertionError("a cached version is hashed again")

    monkeypatch.setattr(mat, "dvc_md5", no_hashing)
    monkeypatch.setattr("dvc.api.DVCFileSystem", no_hashing)
    again = materialize(str(repo["root"]), "HEAD~1", "/nonexistent", cache)
    assert (again.source, again.data_root, again.data_md5) == ("cache", m.data_root, m.data_md5)


def test_a_dvc_md5_names_the_commit_that_recorded_it(repo):
    commit, md5, path = resolve_rev(repo["root"], repo["v1"].removesuffix(".dir"))
    assert (md5, path) == (repo["v1"], "data")
    assert commit == sh("git", "rev-parse", "HEAD~1", cwd=repo["root"]).strip()
    assert resolve_rev(repo["root"], f"md5:{repo['v2']}")[0] == resolve_rev(repo["root"], "v2")[0]


def test_unknown_versions_are_refused_by_name(repo, tmp_path):
    with pytest.raises(DataVersionError, match="'no-such-tag': not a revision"):
        materialize(str(repo["root"]), "no-such-tag", "/nonexistent", tmp_path)
    with pytest.raises(DataVersionError, match="no commit .* has a data.dvc with md5 0{32}.dir"):
        materialize(str(repo["root"]), "0" * 32, "/nonexistent", tmp_path)
    with pytest.raises(DataVersionError, match="data_repo is empty"):
        materialize("", "HEAD", "/nonexistent", tmp_path)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # nothing half-written


def test_a_corrupted_remote_is_refused_and_nothing_is_materialised(repo, tmp_path):
    root = tmp_path / "clone"
    shutil.copytree(repo["root"], root)
    remote = tmp_path / "remote"
    shutil.copytree(repo["remote"], remote)
    dvc("remote", "modify", "local", "url", str(remote), cwd=root)
    sh("git", "commit", "-qam", "remote moved", cwd=root)
    blob = next(p for p in remote.rglob("*") if p.is_file() and p.stat().st_size == 50)  # b.wav
    blob.write_bytes(b"X" * 50)
    with pytest.raises(DataVersionError, match=repo["v2"].replace(".", r"\.")):
        materialize(str(root), "HEAD", "/nonexistent", tmp_path / "versions")
    assert not (tmp_path / "versions" / repo["v2"].removesuffix(".dir")).exists()


def test_empty_data_rev_uses_the_folder_in_place_with_the_md5_dvc_add_records(repo, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(repo["root"] / "data", data)
    m = materialize("", "", data, tmp_path / "versions")
    assert (m.source, m.data_root, m.data_md5, m.data_commit) == ("in place", str(data), repo["v2"], "")


def test_code_version_env_then_image_file_then_git(tmp_path, monkeypatch):
    monkeypatch.setenv("ASR_GIT_COMMIT", "abc123")
    assert code_version() == "abc123"
    monkeypatch.delenv("ASR_GIT_COMMIT")
    (tmp_path / "GIT_COMMIT").write_text("def456\n")
    assert code_version(repo=tmp_path, commit_file=tmp_path / "GIT_COMMIT") == "def456"
    with pytest.raises(CodeVersionError, match="ASR_GIT_COMMIT"):
        code_version(repo=tmp_path, commit_file=tmp_path / "absent")
    g = tmp_path / "g"
    g.mkdir()
    sh("git", "init", "-q", cwd=g)
    (g / "f").write_text("1")
    sh("git", "add", "f", cwd=g)
    sh("git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "x", cwd=g)
    clean = code_version(repo=g, commit_file=tmp_path / "absent")
    assert len(clean) == 40 and not is_dirty(clean)
    (g / "f").write_text("2")
    dirty = code_version(repo=g, commit_file=tmp_path / "absent")
    assert dirty.startswith(clean + "+dirty.") and is_dirty(dirty)
    (g / "f").write_text("3")
    assert code_version(repo=g, commit_file=tmp_path / "absent") != dirty  # another edit, another version


def test_resolve_base_pins_the_alias_and_refuses_another_checkpoint(tmp_path, monkeypatch):
    from components.common.io import sha256_file
    from components.resolve_base.core import BaseModelMismatch, resolve_base
    from registry.mlflow_adapter import Registry, get_client

    monkeypatch.setenv("ASR_GIT_COMMIT", "c0de")
    nemo = tmp_path / "base.nemo"
    nemo.write_bytes(b"weights")
    r = resolve_base(str(nemo))
    assert (r.uri, r.sha256, r.code_version) == (str(nemo.resolve()), sha256_file(nemo), "c0de")
    with pytest.raises(BaseModelMismatch, match="requires " + "0" * 64):
        resolve_base(str(nemo), "0" * 64)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reg = Registry(get_client(uri))
    reg.register("m-base", nemo, aliases=("base",))
    (tmp_path / "b2").mkdir()
    (tmp_path / "b2" / "model.nemo").write_bytes(b"other weights")
    reg.register("m-base", tmp_path / "b2", aliases=("base",))
    r = resolve_base("models:/m-base@base", "", uri)
    assert r.uri == "models:/m-base/2" and r.sha256 == sha256_file(tmp_path / "b2" / "model.nemo")
    assert resolve_base("models:/m-base/1", sha256_file(nemo), uri).uri == "models:/m-base/1"


def test_the_fine_tune_data_order_is_seeded_by_the_run_seed(tmp_path):
    """Issue 16 item 2: NeMo's lhotse default shard_seed "trng" drew a fresh seed in every process, so two
    identical CPU fine-tunes gave different weights (tests/e2e/test_versions_e2e.py reproduces bit for bit)."""
    from omegaconf import OmegaConf

    from components.finetune_asr import core
    from components.finetune_asr.determinism import make_deterministic
    from components.finetune_asr.settings import FinetuneSettings, apply

    cfg = OmegaConf.create({"sample_rate": 16000, "model_defaults": {"prompt_dictionary": {"bg-BG": 30}}})
    ds = core.build_train_ds(
        apply(FinetuneSettings(recipe="tiny-demo")).train_ds, tmp_path / "t.jsonl", cfg, 7
    )
    assert ds["seed"] == 7 and ds["shard_seed"] == 7
    import torch

    try:
        facts = make_deterministic(7)
        assert facts["deterministic_algorithms"] and torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
