"""The compiled pipeline YAML is what the Kubeflow UI gets: it must load back and carry every step."""

from __future__ import annotations

import yaml
from google.protobuf import json_format
from kfp import compiler, components
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.asr_pipeline import asr_finetune_pipeline

STEPS = ["validate-data", "build-manifest", "finetune-asr", "evaluate-wer", "register-model", "release-gate",
         "promote-model", "export-triton"]


def test_compile_loads_back_with_every_step(tmp_path):
    out = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(asr_finetune_pipeline, str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())  # strict: unknown fields raise
    executors = set(spec.deployment_spec.fields["executors"].struct_value.fields)
    for step in STEPS:
        assert f"exec-{step}" in executors, step
    # the gate: promote/export sit inside the dsl.If branch
    dag = docs[0]["root"]["dag"]["tasks"]
    gate = next(t for name, t in dag.items() if name.startswith("condition"))
    assert "release-gate" in gate["triggerPolicy"]["condition"]
    # the cluster settings travel with the YAML
    finetune = docs[0]["deploymentSpec"]["executors"]["exec-finetune-asr"]["container"]
    assert finetune["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-finetune-asr"]
    assert platform["tolerations"][0]["key"] == "nvidia.com/gpu"
    # and the YAML loads back as a component with the pipeline's parameters
    comp = components.load_component_from_file(str(out))
    assert {"data_root", "base_model_uri", "target_langs", "att_context_size"} <= set(comp.component_spec.inputs)
