"""A registry that fails is not a registry without a champion.

Defect pinned here (issue 17's "MLflow errors by error_code", a release-safety hole): `Registry.by_alias`
returned None on *any* exception. evaluate_wer reads the champion through it, so a registry that failed (a
corrupt store, a server answering 500, an expired token) read as "no champion yet": the gate then compared the
candidate with the base only, and a candidate worse than the serving champion could pass. Only MLflow's
"does not exist" means "not set"; anything else must fail the step, naming the model.
"""

from __future__ import annotations

import pytest

from registry.mlflow_adapter import Registry, get_client
from registry.policy import CHAMPION
from registry.resolve import find_version


@pytest.fixture
def reg(tmp_path):
    db = tmp_path / "mlflow.db"
    client = get_client(f"sqlite:///{db}")
    r = Registry(client)
    r.client.create_registered_model("asr")
    return r, db


def test_an_unset_alias_and_an_unknown_model_are_none(reg):
    r, _ = reg
    assert r.by_alias("asr", CHAMPION) is None
    assert r.by_alias("no-such-model", CHAMPION) is None
    with pytest.raises(LookupError, match="models:/asr@champion"):
        find_version(r, "models:/asr@champion")


def test_a_failing_registry_is_an_error_not_no_champion(reg):
    r, db = reg
    with open(db, "r+b") as f:  # the store breaks under the running client (not "the alias is unset")
        f.write(b"this is not an sqlite database" * 4)
    with pytest.raises(Exception) as e:
        r.by_alias("asr", CHAMPION)
    assert not isinstance(e.value, LookupError)
    with pytest.raises(Exception) as e:
        find_version(r, "models:/asr@champion")
    assert not isinstance(e.value, LookupError)  # evaluate_wer must fail, not compare with the base only
    with pytest.raises(Exception) as e:
        r.versions("asr")  # not "no versions"
    assert "not a database" in str(e.value)
