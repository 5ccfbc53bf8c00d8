"""Issue 16 items 1, 2 and 7 through the real pipeline (kfp.local, NeMo, DVC local remote, MLflow sqlite).

A git + DVC repository with two committed dataset versions (v2 drops rows from v1). The run names the OLDER
one by git revision: it trains on it and its lineage says so. An unchanged re-run trains, evaluates, registers
and exports nothing new; a changed training parameter trains again. `reproduce` re-runs the registered version
from its lineage: identical WER and identical weights on CPU (the .nemo file's sha256 is not expected to match:
docs/REPRODUCE.md).
"""

from __future__ import annotations

import csv
import json
import time

import pytest

from pipelines.local import pipeline_arguments, run_local, task_outputs
from registry.mlflow_adapter import Registry, get_client
from registry.policy import BASE
from tests.e2e.world import (
    FLOOR_OVERRIDE,
    PERMISSIVE,
    dvc_repo,
    dvc_version,
    sh,
    tiny_base_model,
    tiny_corpus,
    tiny_params,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "versions-asr"
CODE = "e2e-versions-code"  # the code version both runs and `reproduce` see ($ASR_GIT_COMMIT)


def _drop_train_rows(data, n: int) -> None:
    """v2 of the dataset: the last `n` bg-BG train rows removed from metadata.csv (their audio stays)."""
    path = data / "metadata.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    bg = [i for i, r in enumerate(rows) if r["lang"] == "bg-BG" and r["split"] == "train"][-n:]
    keep = [r for i, r in enumerate(rows) if i not in bg]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)


def _runs(uri: str, step: str) -> int:
    import mlflow

    client = mlflow.MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(exps, filter_string=f"tags.step = '{step}'", max_results=1000))


def make_world(root, mp: pytest.MonkeyPatch) -> dict:
    """The git + DVC repository with two dataset versions, the registered base, and the pipeline's cold run
    on the older version (`cold_s`: its wall time). tests/bench/bench_rerun.py times re-runs of it."""
    mp.setenv("ASR_GIT_COMMIT", CODE)
    tiny_corpus(root / "data")
    dvc_repo(root)
    v1 = dvc_version(root, "data v1")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    base = tiny_base_model(root)  # the base's tokenizer spells all of v1
    Registry(get_client(uri)).register(f"{MODEL}-base", base, aliases=(BASE,))
    _drop_train_rows(root / "data", 3)
    v2 = dvc_version(root, "data v2: three bg-BG rows fewer")

    params = tiny_params(MODEL, "run.data_rev=HEAD~1", f"run.data_repo={root}")
    args = pipeline_arguments(params, f"models:/{MODEL}-base@{BASE}")
    args.update(
        data_root=str(root / "nonexistent"),
        data_cache=str(root / "versions"),
        triton_repo=str(root / "triton_repo"),
        mlflow_tracking_uri=uri,
        work_root=str(root / "work"),
        gate_policy=PERMISSIVE,
        gate_floor_override_reason=FLOOR_OVERRIDE,
    )
    t0 = time.monotonic()
    cold = run_local(args, root / "kfp")
    return {
        "root": root,
        "uri": uri,
        "args": args,
        "v1": v1,
        "v2": v2,
        "cold": cold,
        "cold_s": time.monotonic() - t0,
        "commit_v1": sh("git", "rev-parse", "HEAD~1", cwd=root).strip(),
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    yield make_world(tmp_path_factory.mktemp("versions"), mp)
    mp.undo()


def test_an_older_data_rev_trains_on_that_version_and_the_lineage_shows_it(world):
    cold, reg = world["cold"], Registry(get_client(world["uri"]))
    assert world["v1"] != world["v2"]
    data = task_outputs(cold, "materialize-data")
    assert data["data_md5"] == world["v1"] and data["data_commit"] == world["commit_v1"]
    counts = json.loads(task_outputs(cold, "build-manifest")["Output"])["counts"]
    assert counts["train"]["bg-BG"] == 8  # v1's rows (v2 has 5)
    (version,) = reg.versions(MODEL)
    tags = version.tags
    assert tags["data_md5"] == world["v1"] and tags["data_rev"] == "HEAD~1"
    assert tags["data_commit"] == world["commit_v1"] and tags["git_commit"] == CODE
    assert tags["base_model_resolved"] == f"models:/{MODEL}-base/1" and len(tags["base_model_sha256"]) == 64
    assert not [k for k, v in tags.items() if str(v).strip().lower() == "unknown"]
    lineage = json.loads(reg._artifact_bytes(version, "lineage.json"))
    assert float(lineage["parameters"]["max_steps"]) == 2 and float(lineage["parameters"]["seed"]) == 0
    assert lineage["parameters"]["recipe"] == "tiny-demo" and lineage["environment"]["torch"]


def test_an_unchanged_rerun_trains_evaluates_registers_and_exports_nothing(world):
    reg, uri = Registry(get_client(world["uri"])), world["uri"]
    before = (
        [v.version for v in reg.versions(MODEL)],
        _runs(uri, "finetune_asr"),
        sorted(p.name for p in (world["root"] / "triton_repo" / "asr_offline").iterdir()),
    )
    t0 = time.monotonic()
    rerun = run_local(world["args"], world["root"] / "kfp")
    seconds = time.monotonic() - t0
    after = (
        [v.version for v in reg.versions(MODEL)],
        _runs(uri, "finetune_asr"),
        sorted(p.name for p in (world["root"] / "triton_repo" / "asr_offline").iterdir()),
    )
    assert after == before  # no version, no training run, no Triton version
    assert not (rerun / "finetune-asr").exists() and not (rerun / "evaluate-wer").exists()  # cache hits
    assert task_outputs(rerun, "register-model")["version"] == before[0][-1]
    print(
        f"\n[versions] cold run {world['cold_s']:.1f} s, unchanged re-run {seconds:.1f} s: "
        f"ratio {seconds / world['cold_s']:.3f}"
    )


def test_a_changed_training_parameter_trains_again(world):
    reg, uri = Registry(get_client(world["uri"])), world["uri"]
    trained = _runs(uri, "finetune_asr")
    run = run_local({**world["args"], "max_steps": 3}, world["root"] / "kfp")
    assert (run / "finetune-asr" / "model" / "model.nemo").is_file()
    assert _runs(uri, "finetune_asr") == trained + 1 and len(reg.versions(MODEL)) == 2
    assert json.loads((run / "finetune-asr" / "model" / "model.json").read_text())["train_steps"] == 3


def test_reproduce_re_runs_the_registered_version_identically(world):
    from pipelines.reproduce import ReproduceRefused, check_checkout, reproduce

    result = reproduce(MODEL, "1", tracking_uri=world["uri"], pipeline_root=world["root"] / "reproduce")
    print("\n" + "\n".join(result.lines(0.0)))
    assert result.wer and all(a == b for a, b in result.wer.values())  # WER identical on CPU
    assert result.weights_equal  # bit-identical weights; the .nemo archive itself may differ (docs)
    assert result.reproduced
    assert not [d for d in result.differences if not d.startswith("environment ")], result.differences
    with pytest.raises(ReproduceRefused, match=r"dirty .*commit or stash"):
        check_checkout(CODE, "abc+dirty.123")
    with pytest.raises(ReproduceRefused, match="`git checkout e2e-versions-code`"):
        check_checkout(CODE, "another")
