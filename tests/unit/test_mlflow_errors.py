"""MLflow errors are matched by their `error_code` (the same on the sqlite store and through `mlflow server`),
never by message text, which MLflow is free to reword."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST

from registry import mlflow_errors
from registry.lock import RegistryLock
from registry.mlflow_adapter import Registry, get_client


def test_codes_decide_not_messages():
    exists = MlflowException("reworded: a model of that name is present", error_code=RESOURCE_ALREADY_EXISTS)
    gone = MlflowException("reworded: nothing there", error_code=RESOURCE_DOES_NOT_EXIST)
    other = MlflowException("Registered Model already exists / not found", error_code=INTERNAL_ERROR)
    assert mlflow_errors.already_exists(exists) and not mlflow_errors.already_exists(other)
    assert mlflow_errors.missing(gone) and not mlflow_errors.missing(other)
    assert not mlflow_errors.missing(ValueError("not found"))


class _Client:
    """A client whose errors carry only the code (their text says nothing a message match would catch)."""

    tracking_uri = "sqlite:///unused.db"

    def __init__(self):
        self.models: set[str] = set()

    def create_registered_model(self, name, tags=None, description=""):
        if name in self.models:
            raise MlflowException("E1", error_code=RESOURCE_ALREADY_EXISTS)
        self.models.add(name)

    def get_registered_model(self, name):
        raise MlflowException("E2", error_code=RESOURCE_DOES_NOT_EXIST)

    def search_model_versions(self, _filter):
        raise MlflowException("E3", error_code=RESOURCE_DOES_NOT_EXIST)


def test_registry_and_lock_use_the_codes():
    c = _Client()
    c.models.add("asr--lock")
    lock = RegistryLock(c, "asr")
    assert lock._try_create() is False  # taken: RESOURCE_ALREADY_EXISTS, whatever the text
    assert lock._owner() is None  # gone: RESOURCE_DOES_NOT_EXIST
    reg = Registry(c)
    assert reg.history("asr") == [] and reg.find_registration("asr", "k") is None


def test_real_store_codes(tmp_path):
    client = get_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("m")
    with pytest.raises(MlflowException) as e:
        client.create_registered_model("m")
    assert mlflow_errors.already_exists(e.value)
    with pytest.raises(MlflowException) as e:
        client.get_registered_model("absent")
    assert mlflow_errors.missing(e.value)
