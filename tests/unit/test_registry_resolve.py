"""One model resolver (registry/resolve.py) for every step: a local .nemo, a model folder, `models:/` and `runs:/`
URIs (real MLflow on a temp sqlite store), each failure named with the path/URI and the reason."""

from __future__ import annotations

import pytest

from registry.mlflow_adapter import Registry, get_client
from registry.resolve import resolve_model
from tests.unit.test_registry import _migrated_registry_db, tracking_uri  # noqa: F401


@pytest.fixture()
def client(tracking_uri):  # noqa: F811 (the fixture imported above)
    return get_client(tracking_uri)


def _folder(tmp_path, name: str, *files: str):
    d = tmp_path / name
    d.mkdir()
    for f in files:
        (d / f).write_bytes(f"weights of {f}".encode())
    return d


def test_a_local_file_is_returned_as_is(tmp_path):
    (tmp_path / "any-name.nemo").write_bytes(b"w")
    assert resolve_model(str(tmp_path / "any-name.nemo"), tmp_path / "dl") == str(tmp_path / "any-name.nemo")


@pytest.mark.parametrize(
    ("files", "want"),
    [
        (["model.nemo"], "model.nemo"),  # a fine-tune output / downloaded registry version
        (["base.nemo"], "base.nemo"),  # a bootstrap cache entry (components/finetune_asr/bootstrap.py)
        (["model.nemo", "base.nemo", "other.nemo"], "model.nemo"),  # the canonical names first
        (["nemotron-3.5-asr.nemo", "model.json"], "nemotron-3.5-asr.nemo"),  # the folder's only .nemo
    ],
)
def test_a_folder_resolves_to_its_checkpoint(tmp_path, files, want):
    d = _folder(tmp_path, "m", *files)
    assert resolve_model(str(d), tmp_path / "dl") == str(d / want)


def test_a_folder_with_no_or_several_checkpoints_is_refused_by_name(tmp_path):
    empty = _folder(tmp_path, "empty", "model.json")
    with pytest.raises(FileNotFoundError, match=rf"{empty}: no \.nemo checkpoint in this folder"):
        resolve_model(str(empty), tmp_path / "dl")
    two = _folder(tmp_path, "two", "a.nemo", "b.nemo")
    with pytest.raises(ValueError, match=rf"{two}: 2 \.nemo checkpoints \(a\.nemo, b\.nemo\).*name one"):
        resolve_model(str(two), tmp_path / "dl")


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'nope.nemo'}: no such file or folder"):
        resolve_model(str(tmp_path / "nope.nemo"), tmp_path / "dl")
    with pytest.raises(ValueError, match="empty"):
        resolve_model("  ", tmp_path / "dl")


def test_an_unsupported_scheme_is_refused_not_looked_up_as_a_path(tmp_path):
    with pytest.raises(ValueError, match=r"s3://bucket/m\.nemo: unsupported.*models:/<name>@<alias>.*runs:/"):
        resolve_model("s3://bucket/m.nemo", tmp_path / "dl")


def test_models_uri_by_alias_and_by_version_is_downloaded_and_verified(tmp_path, client):
    reg = Registry(client)
    v1 = reg.register("asr", _folder(tmp_path, "v1", "model.nemo"), aliases=("challenger",))
    reg.register("asr", _folder(tmp_path, "v2", "model.nemo"), aliases=())
    got = resolve_model("models:/asr@challenger", tmp_path / "a", client=client)
    assert open(got, "rb").read() == b"weights of model.nemo" and got.startswith(str(tmp_path / "a"))
    assert resolve_model(f"models:/asr/{v1.version}", tmp_path / "b", client=client).endswith("model.nemo")
    for missing in ("models:/asr@nope", "models:/asr/99", "models:/nope/1"):
        with pytest.raises(LookupError, match=f"{missing}: no such"):
            resolve_model(missing, tmp_path / "c", client=client)
    with pytest.raises(ValueError, match="models:/asr: expected"):
        resolve_model("models:/asr", tmp_path / "c", client=client)


def test_models_uri_uses_the_explicit_tracking_uri(tmp_path, tracking_uri, monkeypatch):  # noqa: F811
    reg = Registry(get_client(tracking_uri))
    reg.register("asr", _folder(tmp_path, "v1", "model.nemo"), aliases=("challenger",))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}")
    got = resolve_model("models:/asr@challenger", tmp_path / "a", tracking_uri=tracking_uri)
    assert got.endswith("model.nemo")


def test_runs_uri_downloads_the_run_artifact(tmp_path, client):
    exp = client.create_experiment("resolve-test")
    run = client.create_run(exp).info.run_id
    client.log_artifacts(run, str(_folder(tmp_path, "m", "model.nemo", "model.json")), "model")
    client.set_terminated(run)
    folder = resolve_model(f"runs:/{run}/model", tmp_path / "a", client=client)
    assert folder.startswith(str(tmp_path / "a")) and folder.endswith("model.nemo")
    assert open(folder, "rb").read() == b"weights of model.nemo"
    assert resolve_model(f"runs:/{run}/model/model.nemo", tmp_path / "b", client=client).endswith(
        "model.nemo"
    )
    with pytest.raises(LookupError, match=f"runs:/{run}/nothing: no such artifact"):
        resolve_model(f"runs:/{run}/nothing", tmp_path / "c", client=client)
    with pytest.raises(LookupError, match="runs:/0123456789abcdef/model: no such run"):
        resolve_model("runs:/0123456789abcdef/model", tmp_path / "d", client=client)


class _Resolved(Exception):
    """Raised by the stand-in for the model-loading part: the test needs only what the step resolved."""


def test_the_steps_resolve_registry_uris_through_their_explicit_tracking_uri(
    tmp_path,
    tracking_uri,  # noqa: F811 (the fixture imported above)
    monkeypatch,
):
    """evaluate_wer and finetune_asr resolve `models:/` through the step's `mlflow_tracking_uri`, the store the
    pipeline names, not through $MLFLOW_TRACKING_URI / the repository's default store."""
    from components.evaluate_wer import core as evaluate_core
    from components.finetune_asr import core as finetune_core

    reg = Registry(get_client(tracking_uri))
    reg.register("asr", _folder(tmp_path, "v1", "model.nemo"), aliases=("challenger",))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}")
    seen = {}

    def loaded(what):
        def stand_in(*args, **kwargs):
            seen[what] = open(kwargs.get("base_model") or args[0], "rb").read()
            raise _Resolved

        return stand_in

    monkeypatch.setattr(evaluate_core, "evaluate", loaded("evaluate"))
    with pytest.raises(_Resolved):
        evaluate_core.run_step(
            str(tmp_path),
            "models:/asr@challenger",
            str(tmp_path / "v1"),
            "bg-BG",
            "",
            "",
            "",
            str(tmp_path / "e"),
            mlflow_tracking_uri=tracking_uri,
        )
    monkeypatch.setattr(finetune_core, "finetune", loaded("finetune"))
    with pytest.raises(_Resolved):
        finetune_core.run_finetune_step(
            tmp_path,
            "models:/asr@challenger",
            tmp_path / "ft",
            "target_langs=bg-BG",
            mlflow_tracking_uri=tracking_uri,
        )
    assert seen == {"evaluate": b"weights of model.nemo", "finetune": b"weights of model.nemo"}
