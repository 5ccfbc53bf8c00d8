"""The same register / promote / rollback paths against a real `mlflow server` on loopback (the cluster shape:
REST store, proxied artifacts), started and stopped by the test."""

from __future__ import annotations

import pytest

from components.register_model.core import register_candidate
from registry.__main__ import rollback_and_export
from registry.lock import LOCK_SUFFIX
from registry.mlflow_adapter import Registry, get_client
from registry.policy import CHALLENGER, CHAMPION
from tests.mlflow_server import mlflow_server
from tests.unit.test_registry import (  # noqa: F401
    _evaluation,
    _finetune_run_with_checkpoint,
    _migrated_registry_db,
    _model_dir,
)

pytestmark = pytest.mark.slow  # the server alone takes 10-20 s to come up on this machine


@pytest.fixture()
def server_uri(tmp_path, _migrated_registry_db):  # noqa: F811 (the fixture imported above)
    with mlflow_server(tmp_path / "mlflow", db=_migrated_registry_db, timeout_s=120) as uri:
        yield uri


def test_register_promote_rollback_through_a_running_server(tmp_path, server_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server_uri)
    reg = Registry(get_client(server_uri))
    versions = []
    for tag, passed in (("one", True), ("two", True), ("three", False)):
        d = _model_dir(tmp_path, tag, f"weights-{tag}".encode())
        ev, _ = _evaluation(tmp_path, f"ev-{tag}", passed, d)
        r = register_candidate(
            d, ev, "asr", data_md5=f"md5-{tag}", pipeline_run_id=f"run-{tag}", tracking_uri=server_uri
        )
        versions.append(r.version)
    v1, v2, v3 = versions
    info = reg.get("asr", v1)
    assert info.source.startswith("mlflow-artifacts:") and info.tags["data_md5"] == "md5-one"
    assert "## Word error rate" in reg.client.get_model_version("asr", v1).description
    assert reg.by_alias("asr", CHALLENGER).version == v3
    # registration is idempotent through the REST store too (tag search)
    again = register_candidate(
        tmp_path / "two", tmp_path / "ev-two.json", "asr", pipeline_run_id="run-two", tracking_uri=server_uri
    )
    assert again.version == v2 and len(reg.versions("asr")) == 3

    reg.promote("asr", v1, actor="ci")  # downloads through the server's artifact proxy and checks sha256
    reg.promote("asr", v2, actor="ci")
    with pytest.raises(PermissionError, match="gate FAILED"):
        reg.promote("asr", v3)
    assert reg.by_alias("asr", CHAMPION).version == v2  # a failed gate leaves champion where it was

    r = rollback_and_export(
        reg, "asr", "latency regression", actor="oncall", triton_repo=tmp_path / "triton_repo"
    )
    assert (r.from_version, r.to_version, r.triton_version) == (v2, v1, 1)
    assert (tmp_path / "triton_repo" / "asr_offline" / "1" / "model.nemo").read_bytes() == b"weights-one"
    assert reg.by_alias("asr", CHAMPION).version == v1
    assert [(e.version, e.op) for e in reg.history("asr")] == [
        (v1, "promote"),
        (v2, "promote"),
        (v1, "rollback"),
    ]
    assert reg.get("asr", v1).tags["rollback.reason"] == "latency regression"
    assert not [m for m in reg.client.search_registered_models() if m.name.endswith(LOCK_SUFFIX)]


def test_one_upload_registration_through_a_running_server(tmp_path, server_uri):
    """The fine-tune run logged model.nemo; registering it through an `mlflow server` (the cluster's REST
    store) failed: the server accepts an `mlflow-artifacts:` source only with the run_id of the run that holds
    it (INVALID_PARAMETER_VALUE "The run_id request parameter must identify the resource that contains the
    source"), and the version was created with the registration run's id."""
    d, ft_run = _finetune_run_with_checkpoint(tmp_path, server_uri)
    ev, _ = _evaluation(tmp_path, "ev", True, d)
    r = register_candidate(d, ev, "asr", pipeline_run_id="run-1", tracking_uri=server_uri)
    reg = Registry(get_client(server_uri))
    info = reg.get("asr", r.version)
    assert info.tags["model_run_id"] == ft_run and info.run_id != ft_run  # run_id: the registration's run
    assert "model" not in {a.path for a in reg.client.list_artifacts(info.run_id)}  # no second upload
    assert reg.client.list_artifacts(info.run_id)  # the model card, evaluation and gate record are there
    nemo = reg.download(info, tmp_path / "dl")  # verified against checkpoint_sha256
    assert nemo.read_bytes() == b"weights-finetuned"
    reg.promote("asr", r.version)  # reads the gate record from the registration run
