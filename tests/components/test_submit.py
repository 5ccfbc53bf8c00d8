"""`python -m pipelines submit`: the argument plumbing and exactly what kfp.Client is asked to send.

No Kubeflow Pipelines server can run here, so the client is a recorder whose every call is checked against
the real `kfp.Client` method signatures (a renamed argument in a kfp upgrade fails this test).
"""

from __future__ import annotations

import inspect
import json
import types

import kfp
import pytest
import yaml

from pipelines import submit as sub
from pipelines.__main__ import main


class RecordingClient:
    """Stands in for kfp.Client(host=...); answers like a server with or without the pipeline/experiment."""

    instances: list[RecordingClient] = []

    def __init__(self, existing_pipeline: str | None = None, existing_experiment: bool = False, **kwargs):
        inspect.signature(kfp.Client.__init__).bind(self, **kwargs)
        self.kwargs, self.calls = kwargs, []
        self.existing_pipeline, self.existing_experiment = existing_pipeline, existing_experiment
        RecordingClient.instances.append(self)

    def _record(self, name, *args, **kwargs):
        inspect.signature(getattr(kfp.Client, name)).bind(self, *args, **kwargs)
        self.calls.append((name, args, kwargs))

    def get_pipeline_id(self, name):
        self._record("get_pipeline_id", name)
        return self.existing_pipeline

    def upload_pipeline(self, path, **kw):
        self._record("upload_pipeline", path, **kw)
        self.uploaded = next(yaml.safe_load_all(open(path).read()))
        return types.SimpleNamespace(pipeline_id="p-new")

    def upload_pipeline_version(self, path, **kw):
        self._record("upload_pipeline_version", path, **kw)
        self.version_yaml = list(yaml.safe_load_all(open(path).read()))
        return types.SimpleNamespace(pipeline_version_id="v-1")

    def get_experiment(self, **kw):
        self._record("get_experiment", **kw)
        if not self.existing_experiment:
            raise ValueError("No experiment is found with name nemotron-asr.")
        return types.SimpleNamespace(experiment_id="e-old")

    def create_experiment(self, name, **kw):
        self._record("create_experiment", name, **kw)
        return types.SimpleNamespace(experiment_id="e-new")

    def run_pipeline(self, **kw):
        self._record("run_pipeline", **kw)
        return types.SimpleNamespace(run_id="r-1")


def _names(client):
    return [c[0] for c in client.calls]


def test_first_submission_uploads_pipeline_then_version_and_starts_a_run():
    client = None

    def factory(**kw):
        nonlocal client
        client = RecordingClient(**kw)
        return client

    params = sub.parse_overrides(
        [
            "target_langs=ro-RO",
            "max_steps=2000",
            "gpus=4",
            "lr=1",
            "gpu_node_selector={cloud.google.com/gke-accelerator: nvidia-h100-80gb}",
        ]
    )
    res = sub.submit("https://kfp.example.com/pipeline/", params, client_factory=factory, namespace="team-a")
    assert client.kwargs == {"host": "https://kfp.example.com/pipeline/", "namespace": "team-a"}
    assert _names(client) == [
        "get_pipeline_id",
        "upload_pipeline",
        "upload_pipeline_version",
        "get_experiment",
        "create_experiment",
        "run_pipeline",
    ]
    assert client.uploaded["pipelineInfo"]["name"] == "nemotron-asr-finetune"  # the compiled YAML went up
    _, _, run = client.calls[-1]
    assert run["pipeline_id"] == "p-new" and run["version_id"] == "v-1" and run["experiment_id"] == "e-new"
    # lr is a text parameter in the UI (empty = the recipe's), checked as a number before sending
    assert run["params"] == {
        "target_langs": "ro-RO",
        "max_steps": 2000,
        "gpus": 4,
        "lr": "1",
        "gpu_node_selector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
    }
    assert res.run_url == "https://kfp.example.com/pipeline/#/runs/details/r-1"
    assert res.version_name in run["job_name"]


def test_later_submission_adds_a_version_to_the_existing_pipeline():
    client = None

    def factory(**kw):
        nonlocal client
        client = RecordingClient(existing_pipeline="p-old", existing_experiment=True, **kw)
        return client

    sub.submit("http://kfp:8888", {}, client_factory=factory, existing_token="tok")
    assert client.kwargs["existing_token"] == "tok"
    assert _names(client) == ["get_pipeline_id", "upload_pipeline_version", "get_experiment", "run_pipeline"]
    _, _, version = client.calls[1]
    assert version["pipeline_id"] == "p-old"
    assert client.calls[-1][2]["experiment_id"] == "e-old" and client.calls[-1][2]["params"] == {}


@pytest.mark.parametrize(
    "item, why",
    [
        ("max_step=2", "not a pipeline parameter"),
        ("max_steps=two", "expected a int"),
        ("max_steps=2.5", "expected an integer"),
        ("gpu_tolerations={a: 1}", "expected a list"),
        ("noequals", "expected NAME=VALUE"),
        ("lr=fast", "lr: expected float"),
        ("recipe=nemotron99", "recipe"),
    ],
)
def test_bad_parameters_are_refused_before_anything_is_sent(item, why):
    with pytest.raises(ValueError, match=why):
        sub.parse_overrides([item])
    with pytest.raises(ValueError, match="given twice"):
        sub.parse_overrides(["seed=1", "seed=2"])


def test_string_parameters_keep_what_was_typed():
    p = sub.parse_overrides(["att_context_size=[56,3]", "data_rev=0123", "scheduler=noam"])
    assert p == {"att_context_size": "[56,3]", "data_rev": "0123", "scheduler": "noam"}


def test_cli_dry_run_prints_the_request_and_sends_nothing(capsys):
    assert main(["submit", "--host", "http://kfp", "--set", "max_steps=10", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "host": "http://kfp",
        "pipeline": "nemotron-asr-finetune",
        "experiment": "nemotron-asr",
        "params": {"max_steps": 10},
    }
    assert main(["submit", "--host", "http://kfp", "--set", "nope=1"]) == 2
    assert "not a pipeline parameter" in capsys.readouterr().err
