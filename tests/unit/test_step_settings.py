"""Issue 14, build item 2: each step's settings live in one typed record, and adding one takes two edits (the
record, and the code that uses it).

The test adds a dummy field to each step's record (a generated subclass, monkeypatched where the pipeline and
the component look the record up) and follows it, with no other edit, from params.yaml / `run-local --set`
through the compiled pipeline spec (a pipeline parameter with its UI help, and a line of the task's `settings`
text, so the task's cache key changes with it) into the keyword arguments of the step's core function, called
by the component's own body with the text Kubeflow resolves.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from types import SimpleNamespace

import pytest
import yaml

from components.common import settings as st
from pipelines import settings as ps
from pipelines.local import PARAMS_FILE, load_params, pipeline_arguments

# section -> (component module, component, record module, record, core module, core function, the task's name)
STEPS = {
    "validate_data": (
        "components.validate_data.component",
        "validate_data",
        "components.validate_data.settings",
        "ValidateSettings",
        "components.validate_data.core",
        "run_step",
        "validate-data",
    ),
    "build_manifest": (
        "components.build_manifest.component",
        "build_manifest",
        "components.build_manifest.settings",
        "ManifestSettings",
        "components.build_manifest.fanout",
        "build_step",
        "build-manifest",
    ),
    "evaluate_wer": (
        "components.evaluate_wer.component",
        "evaluate_wer",
        "components.evaluate_wer.settings",
        "EvaluateSettings",
        "components.evaluate_wer.core",
        "run_step",
        "evaluate-wer",
    ),
    "register_model": (
        "components.register_model.component",
        "register_model",
        "components.register_model.settings",
        "RegisterSettings",
        "components.register_model.core",
        "register_candidate",
        "register-model",
    ),
    "export_triton": (
        "components.export_triton.component",
        "export_triton",
        "components.export_triton.settings",
        "ExportSettings",
        "components.export_triton.core",
        "export_step",
        "export-triton",
    ),
}

# What each component takes besides its `settings` text: artifacts, upstream outputs, and the settings of other
# records that it shares (named here, so that a step's own setting can never slip back into its signature).
EXPLICIT_INPUTS = {
    "validate_data": {"data_root", "data_docs", "report", "fail_on_error", "data_version"},
    "build_manifest": {"data_root", "manifests", "seed", "duplicate_audio", "data_version", "validation"},
    "evaluate_wer": {
        "manifests",
        "base_model_uri",
        "candidate",
        "target_langs",
        "replay_langs",
        "metrics",
        "report",
        "evaluation",
        "att_context_size",  # the preflight's resolved lookahead (replaces the record's)
        "model_name",
        "mlflow_tracking_uri",
        "pipeline_run_id",
        "champion_alias",
    },
    "register_model": {
        "candidate",
        "evaluation",
        "data_md5",
        "base_model_uri",
        "git_commit",
        "mlflow_tracking_uri",
        "pipeline_run_id",
        "model_card",
        "data_rev",
        "data_commit",
        "base_model_resolved",
        "base_model_sha256",
        "parameters",
        "evaluation_run_id",
    },
    "export_triton": {
        "model_name",
        "alias",
        "att_context_size",
        "mlflow_tracking_uri",
        "offline_att_context_size",
        "candidate_sha256",
    },
}
# Fields a component does not pass to its core because the DAG uses them (the fan-out's width).
DAG_ONLY = {"build_manifest": {"build_pods"}}
# Where a core function's **kwargs go (a record field must be a parameter of the function that reads it).
KWARGS_TO = {
    ("components.validate_data.core", "run_step"): ("components.validate_data.core", "validate_dataset"),
    ("components.build_manifest.fanout", "build_step"): ("components.build_manifest.core", "build_manifests"),
    ("components.evaluate_wer.core", "run_step"): ("components.evaluate_wer.core", "evaluate"),
}


def _fn(module: str, name: str):
    return getattr(importlib.import_module(module), name)


def _accepted(module: str, name: str) -> set[str]:
    params = inspect.signature(_fn(module, name)).parameters
    out = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    if any(p.kind == p.VAR_KEYWORD for p in params.values()) and (module, name) in KWARGS_TO:
        out |= _accepted(*KWARGS_TO[(module, name)])
    return out


@pytest.mark.parametrize("section", sorted(STEPS))
def test_each_component_takes_its_record_as_one_text_plus_its_declared_inputs(section):
    comp_mod, comp, rec_mod, rec, core_mod, core_fn, _ = STEPS[section]
    cls = _fn(rec_mod, rec)
    assert ps.PIPELINE_RECORDS[section] is cls
    inputs = set(inspect.signature(_fn(comp_mod, comp).python_func).parameters)
    assert inputs == {"settings"} | EXPLICIT_INPUTS[section]
    fields = {k.name for k in st.knobs(cls)}
    # no setting of the step's own record is a component input of its own (the shared ones belong elsewhere)
    assert not (fields & EXPLICIT_INPUTS[section]) - {"att_context_size"}, section
    # every field reaches a parameter of the core (else a new field would need a third edit, or be dropped)
    missing = fields - DAG_ONLY.get(section, set()) - _accepted(core_mod, core_fn)
    assert not missing, f"{section}: {sorted(missing)} are not parameters of {core_fn}"


def _dummy_record(section: str, cls: type):
    name = f"dummy_{section}"
    field = st.knob("dummy-default", "A setting added by the test, in one edit")
    return name, dataclasses.make_dataclass(f"Dummy{cls.__name__}", [(name, str, field)], bases=(cls,))


class _Reached(Exception):
    def __init__(self, args, kwargs):
        super().__init__("the core was reached")
        self.args_, self.kwargs = args, kwargs


def _fake(tmp_path, name: str):
    path = tmp_path / name
    return SimpleNamespace(path=str(path), uri=str(path), metadata={}, log_metric=lambda *a: None)


def _component_call(section: str, tmp_path) -> dict:
    """The component's arguments other than `settings` (fakes with a path for its artifacts)."""
    f = lambda n: _fake(tmp_path, n)  # noqa: E731
    return {
        "validate_data": dict(data_root="data", data_docs=f("docs"), report=f("report")),
        "build_manifest": dict(data_root="data", manifests=f("manifests")),
        "evaluate_wer": dict(
            manifests=f("m"),
            base_model_uri="base.nemo",
            candidate=f("c"),
            target_langs="bg-BG",
            replay_langs="",
            metrics=f("metrics"),
            report=f("report"),
            evaluation=f("evaluation"),
            att_context_size="[56,3]",
        ),
        "register_model": dict(
            candidate=f("c"),
            evaluation=f("e"),
            data_md5="md5",
            base_model_uri="base.nemo",
            git_commit="c0ffee",
            mlflow_tracking_uri="",
            pipeline_run_id="run",
            model_card=f("card"),
        ),
        "export_triton": dict(model_name="asr"),
    }[section]


def _resolve(constant: str, arguments: dict) -> str:
    """What Kubeflow does to a string constant with pipeline channels: each placeholder becomes its value."""
    return re.sub(
        r"\{\{\$\.inputs\.parameters\['pipelinechannel--([a-z0-9_]+)'\]\}\}",
        lambda m: str(arguments[m.group(1)]),
        constant,
    )


def _task(spec: dict, name: str) -> dict:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp_name, comp in spec["components"].items():
        if comp_name.startswith(("comp-condition", "comp-for-loop")):
            tasks.update(comp["dag"]["tasks"])
    return tasks[name]


@pytest.mark.parametrize("section", sorted(STEPS))
def test_a_new_setting_reaches_the_core_with_one_edit(section, tmp_path, monkeypatch):
    from kfp import compiler

    from pipelines.asr_pipeline import PIPELINE_NAME, asr_finetune_pipeline

    comp_mod, comp, rec_mod, rec, core_mod, core_fn, task_name = STEPS[section]
    name, dummy = _dummy_record(section, _fn(rec_mod, rec))
    # the one edit: the record gains a field (where the pipeline and the component look the record up)
    monkeypatch.setitem(ps.PIPELINE_RECORDS, section, dummy)
    monkeypatch.setattr(importlib.import_module(rec_mod), rec, dummy)

    # params.yaml and `run-local --set` (one function reads both) know it, and check it
    params = yaml.safe_load(PARAMS_FILE.read_text())
    params.setdefault(section, {})[name] = "from-params-yaml"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert pipeline_arguments(load_params(tmp_path / "params.yaml"), "b.nemo")[name] == "from-params-yaml"
    arguments = pipeline_arguments(load_params(overrides=[f"{section}.{name}=from-set"]), "b.nemo")
    assert arguments[name] == "from-set"
    with pytest.raises(st.SettingsError, match=rf"\[{section}\]: unknown setting\(s\) \['{name}x'\]"):
        pipeline_arguments(load_params(overrides=[f"{section}.{name}x=1"]), "b.nemo")

    # the compiled pipeline: a parameter with its UI help, and a line of the step's `settings` text
    pipeline = ps.pipeline_from_records(PIPELINE_NAME, "test")(
        asr_finetune_pipeline.pipeline_func.__wrapped__
    )
    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    ui = spec["root"]["inputDefinitions"]["parameters"][name]
    assert ui["defaultValue"] == "dummy-default" and ui["description"].startswith(
        "A setting added by the test"
    )
    text = _task(spec, task_name)["inputs"]["parameters"]["settings"]["runtimeValue"]["constant"]
    assert f"{name}={{{{$.inputs.parameters['pipelinechannel--{name}']}}}}" in text.split("\n")
    # every field is a channel of the text, so the task's cache key changes with any of them
    lines = [line.partition("=") for line in text.split("\n")]
    assert [n for n, _, _ in lines] == [k.name for k in st.knobs(dummy)]
    assert all(v == f"{{{{$.inputs.parameters['pipelinechannel--{n}']}}}}" for n, _, v in lines)

    # the component's body, given the text Kubeflow resolves, passes it to its core by name
    def reached(*args, **kwargs):
        raise _Reached(args, kwargs)

    monkeypatch.setattr(importlib.import_module(core_mod), core_fn, reached)
    call = _component_call(section, tmp_path)
    with pytest.raises(_Reached) as got:
        _fn(comp_mod, comp).python_func(settings=_resolve(text, arguments), **call)
    assert got.value.kwargs[name] == "from-set"


def test_settings_text_with_a_multi_line_gate_policy_round_trips():
    """A gate policy may be YAML text (tests/e2e): its lines continue the value; a `name=` line is a setting."""
    from components.evaluate_wer.settings import EvaluateSettings

    policy = "\nmode: streaming\nmetric: wer_norm\nrules:\n  target_ceiling: {max_wer: 100.0}\n"
    text = (
        f"att_context_size=\ngate_policy={policy}\ngate_floor_override_reason=a=b\noffline_att_context_size="
    )
    s = st.decode(EvaluateSettings, text)
    assert s.gate_policy == policy.rstrip("\n") and s.gate_floor_override_reason == "a=b"
    assert s.att_context_size is None and s.offline_att_context_size is None
    assert st.decode(EvaluateSettings, st.encode(st.to_mapping(s))) == s
    with pytest.raises(st.SettingsError, match="reads as a setting"):
        st.encode({"gate_policy": "mode: x\nmetric=wer"})
    with pytest.raises(st.SettingsError, match=r"evaluate_wer\.settings line 'mode: x'"):
        st.decode(EvaluateSettings, "mode: x", "evaluate_wer.")


def test_empty_settings_text_is_the_records_defaults():
    from components.build_manifest.settings import ManifestSettings

    assert st.step_kwargs(ManifestSettings, "", "build_manifest") == st.to_mapping(ManifestSettings())
    with pytest.raises(st.SettingsError, match=r"build_manifest\.val_ratio: expected float"):
        st.step_kwargs(ManifestSettings, "val_ratio=a lot", "build_manifest")


# the step CLIs: one flag per field of the record (the fine-tune's way), so a new field is a flag with no edit
CLIS = {
    "validate_data": (
        "components.validate_data.__main__",
        "validate_dataset",
        ["--data-root", "d", "--out", "o"],
    ),
    "build_manifest": (
        "components.build_manifest.__main__",
        "build_manifests",
        ["--data-root", "d", "--out", "o"],
    ),
    "evaluate_wer": (
        "components.evaluate_wer.__main__",
        "run_step",
        ["--base", "b", "--candidate", "c", "--manifests", "m", "--out", "o", "--target-langs", "bg-BG"],
    ),
}


@pytest.mark.parametrize("section", sorted(CLIS))
def test_a_new_setting_is_a_step_cli_flag_that_reaches_the_core(section, monkeypatch):
    cli_mod, core_fn, required = CLIS[section]
    _, _, rec_mod, rec, _, _, _ = STEPS[section]
    name, dummy = _dummy_record(section, _fn(rec_mod, rec))
    cli = importlib.import_module(cli_mod)
    monkeypatch.setattr(cli, rec, dummy)

    def reached(*args, **kwargs):
        raise _Reached(args, kwargs)

    monkeypatch.setattr(cli, core_fn, reached)
    with pytest.raises(_Reached) as got:
        cli.main([*required, "--" + name.replace("_", "-"), "from-the-cli"])
    assert got.value.kwargs[name] == "from-the-cli"
    for k in st.knobs(_fn(rec_mod, rec)):  # every field of the record, at its default when no flag is given
        if k.name not in DAG_ONLY.get(section, ()) and k.name != "build_root":
            assert got.value.kwargs[k.name] == k.default, k.name


def test_the_evaluate_cli_keeps_its_older_flag_names(monkeypatch):
    import components.evaluate_wer.__main__ as cli

    def reached(*args, **kwargs):
        raise _Reached(args, kwargs)

    monkeypatch.setattr(cli, "run_step", reached)
    with pytest.raises(_Reached) as got:
        cli.main([*CLIS["evaluate_wer"][2], "--policy", "p.yaml", "--floor-override-reason", "why"])
    assert (
        got.value.kwargs["gate_policy"] == "p.yaml"
        and got.value.kwargs["gate_floor_override_reason"] == "why"
    )


def test_a_multi_line_gate_policy_reaches_evaluation_through_the_compiled_pipeline(tmp_path):
    """The e2e tests give the gate policy as YAML text: the resolved `settings` text still decodes to it."""
    from kfp import compiler

    from components.evaluate_wer.settings import EvaluateSettings
    from pipelines.asr_pipeline import asr_finetune_pipeline

    policy = "\nmode: streaming\nmetric: wer_norm\nrules:\n  target_ceiling: {max_wer: 100.0}\n"
    arguments = pipeline_arguments(load_params(), "b.nemo")
    arguments.update(gate_policy=policy, gate_floor_override_reason="e2e: a=b", att_context_size="[56,3]")
    compiler.Compiler().compile(asr_finetune_pipeline, str(tmp_path / "p.yaml"))
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    text = _task(spec, "evaluate-wer")["inputs"]["parameters"]["settings"]["runtimeValue"]["constant"]
    s = st.decode(EvaluateSettings, _resolve(text, arguments), "evaluate_wer.")
    assert s.gate_policy == policy.rstrip("\n") and s.gate_floor_override_reason == "e2e: a=b"
    assert s.att_context_size == "[56,3]" and s.offline_att_context_size is None
