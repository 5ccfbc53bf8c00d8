"""Issue 16: the conversion fan-out (dsl.ParallelFor of build_manifest_shard pods + the merge) run by kfp.local
with the pipeline's own components, against the one-pod build: the same manifests, clips and summary."""

# no `from __future__ import annotations`: kfp reads the pipeline signature's real types

import builtins
import json
from pathlib import Path

import pytest
from kfp import dsl, local

from components.build_manifest.component import build_manifest, build_manifest_shard, fanout_shards
from components.build_manifest.fanout import build_dir_for
from components.validate_data.component import validate_data
from tests.unit.test_build_manifest import make_corpus
from tests.unit.test_datascale import _comparable


@dsl.component
def materialized(data_root: str) -> str:
    """Stands in for materialize_data: the data root reaches the fan-out as an upstream task's output."""
    return data_root


@dsl.pipeline(name="fanout-check")
def fanout_pipeline(data_root: str, build_root: str, build_pods: int) -> dsl.Dataset:
    """The data part of pipelines/asr_pipeline.py, wired the same way."""
    data = materialized(data_root=data_root)
    v = validate_data(data_root=data.output, settings="min_duration=0.3\nmax_duration=30.0")
    shards = fanout_shards(n_shards=build_pods, data_root=data.output, data_version="md5-of-this-version")
    with dsl.ParallelFor(shards.output) as job:
        converted = build_manifest_shard(
            data_root=job.data_root,
            build_root=build_root,
            shard=job.shard,
            n_shards=build_pods,
            data_version=job.data_version,
            validation=v.outputs["report"],
        )
    m = build_manifest(
        data_root=data.output,
        settings=f"val_ratio=0.25\ntest_ratio=0.25\nbuild_root={build_root}\nbuild_pods={build_pods}",
        seed=0,
        validation=v.outputs["report"],
    ).after(converted)
    return m.outputs["manifests"]


@pytest.fixture(scope="module")
def kfp_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kfp")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    print_ = builtins.print
    yield root
    # kfp.local's per-task print patch, interleaved across the ParallelFor's threads, can outlive the run
    # (pipelines/local.py restores it the same way); a later NeMo import in this process fails on it
    builtins.print = print_


def test_fan_out_in_kfp_local_equals_one_pod(kfp_root, tmp_path):
    data = tmp_path / "data"
    make_corpus(data, speakers=4, utts=3)
    builds = {}
    for pods in (2, 1):
        root = tmp_path / f"pvc{pods}"
        art = fanout_pipeline(data_root=str(data), build_root=str(root), build_pods=pods)
        files = sorted(p.name for p in Path(art.output.path).iterdir())
        assert files == ["build.json", "summary.json", "test.jsonl", "train.jsonl", "val.jsonl"]  # no audio
        builds[pods] = build_dir_for(root, data)
        summary = json.loads((builds[pods] / "summary.json").read_text())
        assert summary["n_converted"] == 0 and summary["n_reused"] == 36  # the pods converted everything
    assert _comparable(builds[2]) == _comparable(builds[1])
