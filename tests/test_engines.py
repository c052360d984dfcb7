"""Engines: manifest logic, batch profiles and the no-TensorRT path (tier 1, CPU), and real
TensorRT builds / parity / C++ runner (tier 3, `tensorrt` marker, skipped without TensorRT)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from vitdeploy.engines import manifest as mf
from vitdeploy.engines.profiles import profile_from_batches
from vitdeploy.errors import CheckFailed, UserError
from vitdeploy.fileio import file_sha256

from conftest import BUILDER_ERR, requires_builder, requires_trt


def _tiny_onnx(path, batch="batch"):
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])
    ax = helper.make_tensor("ax", TensorProto.INT64, [2], [2, 3])
    g = helper.make_graph([helper.make_node("ReduceMean", ["images", "ax"], ["logits"], keepdims=0)],
                          "tiny", [x], [y], [ax])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    helper.set_model_props(m, {"vitdeploy.model": "tiny", "vitdeploy.precision": "fp32"})
    onnx.save(m, str(path))
    return path


def _manifest(**over):
    base = mf.make_manifest(
        engine_path="/x/m.engine", onnx_path="/x/m.onnx", onnx_sha256="a" * 64,
        onnx_metadata={"vitdeploy.model": "swin_t"}, precision="fp16",
        profile={"images": {"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [8, 3, 224, 224]}},
        inputs=[{"name": "images", "shape": ["batch", 3, 224, 224], "dtype": "float32"}],
        outputs=[{"name": "logits", "shape": ["batch", 1000], "dtype": "float32"}],
        tensorrt_version="10.16.0.1", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
        plugin_lib="/x/libvitdeploy_plugins.so", plugin_lib_sha256="b" * 64, engine_sha256="c" * 64,
        build_time_s=12.3456,
        builder_options={"min_batch": 1, "opt_batch": 4, "max_batch": 8, "opt_level": 3, "workspace_gib": None,
                         "timing_cache": "/x/cache.bin"})
    base.update(over)
    return base


# ---------------------------------------------------------------- tier 1: manifest

def test_manifest_roundtrip_and_fields(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    m = _manifest()
    path = mf.write_manifest(mf.manifest_path(engine), m)
    assert path.name == "m.engine.json"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers
    got = mf.read_manifest(engine)
    assert got == json.loads(json.dumps(m))
    for key in ("vitdeploy_version", "tensorrt_version", "gpu_name", "compute_capability", "precision",
                "profile", "onnx_sha256", "plugin_lib_sha256", "onnx_metadata", "inputs", "outputs",
                "build_time_s", "builder_options"):
        assert key in got


def test_manifest_missing_or_foreign(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(UserError, match="no manifest"):
        mf.read_manifest(engine)
    mf.manifest_path(engine).write_text('{"hello": 1}')
    with pytest.raises(UserError, match="not a vitdeploy engine manifest"):
        mf.read_manifest(engine)
    mf.manifest_path(engine).write_text("{broken")
    with pytest.raises(UserError, match="unreadable"):
        mf.read_manifest(engine)


def test_check_manifest_same_setup_is_clean():
    m = _manifest()
    assert mf.check_manifest(m, trt_version="10.16.0.1", gpu_name="NVIDIA H100 80GB HBM3",
                             compute_capability="9.0", plugin_lib_sha256="b" * 64) == ([], [])


def test_check_manifest_reports_each_difference():
    m = _manifest()
    refusals, notes = mf.check_manifest(m, trt_version="11.4.0.106", gpu_name="NVIDIA L4", compute_capability="8.9",
                                        plugin_lib_sha256="d" * 64)
    text = "\n".join(refusals)
    assert len(refusals) == 3 and notes == []
    assert "10.16.0.1" in text and "11.4.0.106" in text
    assert "9.0" in text and "8.9" in text
    assert "plugin library" in text
    missing, _ = mf.check_manifest(m, trt_version="10.16.0.1", gpu_name="NVIDIA H100 80GB HBM3",
                                   compute_capability="9.0", plugin_lib_sha256=None)
    assert len(missing) == 1 and "no plugin library" in missing[0]
    # an engine without plugin layers does not care about the library
    noplug = _manifest(plugin_lib_sha256=None, plugin_lib_path=None)
    assert mf.check_manifest(noplug, trt_version="10.16.0.1", gpu_name="NVIDIA H100 80GB HBM3",
                             compute_capability="9.0", plugin_lib_sha256=None) == ([], [])


def test_other_gpu_with_the_same_compute_capability_is_a_warning():
    """TensorRT itself only warns when a plan runs on another GPU model of the same compute capability."""
    refusals, notes = mf.check_manifest(_manifest(), trt_version="10.16.0.1", gpu_name="NVIDIA H200",
                                        compute_capability="9.0", plugin_lib_sha256="b" * 64)
    assert refusals == [] and len(notes) == 1
    assert "NVIDIA H100 80GB HBM3" in notes[0] and "NVIDIA H200" in notes[0]


def test_rebuild_command_uses_recorded_options():
    cmd = mf.rebuild_command(_manifest(), "/x/out dir/m.engine")
    assert cmd.startswith("vitdeploy build /x/m.onnx -o '/x/out dir/m.engine'")
    for part in ("--plugin-lib /x/libvitdeploy_plugins.so", "--min-batch 1", "--opt-batch 4", "--max-batch 8",
                 "--timing-cache /x/cache.bin"):
        assert part in cmd
    assert "--plugin-lib" not in mf.rebuild_command(_manifest(plugin_lib_sha256=None, plugin_lib_path=None))


def test_assert_compatible_message(tmp_path, monkeypatch):
    """The environment probe is replaced by fixed values; the comparison and message are real."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    lib = tmp_path / "libvitdeploy_plugins.so"
    lib.write_bytes(b"lib v2")
    import hashlib

    m = _manifest(engine_sha256=hashlib.sha256(b"plan").hexdigest(), plugin_lib_sha256="b" * 64)
    mf.write_manifest(mf.manifest_path(engine), m)
    monkeypatch.setattr(mf, "check_host_can_run", lambda *a: None)  # RTX/GPU host checks: test_engines_rtx.py
    monkeypatch.setattr(mf, "current_environment", lambda flavour=None: {
        "tensorrt_version": "11.4.0.106", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    with pytest.raises(CheckFailed) as ei:
        mf.assert_compatible(engine, plugin_lib=str(lib))
    msg = str(ei.value)
    assert "10.16.0.1" in msg and "11.4.0.106" in msg and "plugin library" in msg
    assert f"vitdeploy build /x/m.onnx -o {engine}" in msg and "--max-batch 8" in msg
    assert "\n" not in msg
    # same setup + same library -> OK; a replaced engine file is caught by its sha256
    monkeypatch.setattr(mf, "current_environment", lambda flavour=None: {
        "tensorrt_version": "10.16.0.1", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    mf.write_manifest(mf.manifest_path(engine), dict(m, plugin_lib_sha256=file_sha256(lib)))
    assert mf.assert_compatible(engine, plugin_lib=str(lib))["precision"] == "fp16"
    monkeypatch.setattr(mf, "current_environment", lambda flavour=None: {
        "tensorrt_version": "10.16.0.1", "gpu_name": "NVIDIA H200", "compute_capability": "9.0"})
    with pytest.warns(mf.EngineWarning, match="NVIDIA H200"):
        assert mf.assert_compatible(engine, plugin_lib=str(lib))["precision"] == "fp16"
    with pytest.raises(UserError, match="nope.so: plugin library not found"):
        mf.assert_compatible(engine, plugin_lib=str(tmp_path / "nope.so"))
    engine.write_bytes(b"other plan")
    with pytest.raises(CheckFailed, match="sha256 differs"):
        mf.assert_compatible(engine, plugin_lib=str(lib))
    with pytest.raises(UserError, match="not found"):
        mf.assert_compatible(tmp_path / "nope.engine")


# ---------------------------------------------------------------- tier 1: profiles

def test_profile_dynamic_batch():
    p = profile_from_batches(["batch", 3, 224, 224], 1, 4, 16)
    assert p == {"min": [1, 3, 224, 224], "opt": [4, 3, 224, 224], "max": [16, 3, 224, 224]}


def test_profile_static_batch():
    assert profile_from_batches([2, 3, 672, 672], 2, 2, 2)["max"] == [2, 3, 672, 672]
    with pytest.raises(UserError, match="static batch of 2"):
        profile_from_batches([2, 3, 672, 672], 1, 2, 4)


@pytest.mark.parametrize("mn,op,mx,msg", [
    (0, 1, 1, ">= 1"), (2, 1, 4, "min <= opt <= max"), (1, 8, 4, "min <= opt <= max"), (1.5, 2, 2, "integers"),
])
def test_profile_bad_batches(mn, op, mx, msg):
    with pytest.raises(UserError, match=msg):
        profile_from_batches(["batch", 3, 224, 224], mn, op, mx)


def test_profile_dynamic_resolution_rejected():
    with pytest.raises(UserError, match="only the batch may vary"):
        profile_from_batches(["batch", 3, "h", "w"], 1, 1, 1)


# ---------------------------------------------------------------- tier 1: no TensorRT

def test_build_reads_the_onnx_through_artifact_and_input_errors(tmp_path):
    from vitdeploy.artifact import TensorInfo, open_artifact
    from vitdeploy.engines.build import build_engine

    path = _tiny_onnx(tmp_path / "t.onnx")
    art = open_artifact(path)
    assert art.inputs == [TensorInfo("images", "float32", ["batch", 3, 8, 8])]
    assert art.precision == "fp32" and art.metadata == {"model": "tiny", "precision": "fp32"}
    with pytest.raises(UserError, match="not found"):
        build_engine(tmp_path / "missing.onnx", tmp_path / "m.engine")
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(UserError, match="not a readable ONNX"):
        build_engine(tmp_path / "junk.onnx", tmp_path / "m.engine")
    with pytest.raises(UserError, match="min <= opt <= max"):
        build_engine(path, tmp_path / "m.engine", min_batch=4, opt_batch=2, max_batch=8)
    static = _tiny_onnx(tmp_path / "s.onnx", batch=1)
    with pytest.raises(UserError, match="static batch"):
        build_engine(static, tmp_path / "m.engine", max_batch=8)
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.skipif(BUILDER_ERR is None, reason="a TensorRT is installed here; the no-TensorRT message cannot be shown")
def test_build_without_tensorrt_says_how_to_install(tmp_path):
    from vitdeploy.engines.build import build_engine

    path = _tiny_onnx(tmp_path / "t.onnx")
    with pytest.raises(UserError) as ei:
        build_engine(path, tmp_path / "m.engine", max_batch=4, opt_batch=2)
    msg = str(ei.value)
    assert msg.startswith("TensorRT is not installed: pip install 'vitdeploy[tensorrt-rtx]'")
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.engine.json").exists()


@pytest.mark.skipif(BUILDER_ERR is None, reason="a TensorRT is installed here; the no-TensorRT message cannot be shown")
def test_trt_runner_without_tensorrt(tmp_path):
    from vitdeploy.engines.backends import make_artifact_runner
    from vitdeploy.engines.trt_runner import TrtRunner

    with pytest.raises(UserError, match="TensorRT is not installed"):
        TrtRunner(tmp_path / "m.engine")
    with pytest.raises(UserError, match="TensorRT is not installed"):
        make_artifact_runner("trt", str(tmp_path / "m.engine"))


# ---------------------------------------------------------------- tier 1: what the parser gets

@pytest.fixture(scope="module")
def sparsevit_onnx(tmp_path_factory):
    """A real SparseViT export (swin_t, 224 px, half the windows of stages 0-2 pruned): custom nodes + bodies."""
    return _export_model(tmp_path_factory.mktemp("sv"), "swin_t", 0.5, "fp32")[1]


def test_no_plugin_build_parses_an_inlined_model(sparsevit_onnx):
    """Defect 1: the registry is process-global, so a no-plugin build must not show the parser one vitdeploy
    node; the inlined copy computes exactly what the original does."""
    import onnxruntime as ort

    from vitdeploy.engines.build import parse_plan

    proto = onnx.load(str(sparsevit_onnx))
    assert sum(n.domain == "vitdeploy" for n in proto.graph.node) > 0
    plan = parse_plan(proto, plugin_available=False)
    assert not plan.load_plugin and plan.vitdeploy_nodes > 0
    assert [n for n in plan.model.graph.node if n.domain not in ("", "ai.onnx")] == []
    assert not plan.model.functions and all(o.domain != "vitdeploy" for o in plan.model.opset_import)
    onnx.checker.check_model(plan.model)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString()).run(None, {"images": x})
    got = ort.InferenceSession(plan.model.SerializeToString()).run(None, {"images": x})
    assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))

    with_lib = parse_plan(proto, plugin_available=True)
    assert with_lib.load_plugin and with_lib.model is proto


def _tiny_onnx_with_scatternd():
    """A graph with a standard ScatterND (what a --portable SparseViT has instead of vitdeploy nodes)."""
    import tempfile

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [4, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])
    ind = helper.make_tensor("ind", TensorProto.INT64, [1, 1], [2])
    upd = helper.make_tensor("upd", TensorProto.FLOAT, [1, 3], [1.0, 2.0, 3.0])
    g = helper.make_graph([helper.make_node("ScatterND", ["images", "ind", "upd"], ["y"])], "p", [x], [y], [ind, upd])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    path = os.path.join(tempfile.mkdtemp(), "portable.onnx")
    onnx.save(m, path)
    return path


def test_library_is_not_loaded_for_a_model_without_vitdeploy_nodes():
    """Defect 2: a portable model never needs (or gets) our library, even when one is available."""
    from vitdeploy.engines.build import parse_plan

    proto = onnx.load(_tiny_onnx_with_scatternd())
    plan = parse_plan(proto, plugin_available=True)
    assert not plan.load_plugin and plan.vitdeploy_nodes == 0 and plan.model is proto


def test_only_vitdeploy_plugin_v3_layers_count_as_a_plugin_dependency():
    """The manifest's plugin dependency comes from the network: TensorRT's own plugin layers (legacy
    ScatterND in namespace "") do not make an engine depend on our library."""
    from vitdeploy.engines.build import count_plugin_layers

    layers = [("PLUGIN_V3", "vitdeploy"), ("PLUGIN_V2", ""), ("PLUGIN_V2", "vitdeploy"), ("PLUGIN_V3", ""),
              ("SCATTER", None), ("PLUGIN_V3", "vitdeploy")]
    assert count_plugin_layers(layers) == 2
    assert count_plugin_layers([("GATHER", None)]) == 0


def test_function_bodies_use_names_no_outer_tensor_can_capture():
    """TensorRT 10.7's local-function importer let an outer tensor named like a body tensor capture it."""
    from vitdeploy.export.window_nodes import gather_function, scatter_function

    for fn in (gather_function(20), scatter_function(20)):
        names = list(fn.input) + list(fn.output) + [t for n in fn.node for t in list(n.input) + list(n.output)]
        assert names and all(t.startswith("vitdeploy_") for t in names if t), [t for t in names
                                                                               if not t.startswith("vitdeploy_")]


def test_bad_plugin_lib_env_is_a_user_error_naming_it(tmp_path, monkeypatch):
    """Item 7: a bad $VITDEPLOY_PLUGIN_LIB was swallowed and `build` made an engine without the plugin."""
    from vitdeploy.engines.build import build_engine

    onnx_path = _tiny_onnx(tmp_path / "t.onnx")

    missing = tmp_path / "gone" / "libvitdeploy_plugins.so"
    monkeypatch.setenv("VITDEPLOY_PLUGIN_LIB", str(missing))
    with pytest.raises(UserError, match=f"{missing}: VITDEPLOY_PLUGIN_LIB"):
        build_engine(onnx_path, tmp_path / "m.engine")
    monkeypatch.delenv("VITDEPLOY_PLUGIN_LIB")
    with pytest.raises(UserError, match=f"{missing}: plugin library not found"):
        build_engine(onnx_path, tmp_path / "m.engine", plugin_lib=str(missing))
    assert not (tmp_path / "m.engine").exists()


# ---------------------------------------------------------------- tier 3: TensorRT

def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def _cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _export_model(tmp_path, name, sparsity=None, precision="fp32"):
    """Export through vitdeploy's own export job; returns (the unfolded torch reference, onnx path).

    A float sparsity means "that ratio in stages 0-2": at 224 stage 3 is a single window, which
    no ratio > 0 can prune."""
    from vitdeploy import jobs
    from vitdeploy.models.sparsity import SparsityConfig

    if isinstance(sparsity, float):
        sparsity = SparsityConfig(ratios=[[sparsity] * 2, [sparsity] * 2, [sparsity] * 6, [0.0, 0.0]])
    path = tmp_path / f"{name}_{precision}.onnx"
    jobs.export(name, path, img_size=224, sparsity=sparsity, precision=precision, validate=False)
    model = jobs.build_reference(name, img_size=224, sparsity=sparsity)
    return model, path


def _torch_ref(model, x):
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(x))
    return (out if isinstance(out, torch.Tensor) else out[0]).numpy()


def _plugin_lib_or_skip():
    try:
        from vitdeploy import plugins

        path = plugins.library_path(None)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"vitdeploy plugin library not available: {e}")
    if not path or not os.path.isfile(str(path)):
        pytest.skip("vitdeploy plugin library not built (vitdeploy plugins build)")
    return str(path)


@pytest.mark.tensorrt
@requires_trt
def test_trt_build_tiny_and_run(tmp_path):
    from vitdeploy.engines.build import build_engine
    from vitdeploy.engines.trt_runner import TrtRunner

    onnx_path = _tiny_onnx(tmp_path / "t.onnx")
    msgs = []
    man = build_engine(onnx_path, tmp_path / "t.engine", plugin_lib=False, min_batch=1, opt_batch=2,
                       max_batch=4, timing_cache=str(tmp_path / "cache.bin"), progress=msgs.append)
    assert (tmp_path / "t.engine").is_file() and (tmp_path / "t.engine.json").is_file()
    assert (tmp_path / "cache.bin").is_file()
    assert man["plugin_lib_sha256"] is None and man["profile"]["images"]["max"] == [4, 3, 8, 8]
    assert man["onnx_metadata"]["vitdeploy.model"] == "tiny" and msgs
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    with TrtRunner(tmp_path / "t.engine") as r:
        assert r.device == "cuda" and r.inputs[0].name == "images"
        y = r.infer({"images": x})["logits"]
        np.testing.assert_allclose(y, x.mean((2, 3)), rtol=1e-5, atol=1e-6)
        with pytest.raises(UserError, match="outside the engine's profile"):
            r.infer({"images": np.zeros((5, 3, 8, 8), np.float32)})
    # a manifest from another TensorRT refuses to load, with the rebuild command
    m = mf.read_manifest(tmp_path / "t.engine")
    mf.write_manifest(mf.manifest_path(tmp_path / "t.engine"), dict(m, tensorrt_version="0.0.0"))
    with pytest.raises(CheckFailed, match="vitdeploy build"):
        TrtRunner(tmp_path / "t.engine")


@pytest.mark.tensorrt
@requires_trt
@pytest.mark.parametrize("name,sparsity,precision", [
    ("efficientvit_m0", None, "fp32"),
    ("efficientvit_m0", None, "fp16"),
    ("swin_t", 0.5, "fp32"),
    ("swin_t", 0.5, "fp16"),
])
def test_trt_engine_parity_vs_pytorch_and_ort(tmp_path, name, sparsity, precision):
    from vitdeploy.engines.build import build_engine
    from vitdeploy.engines.runners import OrtRunner
    from vitdeploy.engines.trt_runner import TrtRunner
    from vitdeploy.validation.parity import THRESHOLDS

    model, onnx_path = _export_model(tmp_path, name, sparsity, precision)
    engine = tmp_path / f"{name}_{precision}.engine"
    man = build_engine(onnx_path, engine, min_batch=1, opt_batch=2, max_batch=4)
    assert man["precision"] == precision
    th = THRESHOLDS[precision]
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    ref = _torch_ref(model, x)
    with TrtRunner(engine) as r:
        out_name = r.outputs[0].name
        got = r.infer({"images": x})[out_name]
        got1 = r.infer({"images": x[:1]})[out_name]  # dynamic batch inside the profile
    ort_out = OrtRunner(str(onnx_path)).infer({"images": x})[out_name]
    assert _rel(ref, got) < th["max_rel_err"], _rel(ref, got)
    assert _cos(ref, got) > th["min_cosine"]
    assert _rel(ort_out, got) < th["max_rel_err"]
    assert _rel(got[:1], got1) < th["max_rel_err"]


@pytest.mark.tensorrt
@requires_trt
def test_trt_swin_with_and_without_plugin(tmp_path):
    from vitdeploy.engines.build import build_engine
    from vitdeploy.engines.trt_runner import TrtRunner

    lib = _plugin_lib_or_skip()
    model, onnx_path = _export_model(tmp_path, "swin_t", 0.5, "fp32")
    with_p = build_engine(onnx_path, tmp_path / "p.engine", plugin_lib=lib, max_batch=2, opt_batch=2)
    without = build_engine(onnx_path, tmp_path / "n.engine", plugin_lib=False, max_batch=2, opt_batch=2)
    from vitdeploy import optional

    trt = optional.tensorrt()
    if trt.flavour == "rtx" or tuple(int(v) for v in trt.version.split(".")[:2]) >= (10, 7):
        assert with_p["builder_options"]["plugin_layers"] > 0 and with_p["plugin_lib_sha256"]
    # built after the library was registered in this process: the inlined copy still has no plugin layer
    assert without["builder_options"]["plugin_layers"] == 0 and without["plugin_lib_sha256"] is None
    assert without["builder_options"]["window_ops_inlined"] is True
    from vitdeploy import plugins

    ours = plugins.registered_creators(trt)
    assert {(c["name"], c["version"]) for c in ours} == {(op, "1") for op in plugins.PLUGIN_OPS}
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with TrtRunner(tmp_path / "p.engine", plugin_lib=lib) as a, TrtRunner(tmp_path / "n.engine") as b:
        ya = a.infer({"images": x})[a.outputs[0].name]
        yb = b.infer({"images": x})[b.outputs[0].name]
    # both run the same index math: the plugin copies windows exactly like the function body
    assert _rel(yb, ya) < 1e-4
    assert _rel(_torch_ref(model, x), ya) < 1e-4


@requires_builder
def test_trt_portable_fp16_sparsevit_has_no_plugin_dependency(tmp_path):
    """Defect 2: with the library loaded (and Polygraphy's init_libnvinfer_plugins registering the legacy
    ScatterND plugin), a --portable fp16 SparseViT still builds from standard ops only."""
    from vitdeploy import jobs, plugins
    from vitdeploy.engines.build import build_engine
    from vitdeploy.models.sparsity import SparsityConfig

    lib = _plugin_lib_or_skip()
    plugins.load(lib)
    sp = SparsityConfig(ratios=[[0.5] * 2, [0.5] * 2, [0.5] * 6, [0.0, 0.0]])
    onnx_path = tmp_path / "portable_fp16.onnx"
    jobs.export("swin_t", onnx_path, img_size=224, sparsity=sp, precision="fp16", portable=True, validate=False)
    man = build_engine(onnx_path, tmp_path / "p.engine", plugin_lib=lib, max_batch=2, opt_batch=2)
    assert man["builder_options"]["plugin_nodes_in_onnx"] == 0 and man["builder_options"]["plugin_layers"] == 0
    assert man["plugin_lib_sha256"] is None and "ENABLE_PLUGIN_OVERRIDE" not in man["builder_options"]["parser_flags"]


@pytest.mark.tensorrt
@requires_trt
def test_cpp_runner_matches_trt_runner(tmp_path):
    from vitdeploy import plugins
    from vitdeploy.engines.build import build_engine
    from vitdeploy.engines.trt_runner import TrtRunner

    if not hasattr(plugins, "build"):
        pytest.skip("vitdeploy.plugins.build is not available")
    res = plugins.build(with_runner=True)
    runner_bin = (res.get("runner") if isinstance(res, dict) else getattr(res, "runner", None)) \
        or shutil.which("vitdeploy-run")
    if not runner_bin or not os.path.isfile(str(runner_bin)):
        pytest.fail(f"plugins.build(with_runner=True) did not produce vitdeploy-run: {res!r}")
    lib = plugins.library_path(None)
    model, onnx_path = _export_model(tmp_path, "swin_t", 0.5, "fp32")
    engine = tmp_path / "s.engine"
    build_engine(onnx_path, engine, plugin_lib=lib, max_batch=2, opt_batch=2)
    x = np.random.default_rng(2).standard_normal((2, 3, 224, 224)).astype(np.float32)
    inp = tmp_path / "in.npy"
    np.save(inp, x)
    with TrtRunner(engine, plugin_lib=lib) as r:
        outs = r.infer({"images": x})
    first = sorted(outs)[0]
    ref = outs[first]
    # vitdeploy-run (vitdeploy/engines/cpp/runner.cpp): --engine, --plugins, --inputs (.npy, float32
    # NCHW, batch taken from the file), --outputs-dir (one <output name>.npy each), JSON stats on stdout.
    outdir = tmp_path / "cpp_out"
    outdir.mkdir()
    cmd = [str(runner_bin), "--engine", str(engine), "--plugins", str(lib), "--batch", "2", "--inputs", str(inp),
           "--outputs-dir", str(outdir), "--iters", "5", "--warmup", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["backend"] == "trt-cpp" and stats["batch"] == 2 and stats["iters"] == 5
    got = np.load(outdir / (first.replace("/", "_") + ".npy"))
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)
    # a bare file name in the current directory: dlopen does not search the cwd, the runner resolves it
    bare = [str(runner_bin), "--engine", str(engine), "--plugins", os.path.basename(str(lib)), "--iters", "1"]
    proc = subprocess.run(bare, capture_output=True, text=True, timeout=300, cwd=os.path.dirname(str(lib)))
    assert proc.returncode == 0, proc.stderr


def test_profile_defaults_follow_the_onnx_batch():
    dyn = profile_from_batches(["batch", 3, 224, 224])
    assert (dyn["min"][0], dyn["opt"][0], dyn["max"][0]) == (1, 1, 16)
    assert profile_from_batches(["batch", 3, 224, 224], opt_batch=32)["max"][0] == 32
    static = profile_from_batches([4, 3, 224, 224])
    assert (static["min"][0], static["opt"][0], static["max"][0]) == (4, 4, 4)


_HIDE_TENSORRT = """
import sys
class _Hide:  # a host without TensorRT: neither flavour can be found or imported
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_libs", "tensorrt_rtx_bindings"):
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, _Hide())
"""


def test_cli_build_without_tensorrt_exits_2_with_install_line(tmp_path):
    """Runs everywhere: the child hides both TensorRT flavours (sitecustomize), as on a host without them."""
    import subprocess
    import sys

    from conftest import ROOT

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_HIDE_TENSORRT)
    onnx_path = tmp_path / "m.onnx"
    _tiny_onnx(onnx_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    for flavour in ([], ["--tensorrt", "rtx"], ["--tensorrt", "trt"]):
        res = subprocess.run([sys.executable, "-m", "vitdeploy.cli", "build", str(onnx_path), "-o",
                              str(tmp_path / "m.engine"), *flavour], capture_output=True, text=True, timeout=120,
                             env=env)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert "not installed: pip install 'vitdeploy[tensorrt" in last, last
    assert not (tmp_path / "m.engine").exists()


def test_cli_build_with_a_bad_plugin_lib_env_exits_2_naming_it(tmp_path):
    import sys

    onnx_path = _tiny_onnx(tmp_path / "m.onnx")
    missing = tmp_path / "nowhere" / "libvitdeploy_plugins.so"
    env = dict(os.environ, VITDEPLOY_PLUGIN_LIB=str(missing))
    res = subprocess.run([sys.executable, "-m", "vitdeploy.cli", "build", str(onnx_path), "-o",
                          str(tmp_path / "m.engine")], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert str(missing) in res.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "m.engine").exists()


def test_trt_runner_feeds_go_through_the_base_class_checks():
    """TrtRunner used to override infer and skip Runner.check_feeds: extra feeds were ignored and a wrong
    dtype was cast. Only the feed checks run here (no engine is deserialized: that needs a GPU)."""
    from vitdeploy.engines.runners import Runner, TensorSpec
    from vitdeploy.engines.trt_runner import TrtRunner

    assert "infer" not in TrtRunner.__dict__ and TrtRunner.infer is Runner.infer
    r = TrtRunner.__new__(TrtRunner)
    r.name, r.inputs = "trt", [TensorSpec("images", ["batch", 3, 8, 8], "float32")]
    r.profile = {"images": {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}}
    ok = np.zeros((2, 3, 8, 8), np.float32)
    r.check_feeds({"images": ok})
    with pytest.raises(UserError, match="do not match the inputs"):
        r.check_feeds({"images": ok, "extra": ok})
    with pytest.raises(UserError, match="is float64, the model takes float32"):
        r.check_feeds({"images": ok.astype(np.float64)})
    with pytest.raises(UserError, match="outside the engine's profile"):
        r.check_feeds({"images": np.zeros((5, 3, 8, 8), np.float32)})
