"""export_triton core: numbered versions written atomically, keep-K, sha256 refusal, configs Triton can parse.

The checkpoint here is a few bytes standing in for a .nemo: export copies and hashes it, it never opens it
(the e2e test serves a real one).
"""

from __future__ import annotations

import json
import os
import py_compile
import stat
import sys
from pathlib import Path

import pytest

from components.common.io import sha256_file
from components.export_triton import core
from components.export_triton.core import (
    MODELS,
    ExportError,
    ServingConfig,
    export_model,
    parse_att_context_size,
    render_config,
)


@pytest.fixture
def nemo(tmp_path: Path) -> Path:
    p = tmp_path / "ckpt" / "model.nemo"
    p.parent.mkdir()
    p.write_bytes(b"not really a nemo tarball, but hashed and copied like one\n" * 100)
    return p


def _versions(repo: Path, model: str) -> list[str]:
    return sorted(p.name for p in (repo / model).iterdir() if p.is_dir())


def test_four_exports_make_versions_1_to_4_and_keep_the_last_three(tmp_path: Path, nemo: Path):
    repo = tmp_path / "triton_repo"
    results = []
    for i in range(1, 5):  # four candidates (the same one again would be no new version)
        new = nemo.with_suffix(".new")
        new.write_bytes(nemo.read_bytes() + b"%d" % i)
        os.replace(new, nemo)  # a new inode: earlier versions hold hardlinks to the old one
        sha = sha256_file(nemo)
        results.append(
            export_model(nemo, repo, sha, {"name": "m", "version": str(i)}, [56, 1], keep_versions=3)
        )

    assert [r.version for r in results] == [1, 2, 3, 4]
    assert results[3].removed == [str(repo / m / "1") for m in MODELS]
    for model in MODELS:
        # only numbered folders remain: no temp or half-deleted folders left behind
        assert _versions(repo, model) == ["2", "3", "4"]
        vdir = repo / model / "4"
        assert sorted(p.name for p in vdir.iterdir()) == ["model.json", "model.nemo", "model.py"]
        assert sha256_file(vdir / "model.nemo") == sha
        meta = json.loads((vdir / "model.json").read_text())
        assert meta["sha256"] == sha and meta["version"] == 4 and meta["model"] == model
        assert meta["att_context_size"] == [56, 1] and meta["model_info"] == {"name": "m", "version": "4"}
        runtime = "model_offline.py" if model == "asr_offline" else "model_streaming.py"
        assert (vdir / "model.py").read_text() == (core.RUNTIME / runtime).read_text()
        # readable by a server running as another user
        for f in (vdir / "model.json", repo / model / "config.pbtxt"):
            assert f.stat().st_mode & stat.S_IROTH
        assert results[3].paths[model] == str(vdir)


def test_keep_one_and_numbering_continues_after_the_highest_version(tmp_path: Path, nemo: Path):
    repo = tmp_path / "repo"
    (repo / "asr_streaming" / "7").mkdir(parents=True)  # e.g. an older export, or a manual rollback copy
    r = export_model(nemo, repo, None, {}, None, keep_versions=1)
    assert r.version == 8
    assert _versions(repo, "asr_offline") == ["8"] and _versions(repo, "asr_streaming") == ["8"]


def test_sha256_mismatch_is_refused_and_nothing_is_written(tmp_path: Path, nemo: Path):
    repo = tmp_path / "repo"
    with pytest.raises(ExportError, match=r"model\.nemo: sha256 .* does not match the expected 0{64}"):
        export_model(nemo, repo, "0" * 64, {}, None)
    assert not repo.exists()

    export_model(nemo, repo, sha256_file(nemo), {}, None)
    before = sorted(str(p) for p in repo.rglob("*"))
    with pytest.raises(ExportError, match="refusing to export"):
        export_model(nemo, repo, "f" * 64, {}, None)
    assert sorted(str(p) for p in repo.rglob("*")) == before


def test_failure_while_building_a_version_leaves_no_partial_folder(tmp_path: Path, nemo: Path, monkeypatch):
    repo = tmp_path / "repo"
    export_model(nemo, repo, None, {}, None)

    def disk_full(src, dst, sha):
        Path(dst).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(core, "_place_checkpoint", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_model(nemo, repo, None, {}, [56, 1])  # another lookahead: a new version
    for model in MODELS:
        assert [p.name for p in (repo / model).iterdir() if p.is_dir()] == ["1"]


def test_bad_inputs_name_the_problem(tmp_path: Path, nemo: Path):
    with pytest.raises(ExportError, match=r"missing\.nemo: checkpoint not found"):
        export_model(tmp_path / "missing.nemo", tmp_path / "repo", None, {}, None)
    with pytest.raises(ExportError, match="keep_versions"):
        export_model(nemo, tmp_path / "repo", None, {}, None, keep_versions=0)
    with pytest.raises(ExportError, match="not JSON-serialisable"):
        export_model(nemo, tmp_path / "repo", None, {"x": object()}, None)
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[56,1]", [56, 1]),
        (" [56, 13] ", [56, 13]),
        ("56,0", [56, 0]),
        ([70, 6], [70, 6]),
        ("", None),
        (None, None),
        ("[-1,0]", [-1, 0]),
    ],
)
def test_parse_att_context_size(value, expected):
    assert parse_att_context_size(value) == expected


@pytest.mark.parametrize("value", ["[56]", "[56,1,2]", "fast", "[56,x1]", [56, -1]])
def test_parse_att_context_size_rejects(value):
    with pytest.raises(ExportError, match="att_context_size"):
        parse_att_context_size(value)


def _parse_config(text: str):
    """Parse with Triton's own ModelConfig protobuf (strict: unknown fields raise)."""
    text_format = pytest.importorskip("google.protobuf.text_format")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_configs_parse_and_say_what_the_models_expect(tmp_path: Path, nemo: Path):
    from google.protobuf.json_format import MessageToDict

    repo = tmp_path / "repo"
    export_model(nemo, repo, None, {}, [56, 1], serving=ServingConfig(max_batch_size=4))

    off = _parse_config((repo / "asr_offline" / "config.pbtxt").read_text())
    assert off.name == "asr_offline" and off.backend == "python" and off.max_batch_size == 4
    d = MessageToDict(off)
    assert [(i["name"], i["dataType"], i["dims"]) for i in d["input"]] == [
        ("AUDIO", "TYPE_FP32", ["-1"]),
        ("LANG", "TYPE_STRING", ["1"]),
    ]
    assert [(o["name"], o["dataType"], o["dims"]) for o in d["output"]] == [("TEXT", "TYPE_STRING", ["1"])]
    assert "dynamicBatching" in d and "sequenceBatching" not in d
    assert d["versionPolicy"] == {"latest": {"numVersions": 1}}
    assert d["parameters"]["att_context_size"]["stringValue"] == "[56, 1]"

    st = _parse_config((repo / "asr_streaming" / "config.pbtxt").read_text())
    d = MessageToDict(st)
    assert st.name == "asr_streaming" and "dynamicBatching" not in d
    # several streams per step: the oldest strategy batches chunks of different sequences into one execute()
    assert st.max_batch_size == ServingConfig.stream_max_batch_size > 1
    assert int(d["sequenceBatching"]["oldest"]["maxCandidateSequences"]) >= st.max_batch_size
    assert [i["name"] for i in d["input"]] == ["AUDIO_CHUNK", "LANG", "SAMPLE_RATE"]
    sb = d["sequenceBatching"]
    assert int(sb["maxSequenceIdleMicroseconds"]) == ServingConfig.max_sequence_idle_us
    kinds = type(st.sequence_batching).Control.Kind
    controls = {c.name: c.control[0] for c in st.sequence_batching.control_input}
    assert {n: kinds.Name(c.kind) for n, c in controls.items()} == {
        "START": "CONTROL_SEQUENCE_START",
        "END": "CONTROL_SEQUENCE_END",
        "READY": "CONTROL_SEQUENCE_READY",
        "CORRID": "CONTROL_SEQUENCE_CORRID",
    }
    assert list(controls["START"].int32_false_true) == [0, 1]
    assert MessageToDict(controls["CORRID"])["dataType"] == "TYPE_UINT64"
    assert d["versionPolicy"] == {"latest": {"numVersions": 1}}
    assert d["parameters"]["att_context_size"]["stringValue"] == "[56, 1]"


def test_default_lookahead_renders_an_empty_parameter():
    text = render_config("asr_streaming", None, ServingConfig())
    cfg = _parse_config(text)
    assert cfg.parameters["att_context_size"].string_value == ""
    assert "$" not in text


def test_runtime_sources_compile(tmp_path: Path):
    for name in ("model_offline.py", "model_streaming.py"):
        py_compile.compile(str(core.RUNTIME / name), cfile=str(tmp_path / f"{name}c"), doraise=True)
        src = (core.RUNTIME / name).read_text()
        # the UTF-8 locale must be set before torch/NeMo are imported (docs/SERVING.md)
        assert src.index("setlocale(locale.LC_CTYPE") < src.index("import numpy")
        assert "class TritonPythonModel" in src


def test_cli_uses_the_sidecar_sha256_and_refuses_a_mismatch(tmp_path: Path, nemo: Path, capsys):
    from components.export_triton.__main__ import main

    repo = tmp_path / "repo"
    (nemo.parent / "model.json").write_text(json.dumps({"sha256": sha256_file(nemo), "languages": ["bg-BG"]}))
    assert main(["--nemo", str(nemo), "--repo", str(repo), "--att-context-size", "[56,1]"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == 1
    assert json.loads((repo / "asr_offline" / "1" / "model.json").read_text())["model_info"]["languages"] == [
        "bg-BG"
    ]

    (nemo.parent / "model.json").write_text(json.dumps({"sha256": "a" * 64}))
    assert main(["--nemo", str(nemo), "--repo", str(repo)]) == 1
    assert "does not match" in capsys.readouterr().err
    assert _versions(repo, "asr_offline") == ["1"]


def test_component_declares_version_and_sha256_outputs():
    pytest.importorskip("kfp")
    from components.export_triton.component import export_triton

    spec = export_triton.component_spec
    assert set(spec.outputs) == {"version", "sha256"}
    assert {"model_name", "settings", "alias", "att_context_size"} <= set(
        spec.inputs
    )  # settings: triton_repo, ...


# --------------------------------------------------------------------------- the server launcher (no start)
serving_server = pytest.importorskip("serving.server")
needs_triton = pytest.mark.skipif(
    not serving_server.tritonserver_available(),
    reason="nvidia-pytriton's tritonserver binary is not installed",
)


@needs_triton
def test_backend_dir_has_the_stub_for_this_python(tmp_path: Path):
    backends = serving_server.prepare_backends(tmp_path)
    names = sorted(p.name for p in (backends / "python").iterdir())
    assert names == ["libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    assert os.access(backends / "python" / "triton_python_backend_stub", os.X_OK)


@needs_triton
def test_server_env_puts_this_interpreters_libdir_first_and_the_project_on_pythonpath():
    import sysconfig

    env = serving_server.server_env({"LD_LIBRARY_PATH": "/usr/lib/other", "PATH": "/usr/bin"})
    libs = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert libs[0] == sysconfig.get_config_var("LIBDIR") and libs[-1] == "/usr/lib/other"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(serving_server.PROJECT_ROOT)


@needs_triton
def test_server_command_uses_explicit_model_control(tmp_path: Path):
    srv = serving_server.TritonServer(tmp_path, models=["asr_offline"], state_dir=tmp_path / "state")
    cmd = srv.command()
    assert "--model-control-mode=explicit" in cmd and "--load-model=asr_offline" in cmd
    # loopback only: the local server is not reachable from other machines
    for endpoint in ("http", "grpc", "metrics"):
        assert f"--{endpoint}-address=127.0.0.1" in cmd
    assert len({srv.http_port, srv.grpc_port, srv.metrics_port}) == 3
    with pytest.raises(serving_server.ServerError, match="config.pbtxt: missing"):
        srv.start()


def test_backend_refuses_a_checkpoint_that_does_not_match_its_sidecar(tmp_path):
    """What runtime/model_*.py call in initialize(): serve only the sha256 the export recorded."""
    import json as _json

    from components.common.io import sha256_file
    from components.export_triton.backend_utils import config_param, load_verified_checkpoint

    (tmp_path / "model.nemo").write_bytes(b"approved")
    (tmp_path / "model.json").write_text(_json.dumps({"sha256": sha256_file(tmp_path / "model.nemo")}))
    path, meta = load_verified_checkpoint(str(tmp_path))
    assert path.endswith("model.nemo") and meta["sha256"]
    (tmp_path / "model.nemo").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="refusing to serve"):
        load_verified_checkpoint(str(tmp_path))
    cfg = {"parameters": {"att_context_size": {"string_value": "[56,1]"}}}
    assert config_param(cfg, "att_context_size") == "[56,1]" and config_param(cfg, "missing", "x") == "x"


@pytest.mark.parametrize("strip", [True, False])
def test_strip_lang_tags_option_reaches_both_configs_and_the_backend_filter(strip: bool):
    """`auto` mode makes the model write <xx-XX> tags; the export option decides whether the server removes
    them. Text without a tag is never touched (served text stays byte-identical to in-process NeMo)."""
    from google.protobuf.json_format import MessageToDict

    from components.export_triton.backend_utils import lang_tag_filter

    for model in ("asr_offline", "asr_streaming"):
        text = render_config(model, [56, 1], ServingConfig(strip_lang_tags=strip))
        # the JSON Triton hands model.py keeps the proto field names (string_value)
        cfg = MessageToDict(_parse_config(text), preserving_proto_field_name=True)
        assert cfg["parameters"]["strip_lang_tags"]["string_value"] == str(strip).lower()
        tags = lang_tag_filter(cfg)
        tagged = "Hola a todos. <es-ES> Bonjour. <fr-FR>"
        assert tags(tagged) == ("Hola a todos. Bonjour." if strip else tagged)
        assert tags(" no  tag here ") == " no  tag here "


def test_exporting_the_same_checkpoint_again_adds_no_version(tmp_path: Path, nemo: Path):
    """Issue 16 item 7: export is never cached, so a re-run on the same candidate must be idempotent."""
    repo, sha = tmp_path / "repo", sha256_file(nemo)
    first = export_model(nemo, repo, sha, {}, [56, 1])
    again = export_model(nemo, repo, sha, {}, [56, 1])
    assert (first.version, first.reused) == (1, False) and (again.version, again.reused) == (1, True)
    assert _versions(repo, "asr_offline") == ["1"] and _versions(repo, "asr_streaming") == ["1"]
    assert core.serving_version(repo, sha, [56, 1]) == 1 and core.serving_version(repo, sha, [56, 3]) is None
    other = export_model(nemo, repo, sha, {}, [56, 3])  # another operating point is a new version
    assert (other.version, other.reused) == (2, False)


@needs_triton
def test_server_start_names_a_model_that_fails_to_load_without_waiting_the_timeout(tmp_path: Path):
    """A model whose initialize() raises leaves the server not-ready for good (strict readiness): start()
    must read the repository index anyway and name the model and reason, not wait out startup_timeout_s
    (the rehearsal's 900 s wait in CI ended with a log tail that never named the failure)."""
    import time as _time

    model = tmp_path / "repo" / "broken"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        'name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "X", data_type: TYPE_FP32, dims: [ 1 ] }]\n'
        'output [{ name: "Y", data_type: TYPE_FP32, dims: [ 1 ] }]\n'
        "instance_group [{ kind: KIND_CPU, count: 1 }]\n"
    )
    (model / "1" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('checkpoint is unreadable on purpose')\n"
    )
    srv = serving_server.TritonServer(
        tmp_path / "repo", models=["broken"], state_dir=tmp_path / "state", startup_timeout_s=240
    )
    t0 = _time.monotonic()
    with pytest.raises(serving_server.ServerError, match="broken failed to load.*unreadable on purpose"):
        srv.start()
    assert _time.monotonic() - t0 < 120
