"""Recipe presets and the settings records: what a user's first Nemotron run really trains with.

Defects pinned here (issue: full-size rehearsal):
- the lr trap: the pipeline's default lr 2e-3 overrode the Nemotron recipe's Noam multiplier 0.1, so the run
  trained at a peak of ~1.4e-5 instead of ~3.1e-4, and batch_size 16 overrode its batch_duration;
- `--set finetune_asr.replay_langs=` (meaning "no replay") became None and died inside kfp.
"""

from __future__ import annotations

import pytest

from components.common import settings as st
from components.finetune_asr.settings import FinetuneSettings, apply, peak_lr
from pipelines.local import load_params, pipeline_arguments


def _finetune_settings(overrides: list[str]) -> FinetuneSettings:
    args = pipeline_arguments(load_params(overrides=overrides), "base.nemo")
    return st.from_mapping(FinetuneSettings, {k.name: args[k.name] for k in st.knobs(FinetuneSettings)})


def test_nemotron35_preset_trains_at_the_recipe_lr_and_batching():
    s = _finetune_settings(["finetune_asr.recipe=nemotron35"])
    r = apply(s)
    assert r.optim["lr"] == 0.1 and r.optim["sched"]["name"] == "NoamAnnealing"
    assert peak_lr(r.optim) == pytest.approx(3.125e-4)  # 0.1 * 1024^-0.5 * 100^-0.5
    assert r.train_ds["batch_duration"] == 200 and r.train_ds.get("batch_size") is None
    assert r.trainer["precision"] == "bf16-mixed" and r.deploy_att_context_size == [56, 3]
    assert r.train_ds["default_prompt_mode"] == "unified"


def test_tiny_demo_preset_is_the_demo_recipe():
    r = apply(_finetune_settings([]))
    assert r.optim["lr"] == 2e-3 and r.optim["sched"] == {
        "name": "CosineAnnealing",
        "warmup_steps": 20,
        "min_lr": 1e-5,
    }
    assert r.train_ds["batch_size"] == 16 and r.trainer["precision"] == 32
    assert r.deploy_att_context_size == [56, 1]


def test_an_explicit_knob_overrides_the_recipe_and_is_recorded():
    s = _finetune_settings(["finetune_asr.recipe=nemotron35", "finetune_asr.lr=0.05"])
    assert apply(s).optim["lr"] == 0.05
    assert s.overrides() == {"recipe": "nemotron35", "lr": 0.05} | {
        k: v for k, v in s.overrides().items() if k not in ("recipe", "lr")
    }
    assert "lr" in s.overrides() and "batch_size" not in s.overrides()


def test_pipeline_arguments_have_the_pipeline_parameters_types():
    import inspect

    from pipelines.asr_pipeline import asr_finetune_pipeline

    args = pipeline_arguments(
        load_params(overrides=["finetune_asr.lr=0.05", "finetune_asr.batch_duration=10"]), "base.nemo"
    )
    sig = inspect.signature(asr_finetune_pipeline.pipeline_func)
    assert set(args) == set(sig.parameters)
    for name, p in sig.parameters.items():
        assert isinstance(args[name], p.annotation), (name, args[name], p.annotation)
    assert args["lr"] == "0.05" and args["batch_duration"] == "10.0" and args["scheduler"] == ""


def test_empty_set_value_means_empty_not_none():
    s = _finetune_settings(["finetune_asr.replay_langs="])
    assert s.replay_langs == "" and s.replays == []


def test_bad_settings_name_the_field():
    with pytest.raises(st.SettingsError, match="lr"):
        st.from_mapping(FinetuneSettings, {"lr": "fast"})
    with pytest.raises(st.SettingsError, match="recipe"):
        FinetuneSettings(recipe="nemotron99")
    with pytest.raises(st.SettingsError, match=r"unknown setting\(s\) \['learning_rate'\]"):
        st.from_mapping(FinetuneSettings, {"learning_rate": "1"})
    with pytest.raises(st.SettingsError, match="batch_size and batch_duration"):
        FinetuneSettings(batch_size=8, batch_duration=60.0)


def test_settings_text_round_trips():
    s = FinetuneSettings(recipe="nemotron35", replay_langs="", lr=0.05, train_att_context_size="[56,3]")
    assert st.decode(FinetuneSettings, st.encode(st.to_mapping(s))) == s


def test_every_knob_is_a_pipeline_parameter_with_its_help_and_params_yaml_keys_are_knobs(tmp_path):
    import yaml
    from kfp import compiler

    from pipelines.asr_pipeline import asr_finetune_pipeline
    from pipelines.settings import PIPELINE_RECORDS

    compiler.Compiler().compile(asr_finetune_pipeline, str(tmp_path / "p.yaml"))
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    ui = spec["root"]["inputDefinitions"]["parameters"]
    for section, cls in PIPELINE_RECORDS.items():
        for k in st.knobs(cls):
            assert k.name in ui, f"{section}.{k.name} is not a pipeline parameter"
            assert ui[k.name].get("description", "").startswith(k.help.split(";")[0][:40]), k.name
    params = load_params()
    for section, values in params.items():
        if section in PIPELINE_RECORDS:
            known = {k.name for k in st.knobs(PIPELINE_RECORDS[section])}
            assert set(values) <= known, f"params.yaml {section}: {set(values) - known}"


def test_the_freeze_policy_is_the_recipes_unless_set(tmp_path):
    """tiny-demo keeps the tiny base's encoder: on a clean clone's demo, the whole-model fine-tune raised es-ES
    (a replay language) by +9.9 WER points and the gate refused it; NVIDIA's recipe trains every layer. A run
    that sets freeze gets its value; a recipe file with an unknown policy is refused by name."""
    assert apply(_finetune_settings([])).freeze == "encoder"
    assert apply(_finetune_settings(["finetune_asr.recipe=nemotron35"])).freeze == "none"
    s = _finetune_settings(["finetune_asr.freeze=none"])
    assert apply(s).freeze == "none" and s.overrides() == {"freeze": "none"}
    bad = tmp_path / "r.yaml"
    bad.write_text("model: {train_ds: {}, optim: {name: adamw, lr: 1.0}}\ntrainer: {}\nfreeze: decoder\n")
    with pytest.raises(st.SettingsError, match=r"r\.yaml.*freeze.*decoder"):
        apply(FinetuneSettings(recipe=str(bad)))
