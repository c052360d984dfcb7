"""Tier 1: real TensorRT engines on a CPU-only host, built by the TensorRT for RTX builder through
`vitdeploy build` and described by `vitdeploy info` (children, as a user runs them).

Exports are made once per module (in this process, torch only) and shared; every build runs in its own
`vitdeploy build` child, so this pytest process never binds a TensorRT flavour. Where the TensorRT
headers are available (VITDEPLOY_TRT_INCLUDE, never committed; CI has none) the plugin library is built
with CMake and loaded into the RTX builder for the SparseViT exports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from conftest import ROOT, run

RTX_ERR = None if importlib.util.find_spec("tensorrt_rtx") else \
    "tensorrt_rtx is not installed (pip install 'vitdeploy[tensorrt-rtx]')"
pytestmark = pytest.mark.skipif(RTX_ERR is not None, reason=f"no TensorRT for RTX builder: {RTX_ERR}")

TRT_INCLUDE = os.environ.get("VITDEPLOY_TRT_INCLUDE")
needs_headers = pytest.mark.skipif(
    not (TRT_INCLUDE and Path(TRT_INCLUDE, "NvInfer.h").is_file()),
    reason="VITDEPLOY_TRT_INCLUDE does not point at TensorRT 11.x headers (the public include/ of "
           "github.com/NVIDIA/TensorRT): the plugin library cannot be built here")

# key -> (model, img_size, sparsity preset, precision, portable, task)
EXPORTS = {
    "m0_fp32": ("efficientvit_m0", 224, None, "fp32", False, "classify"),
    "m0_fp16": ("efficientvit_m0", 224, None, "fp16", False, "classify"),
    "m0_int8": ("efficientvit_m0", 224, None, "int8", False, "classify"),
    "m0_fp8": ("efficientvit_m0", 224, None, "fp8", False, "classify"),
    "swin_t_224": ("swin_t", 224, None, "fp32", False, "classify"),
    "sv_custom": ("swin_t", 448, "cfg2", "fp32", False, "classify"),
    "sv_portable": ("swin_t", 448, "cfg2", "fp32", True, "classify"),
    "sv_backbone": ("swin_t", 448, "cfg2", "fp32", False, "backbone"),
    "sv_fp16": ("swin_t", 448, "cfg2", "fp16", False, "classify"),
    "sv_int8": ("swin_t", 448, "cfg2", "int8", False, "classify"),
}
# Polygraphy's own notices, not TensorRT's: everything else at [W]/[E] is a warning we must not have.
_NOT_TENSORRT = ("'colored' module is not installed",)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """key -> ONNX path, exported on first use (each export takes seconds to a minute on 2 cores)."""
    from vitdeploy import jobs

    root = tmp_path_factory.mktemp("rtx_exports")
    cache = {}

    def get(key):
        if key not in cache:
            model, img, preset, precision, portable, task = EXPORTS[key]
            path = root / f"{key}.onnx"
            # 4 random calibration inputs: these tests check the engine's structure, not int8 accuracy
            calib = {"calib_num": 4} if precision in ("int8", "fp8") else {}
            jobs.export(model, path, img_size=img, sparsity=preset, precision=precision, portable=portable,
                        task=task, validate=False, **calib)
            cache[key] = path
        return cache[key]

    return get


@pytest.fixture(scope="module")
def plugin_build(tmp_path_factory):
    """`vitdeploy plugins build` (CMake) from the TensorRT headers alone: no TensorRT library on the link
    line (TensorRT_LIB_DIR/ROOT unset; a pip `tensorrt` is not installed here). One CUDA arch: fast."""
    from vitdeploy import plugins

    mp = pytest.MonkeyPatch()
    for var in ("TensorRT_ROOT", "TensorRT_LIB_DIR"):
        mp.delenv(var, raising=False)
    mp.setenv("TensorRT_INCLUDE_DIR", TRT_INCLUDE)
    try:
        res = plugins.build(build_dir=tmp_path_factory.mktemp("plugin_build"), cuda_archs="86", with_runner=True,
                            require_tensorrt=True)
    finally:
        mp.undo()
    assert res["library"], res
    return res


@pytest.fixture(scope="module")
def plugin_lib(plugin_build):
    return plugin_build["library"]


def _build(onnx_path, engine, *extra):
    """`vitdeploy build --tensorrt rtx` in a child, with no plugin library unless `extra` names one (an empty
    VITDEPLOY_HOME, no VITDEPLOY_PLUGIN_LIB: a developer's default build must not change what is tested)."""
    args = ["build", str(onnx_path), "-o", str(engine), "--tensorrt", "rtx", "--opt-batch", "1", "--max-batch", "4",
            *map(str, extra)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), VITDEPLOY_HOME=str(Path(engine).parent / "no-home"))
    for var in ("VITDEPLOY_DEBUG", "VITDEPLOY_PLUGIN_LIB", "VITDEPLOY_TENSORRT"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "vitdeploy.cli", *args], capture_output=True, text=True,
                          timeout=900, env=env)


def _tensorrt_warnings(res) -> list:
    lines = (res.stdout + res.stderr).splitlines()
    return [ln for ln in lines if (ln.startswith("[W]") or ln.startswith("[E]") or "already exists" in ln)
            and not any(s in ln for s in _NOT_TENSORRT)]


def _onnx_io(path):
    from vitdeploy.artifact import open_artifact

    art = open_artifact(path)
    return art, [(t.name, t.dtype, t.shape) for t in art.inputs], [(t.name, t.dtype, t.shape) for t in art.outputs]


def _check_engine(onnx_path, engine, res, precision):
    """What every tier-1 engine must satisfy; returns the manifest."""
    from vitdeploy.engines.manifest import EngineManifest

    assert res.returncode == 0, res.stderr[-3000:]
    assert "TensorRT for RTX" in res.stderr + res.stdout  # the progress line says the flavour
    assert engine.is_file() and Path(str(engine) + ".json").is_file()
    man = EngineManifest.read(engine)
    assert man.flavour == "rtx" and man["tensorrt_version"].startswith("1.")
    assert man["engine_bytes"] == engine.stat().st_size
    assert man["precision"] == precision
    assert man["network"]["strongly_typed"] is True
    # I/O names, dtypes and shapes match the ONNX (the dynamic batch axis is "batch"), and the profile
    art, ins, outs = _onnx_io(onnx_path)
    for got, want in ((man.tensors("inputs"), ins), (man.tensors("outputs"), outs)):
        assert [(n, d) for n, d, _ in got] == [(n, d) for n, d, _ in want]
        for (_, _, gs), (_, _, ws) in zip(got, want):
            assert gs[0] == "batch" and isinstance(ws[0], str)
            assert gs[1:] == ws[1:]
    chw = list(ins[0][2][1:])
    assert man["profile"]["images"] == {"min": [1, *chw], "opt": [1, *chw], "max": [4, *chw]}
    assert _tensorrt_warnings(res) == []
    info = run("info", engine)
    assert info.returncode == 0, info.stderr
    assert "TensorRT for RTX " + man["tensorrt_version"] in info.stdout and "targets" in info.stdout
    assert "plugin layers" in info.stdout and "input              images" in info.stdout
    return man


def _types(man):
    return man["network"]["layer_types"]


def _has(man, prefix):
    return sum(v for k, v in _types(man).items() if k.startswith(prefix))


# ------------------------------------------------------------------------------------------ the matrix

@pytest.mark.parametrize("key", list(EXPORTS))
def test_rtx_build_and_info(exports, tmp_path, key):
    model, img, preset, precision, portable, task = EXPORTS[key]
    onnx_path = exports(key)
    engine = tmp_path / f"{key}.engine"
    res = _build(onnx_path, engine)
    man = _check_engine(onnx_path, engine, res, precision)
    assert man.plugin_layers == 0 and _has(man, "PLUGIN") == 0  # no library: nothing of ours reaches TensorRT
    if precision == "fp16":
        assert _has(man, "MATRIX_MULTIPLY:HALF") + _has(man, "CONVOLUTION:HALF") > 0, _types(man)
    if precision in ("int8", "fp8"):
        assert _has(man, "QUANTIZE:") > 0 and _has(man, "DEQUANTIZE:") > 0, _types(man)
        qtype = "INT8" if precision == "int8" else "FP8"
        assert _has(man, f"QUANTIZE:{qtype}") > 0, _types(man)
    if preset:  # SparseViT: TopK picks the windows; the window ops became standard ops
        assert _has(man, "TOPK:") > 0
        proto = onnx.load(str(onnx_path), load_external_data=False)
        custom = sum(n.domain == "vitdeploy" for n in proto.graph.node)
        assert (custom == 0) == portable
        assert man["builder_options"]["window_ops_inlined"] is (not portable)


def test_real_parser_flags_leave_plugin_override_off(exports, tmp_path):
    """The flags the real RTX parser ended up with (read back from it): TensorRT's defaults, never
    ENABLE_PLUGIN_OVERRIDE (it would turn a portable SparseViT's ScatterND into a legacy plugin)."""
    engine = tmp_path / "p.engine"
    res = _build(exports("sv_portable"), engine)
    assert res.returncode == 0, res.stderr[-2000:]
    flags = json.loads(Path(str(engine) + ".json").read_text())["builder_options"]["parser_flags"]
    assert "ENABLE_PLUGIN_OVERRIDE" not in flags
    assert flags == ["NATIVE_INSTANCENORM"]  # the RTX 1.7 parser's default set


# ------------------------------------------------------------------------------------------ bad input

def test_flags_for_the_other_flavour_and_unknown_targets_exit_2(exports, tmp_path):
    from conftest import assert_user_error

    onnx_path = exports("m0_fp32")
    assert_user_error(_build(onnx_path, tmp_path / "a.engine", "--timing-cache", tmp_path / "c.bin"), "--runtime-cache")
    assert_user_error(_build(onnx_path, tmp_path / "a.engine", "--compute-capability", "9.0"), "compute capability")
    if importlib.util.find_spec("tensorrt") is None:
        res = run("build", onnx_path, "-o", tmp_path / "b.engine", "--tensorrt", "trt")
        assert_user_error(res, "enterprise TensorRT is not installed")
    assert not list(tmp_path.glob("*.engine"))


def test_validate_and_bench_of_an_rtx_engine_without_a_gpu_exit_2(exports, tmp_path):
    from vitdeploy.engines.device import gpu_present

    from conftest import assert_user_error

    if gpu_present():
        pytest.skip("this host has an NVIDIA GPU: the no-GPU refusal cannot be shown")
    engine = tmp_path / "m.engine"
    res = _build(exports("m0_fp32"), engine, "--compute-capability", "8.6", "12.0")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "parity not checked on this host" in res.stderr  # build skipped its parity run, CUDA untouched
    for verb in (["validate", engine], ["bench", engine, "--backend", "trt", "--iters", "1"]):
        out = run(*verb)
        assert_user_error(out, "no NVIDIA GPU")
        assert "8.6 or 12.0" in out.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------ the plugin

@needs_headers
@pytest.mark.parametrize("key", ["sv_custom", "sv_backbone", "sv_fp16", "sv_int8"])
def test_rtx_build_with_the_cmake_plugin_library(exports, plugin_lib, tmp_path, key):
    """The headers-only CMake library in the RTX builder: 16 vitdeploy PLUGIN_V3 layers, recorded in the
    manifest with the library's sha256. Each build runs in a child: before vitdeploy's loader fix the
    RTX parser std::terminate'd the process on the first plugin node."""
    from vitdeploy.fileio import file_sha256

    onnx_path = exports(key)
    engine = tmp_path / f"{key}.engine"
    res = _build(onnx_path, engine, "--plugin-lib", plugin_lib)
    man = _check_engine(onnx_path, engine, res, EXPORTS[key][3])
    assert res.returncode == 0 and "terminate called" not in res.stderr
    assert man.plugin_layers == 16 and _has(man, "PLUGIN_V3") == 16
    assert man["plugin_lib_sha256"] == file_sha256(plugin_lib)
    assert man["builder_options"]["window_ops_inlined"] is False
    assert "plugin layers      16 (library sha256" in run("info", engine).stdout


_LOADED_FIRST = """
import sys
import tensorrt_rtx  # the RTX libraries mapped before vitdeploy: its loader fix cannot apply
from vitdeploy.cli import main
sys.exit(main(sys.argv[1:]))
"""


@needs_headers
def test_plugin_that_cannot_be_used_is_exit_2_when_named_and_inlined_otherwise(exports, plugin_lib, tmp_path):
    """With TensorRT for RTX imported before vitdeploy, the parser would abort the process on a plugin
    node: a named library is refused (exit 2, the reason), a found-by-default one falls back to the
    function bodies, and neither child dies."""
    onnx_path = exports("sv_custom")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("VITDEPLOY_PLUGIN_LIB", None)
    base = [sys.executable, "-c", _LOADED_FIRST, "build", str(onnx_path), "--tensorrt", "rtx", "--max-batch", "2"]
    named = subprocess.run(base + ["-o", str(tmp_path / "n.engine"), "--plugin-lib", plugin_lib],
                           capture_output=True, text=True, timeout=600, env=env)
    assert named.returncode == 2, named.stderr[-2000:]
    assert "cannot use the plugin library" in named.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "n.engine").exists()

    home = tmp_path / "home"
    (home / "plugins").mkdir(parents=True)
    (home / "plugins" / "libvitdeploy_plugins.so").symlink_to(plugin_lib)
    found = subprocess.run(base + ["-o", str(tmp_path / "f.engine")], capture_output=True, text=True, timeout=600,
                           env=dict(env, VITDEPLOY_HOME=str(home)))
    assert found.returncode == 0, found.stderr[-2000:]
    assert "not using the plugin library" in found.stderr
    assert json.loads((tmp_path / "f.engine.json").read_text())["plugin_layers"] == 0


@needs_headers
def test_plugins_build_makes_the_dynamic_library_from_headers_alone(plugin_build):
    """getCreators library from headers alone (no TensorRT library in DT_NEEDED); the static-registration
    library and vitdeploy-run need libnvinfer (enterprise only) and the result says so in one line."""
    from vitdeploy import plugins

    lib = plugin_build["library"]
    needed = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True).stdout
    assert "libnvinfer" not in needed and "libtensorrt" not in needed, needed
    assert plugins.library_info(lib)["registration"] == "dynamic"
    if plugin_build["static_registration_library"] is None:  # no enterprise libnvinfer on this host
        assert plugin_build["runner"] is None
        msg = plugin_build["message"]
        assert "enterprise TensorRT only" in msg and "libnvinfer" in msg and "\n" not in msg
        assert "enterprise TensorRT only" in plugin_build["static_registration_status"]


def test_plugin_major_rule_knows_the_rtx_flavour(tmp_path):
    """RTX 1.x needs a library built against the TensorRT 11 headers (measured: 11.1 loads and builds);
    10.x headers are refused with the flavour in the message (exit 2)."""
    from vitdeploy import plugins
    from vitdeploy.errors import UserError

    lib = tmp_path / "libvitdeploy_plugins.so"
    plugins.check_tensorrt_major({"tensorrt_headers": "11.1.0.106"}, "1.7.1.116", lib, "rtx")
    for headers in ("10.16.0.1", "12.0.0.1", ""):
        with pytest.raises(UserError, match="TensorRT for RTX 1.7.1.116, which needs a build against TensorRT 11"):
            plugins.check_tensorrt_major({"tensorrt_headers": headers}, "1.7.1.116", lib, "rtx")
    with pytest.raises(UserError, match="runs TensorRT 10.16"):  # enterprise: the same major as the headers
        plugins.check_tensorrt_major({"tensorrt_headers": "11.1.0.106"}, "10.16.0.1", lib, "trt")


_PARSE_LOG = """
import json, sys
import onnx
from vitdeploy import optional
from vitdeploy.engines.build import parse_plan
trt = optional.tensorrt("rtx")
class Log(trt.ILogger):
    def __init__(self):
        trt.ILogger.__init__(self)
        self.warnings = []
    def log(self, severity, msg):
        if severity <= trt.ILogger.WARNING:
            self.warnings.append(msg)
proto = onnx.load(sys.argv[1])
out = {}
log = Log()  # one logger per process: TensorRT warns when a second builder brings another
for what, model in (("raw", proto), ("plan", parse_plan(proto, plugin_available=False).model)):
    log.warnings = []
    network = trt.Builder(log).create_network(0)
    ok = trt.OnnxParser(network, log).parse(model.SerializeToString(), sys.argv[1])
    names = [n.name for n in model.graph.node]
    out[what] = {"ok": ok, "warnings": log.warnings, "unique_names": len(set(names)) == len(names) and all(names)}
print(json.dumps(out))
"""


def test_inlined_window_ops_give_the_rtx_parser_no_duplicate_node_names(exports):
    """The RTX parser's own log: handed the export's local functions it names every call site's body nodes
    alike (26 'already exists' warnings for SparseViT cfg2: the control, so this test can fail); the
    model vitdeploy gives it (window_nodes.inline_functions) has graph-unique names and no warning."""
    res = subprocess.run([sys.executable, "-c", _PARSE_LOG, str(exports("sv_custom"))], capture_output=True,
                         text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["raw"]["ok"] and sum("already exists" in w for w in out["raw"]["warnings"]) > 0
    assert out["plan"]["ok"] and out["plan"]["warnings"] == [] and out["plan"]["unique_names"]
