"""Tier 1: the native code compiles warning-free and its descriptions agree with it.

- CUDA kernels: nvcc for sm_80 and sm_90 (skipped without nvcc).
- Plugin + runner sources: g++ -Wall -Wextra -Werror against TensorRT headers named by
  $VITDEPLOY_TRT_INCLUDE or $TensorRT_ROOT (skipped otherwise; CI has none). With nvcc too, the plugin
  library is linked and driven through getCreators by csrc/tests/pluginSmokeTest.cpp (no libnvinfer).
- The CMake build against those headers and a stub libnvinfer built here (it exports the symbols the
  libraries link to, and counts getPluginRegistry calls: it checks linkage, it fakes no result): the
  static-registration library keeps libnvinfer in DT_NEEDED and reaches getPluginRegistry when dlopen'ed
  after a RTLD_LOCAL libnvinfer (as under Triton); kernel launchers stay private to the plugin libraries;
  headers and a libnvinfer of another major fail configure with one line; the TensorRT-major check of
  plugins.load() reads the built library.
- The short-row (flat grid) kernel bodies, run on the host over every thread of their launch grid,
  match vitdeploy.plugins.reference (g++ only).
- Specs / READMEs / sources agree; plugins.info()/build() behave without TensorRT.
- The runner's .npy reader/writer and float16 conversion match NumPy (g++ only).
"""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from vitdeploy import plugins
from vitdeploy.errors import UserError
from vitdeploy.plugins import reference
from vitdeploy.plugins.build import find_nvcc

CSRC = plugins.csrc_dir()
RUNNER_SRC = plugins.runner_src_dir()
NVCC = find_nvcc()
GXX = shutil.which("g++")
CMAKE = shutil.which("cmake")
PLUGIN_DIRS = {"WindowGather": CSRC / "windowGatherPlugin", "WindowScatter": CSRC / "windowScatterPlugin"}
REFERENCE = {"WindowGather": reference.window_gather_ref, "WindowScatter": reference.window_scatter_ref}
WARN = ["-Wall", "-Wextra", "-Werror"]


def _trt_include():
    for cand in (os.environ.get("VITDEPLOY_TRT_INCLUDE"),
                 os.environ.get("TensorRT_ROOT") and os.path.join(os.environ["TensorRT_ROOT"], "include")):
        if cand and Path(cand, "NvInfer.h").is_file():
            return Path(cand)
    return None


def _cuda_include():
    roots = [Path(NVCC).resolve().parent.parent] if NVCC else []
    roots += [Path(os.environ[v]) for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)] + [Path("/usr/local/cuda")]
    for root in roots:
        if (root / "include" / "cuda_runtime_api.h").is_file():
            return root / "include"
    return None


TRT_INCLUDE = _trt_include()
CUDA_INCLUDE = _cuda_include()
CUDA_LIB = CUDA_INCLUDE.parent / "lib64" if CUDA_INCLUDE else None

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) not found")
needs_trt_headers = pytest.mark.skipif(
    TRT_INCLUDE is None or GXX is None or CUDA_INCLUDE is None,
    reason="TensorRT headers not found (set VITDEPLOY_TRT_INCLUDE=<dir with NvInfer.h> or TensorRT_ROOT), "
           "or g++/CUDA headers missing")


def _run(cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _spec(name):
    return yaml.safe_load((PLUGIN_DIRS[name] / f"{name}_PluginConfig.yaml").read_text())


# ---------------------------------------------------------------------------------------------- kernels

@needs_nvcc
def test_kernels_compile_for_sm80_and_sm90_without_warnings(tmp_path):
    obj = tmp_path / "windowOpsKernel.o"
    _run([NVCC, "-std=c++17", "-O3", "-Xcompiler=-fPIC,-Wall,-Wextra,-Werror", "-Werror", "all-warnings",
          "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
          "-c", CSRC / "common" / "windowOpsKernel.cu", "-o", obj])
    cuobjdump = shutil.which("cuobjdump") or (Path(NVCC).resolve().parent / "cuobjdump")
    if Path(cuobjdump).exists():
        listing = _run([cuobjdump, "--list-elf", obj]).stdout
        assert "sm_80" in listing and "sm_90" in listing, listing


@pytest.mark.skipif(NVCC is None or CMAKE is None, reason="nvcc or cmake not found")
def test_build_without_tensorrt_builds_kernels_and_says_what_is_missing(tmp_path, monkeypatch):
    for var in ("TensorRT_ROOT", "TensorRT_INCLUDE_DIR", "TensorRT_LIB_DIR", "VITDEPLOY_TRT_INCLUDE"):
        monkeypatch.delenv(var, raising=False)
    messages = []
    res = plugins.build(build_dir=tmp_path / "b", cuda_archs="90", with_runner=True, progress=messages.append)
    assert res["kernels_library"] and Path(res["kernels_library"]).is_file()
    assert res["cuda_architectures"] == "90"
    assert messages, "build() reports progress"
    if res["library"] is None:  # the usual case on CI: no TensorRT
        assert "TensorRT" in res["message"] and "--tensorrt-root" in res["message"]
        assert res["runner"] is None
        with pytest.raises(UserError, match="TensorRT"):
            plugins.build(build_dir=tmp_path / "b", cuda_archs="90", require_tensorrt=True)
    else:
        assert Path(res["library"]).is_file() and res["tensorrt_version"]

    # The C launchers validate arguments before touching the device, so this runs without a GPU.
    lib = ctypes.CDLL(res["kernels_library"])
    fn = lib.vitdeployWindowGather
    fn.restype = ctypes.c_int32
    fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 4 + [ctypes.c_int32] * 2 + [ctypes.c_void_p]
    assert fn(None, None, None, 0, 4, 2, 10, 0, 1, None) == 0  # empty batch: nothing to do
    assert fn(None, None, None, -1, 4, 2, 10, 0, 1, None) != 0  # negative size: cudaErrorInvalidValue
    assert fn(None, None, None, 1, 4, 2, 10, 7, 1, None) != 0  # unknown data type
    assert fn(None, None, None, 1, 4, 2, 10, 0, 1, None) != 0  # null pointers with work to do


def test_build_reports_missing_tensorrt_root(tmp_path):
    if CMAKE is None or NVCC is None:
        pytest.skip("nvcc or cmake not found (build() would stop there first)")
    with pytest.raises(UserError, match="include/NvInfer.h"):
        plugins.build(build_dir=tmp_path, tensorrt_root=tmp_path / "nope")


# ---------------------------------------------------------------------------------------------- plugins

@pytest.fixture(scope="module")
def plugin_objects(tmp_path_factory):
    """Every plugin/runner translation unit compiled with -Wall -Wextra -Werror (TensorRT headers as
    system headers: TensorRT 11's own headers use deprecated declarations)."""
    out = tmp_path_factory.mktemp("plugin_objs")
    inc = ["-isystem", TRT_INCLUDE, "-isystem", CUDA_INCLUDE,
           "-I", CSRC / "common", "-I", CSRC / "windowGatherPlugin", "-I", CSRC / "windowScatterPlugin"]
    objs = []
    units = [("pluginCommon", CSRC / "common" / "pluginCommon.cpp", []),
             ("windowGatherPlugin", CSRC / "windowGatherPlugin" / "windowGatherPlugin.cpp", []),
             ("windowScatterPlugin", CSRC / "windowScatterPlugin" / "windowScatterPlugin.cpp", []),
             ("plugin_api", CSRC / "api" / "plugin_api.cpp", []),
             ("plugin_api_static", CSRC / "api" / "plugin_api.cpp", ["-DVITDEPLOY_STATIC_REGISTRATION=1"])]
    for name, src, extra in units:
        obj = out / f"{name}.o"
        _run([GXX, "-std=c++17", "-O1", "-fPIC", "-fvisibility=hidden", *WARN, *extra, *inc, "-c", src, "-o", obj])
        objs.append(obj)
    for src in ("runner.cpp", "npy.cpp"):
        _run([GXX, "-std=c++17", "-O1", *WARN, "-isystem", TRT_INCLUDE, "-isystem", CUDA_INCLUDE,
              "-I", RUNNER_SRC, "-c", RUNNER_SRC / src, "-o", out / (src + ".o")])
    return out, objs[:-1], inc


@needs_trt_headers
def test_plugin_and_runner_sources_compile_warning_free(plugin_objects):
    out, objs, _ = plugin_objects
    assert all(o.is_file() for o in objs) and (out / "runner.cpp.o").is_file()


@needs_trt_headers
@needs_nvcc
def test_plugin_library_through_getcreators(plugin_objects):
    out, objs, inc = plugin_objects
    kernel = out / "kernel.o"
    _run([NVCC, "-std=c++17", "-O2", "-Xcompiler=-fPIC", "-gencode", "arch=compute_90,code=sm_90",
          "-c", CSRC / "common" / "windowOpsKernel.cu", "-o", kernel])
    lib = out / plugins.LIBRARY_NAME
    cudart = ["-L", CUDA_LIB, "-lcudart_static", "-ldl", "-lpthread", "-lrt"]
    # --no-undefined: the dynamic-registration library needs nothing from libnvinfer at link time.
    _run([GXX, "-shared", "-o", lib, *objs, kernel, "-Wl,--no-undefined", *cudart])
    smoke = out / "pluginSmokeTest"
    _run([GXX, "-std=c++17", *WARN, *inc, CSRC / "tests" / "pluginSmokeTest.cpp", "-o", smoke, *cudart])
    proc = subprocess.run([str(smoke), str(lib)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ALL PASSED" in proc.stdout, proc.stdout + proc.stderr

    info = plugins.info(lib)
    assert info["exists"] and all(info["symbols"][s] for s in ("getCreators", "setLoggerFinder"))
    assert info["library_info"]["namespace"] == plugins.PLUGIN_NAMESPACE
    assert info["library_info"]["ops"] == list(plugins.PLUGIN_OPS)
    assert info["library_info"]["registration"] == "dynamic"


# ---------------------------------------------------------------------------------------------- CMake build

def _headers_major(include: Path) -> int:
    text = (include / "NvInferVersion.h").read_text()
    for pattern in (r"#define TRT_MAJOR_ENTERPRISE +(\d+)", r"#define NV_TENSORRT_MAJOR +(\d+)"):
        m = re.search(pattern, text)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no major version in {include}/NvInferVersion.h")


_STUB_NVINFER = r"""
// A stand-in libnvinfer: the symbols vitdeploy's libraries link to, and a counter of getPluginRegistry calls.
#include <cstdint>
namespace nvinfer1 { class IPluginRegistry; class ILogger; }
static int32_t gRegistryCalls = 0;
extern "C" nvinfer1::IPluginRegistry* getPluginRegistry() noexcept { ++gRegistryCalls; return nullptr; }
extern "C" nvinfer1::ILogger* getLogger() noexcept { return nullptr; }
extern "C" int32_t stubRegistryCalls() { return gRegistryCalls; }
extern "C" void* createInferRuntime_INTERNAL(void*, int32_t) noexcept { return nullptr; }  // "no runtime"
"""


def _stub_nvinfer(out: Path, major: int) -> Path:
    src = out / "stub_nvinfer.cpp"
    src.write_text(_STUB_NVINFER)
    lib = out / f"libnvinfer.so.{major}"
    _run([GXX, "-std=c++17", "-shared", "-fPIC", *WARN, f"-Wl,-soname,libnvinfer.so.{major}", src, "-o", lib])
    return lib


needs_cmake_build = pytest.mark.skipif(
    TRT_INCLUDE is None or GXX is None or NVCC is None or CMAKE is None,
    reason="TensorRT headers (VITDEPLOY_TRT_INCLUDE), g++, nvcc and cmake are all needed for the CMake build")


@pytest.fixture(scope="module")
def stub_build(tmp_path_factory):
    """`vitdeploy plugins build` (CMake, -Werror, sm_90, with the runner) against the headers and a stub
    libnvinfer of their major."""
    root = tmp_path_factory.mktemp("stub_build")
    stub_dir = root / "stub"
    stub_dir.mkdir()
    stub = _stub_nvinfer(stub_dir, _headers_major(TRT_INCLUDE))
    with pytest.MonkeyPatch.context() as mp:
        for var in ("TensorRT_ROOT", "VITDEPLOY_TRT_INCLUDE"):
            mp.delenv(var, raising=False)
        mp.setenv("TensorRT_INCLUDE_DIR", str(TRT_INCLUDE))
        mp.setenv("TensorRT_LIB_DIR", str(stub_dir))
        res = plugins.build(build_dir=root / "b", cuda_archs="90", with_runner=True, werror=True,
                            require_tensorrt=True)
    return res, stub


def _dynamic_section(lib) -> str:
    return _run(["readelf", "-d", lib]).stdout


def _exported(lib) -> set:
    out = _run(["nm", "-D", "--defined-only", lib]).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


@needs_cmake_build
def test_static_registration_library_needs_libnvinfer_and_registers_after_rtld_local(stub_build):
    res, stub = stub_build
    static_lib = res["static_registration_library"]
    assert static_lib, res
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _dynamic_section(static_lib))
    assert stub.name in needed, needed
    # A host that loads libnvinfer RTLD_LOCAL first, then dlopens the library (Triton's TensorRT backend).
    host = ("import ctypes, sys\n"
            "nv = ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_LOCAL)\n"
            "ctypes.CDLL(sys.argv[2], mode=ctypes.RTLD_LOCAL)\n"
            "print(nv.stubRegistryCalls())\n")
    proc = subprocess.run([sys.executable, "-c", host, str(stub), static_lib], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip().splitlines()[-1]) >= 1, "the static initializer never reached getPluginRegistry"


@needs_cmake_build
def test_plugin_libraries_export_only_their_entry_points(stub_build):
    res, _ = stub_build
    launchers = {"vitdeployWindowGather", "vitdeployWindowScatter", "vitdeployWindowScatterInPlace"}
    dynamic, static = _exported(res["library"]), _exported(res["static_registration_library"])
    assert not launchers & dynamic and not launchers & static
    assert {"getCreators", "setLoggerFinder", "vitdeployInitPlugins", "vitdeployPluginLibraryInfo"} <= dynamic
    assert "getCreators" not in static and "vitdeployPluginLibraryInfo" in static
    assert launchers <= _exported(res["kernels_library"])  # the ctypes/benchmark library keeps them


@needs_cmake_build
def test_runner_links_and_checks_plugin_paths_before_touching_tensorrt(stub_build, tmp_path):
    res, _ = stub_build
    runner, lib = res["runner"], Path(res["library"])
    assert runner, res
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    proc = subprocess.run([runner, "--engine", engine, "--plugins", "nosuch.so"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "nosuch.so: plugin library not found" in proc.stderr, proc.stderr
    # a bare name in the current directory resolves (dlopen alone would not search it); then the stub
    # libnvinfer has no runtime to give, which the runner reports as a failure (exit 1), not a crash
    proc = subprocess.run([runner, "--engine", engine, "--plugins", lib.name], capture_output=True, text=True,
                          timeout=60, cwd=lib.parent)
    assert proc.returncode == 1 and "could not create the TensorRT runtime" in proc.stderr, proc.stderr


@needs_cmake_build
def test_load_checks_the_tensorrt_major_the_library_was_built_against(stub_build):
    res, _ = stub_build
    major = _headers_major(TRT_INCLUDE)
    for lib, registration in ((res["library"], "dynamic"), (res["static_registration_library"], "static")):
        meta = plugins.library_info(lib)
        assert meta["registration"] == registration and meta["ops"] == list(plugins.PLUGIN_OPS)
        assert meta["tensorrt_headers"] == res["tensorrt_version"]
        plugins.check_tensorrt_major(meta, f"{major}.0.0.1", lib)  # same major: fine
        for other in (f"{major + 1}.1.0.106", f"{major - 1}.16.0.1"):
            with pytest.raises(UserError, match=r"vitdeploy plugins build --tensorrt-root") as ei:
                plugins.check_tensorrt_major(meta, other, lib)
            assert str(lib) in str(ei.value) and other in str(ei.value) and "\n" not in str(ei.value)


@needs_cmake_build
def test_cmake_refuses_a_libnvinfer_of_another_major(tmp_path, monkeypatch):
    major = _headers_major(TRT_INCLUDE)
    stub_dir = tmp_path / "stub"
    stub_dir.mkdir()
    other = _stub_nvinfer(stub_dir, major - 1)
    for var in ("TensorRT_ROOT", "VITDEPLOY_TRT_INCLUDE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TensorRT_INCLUDE_DIR", str(TRT_INCLUDE))
    monkeypatch.setenv("TensorRT_LIB_DIR", str(stub_dir))
    with pytest.raises(UserError) as ei:
        plugins.build(build_dir=tmp_path / "b", cuda_archs="90", with_runner=False)
    msg = str(ei.value)
    assert f"need libnvinfer.so.{major}" in msg and str(other) in msg and "\n" not in msg
    assert not (tmp_path / "b" / plugins.LIBRARY_NAME).exists()


# ---------------------------------------------------------------------------------------------- short rows

@pytest.fixture(scope="module")
def flat_host_tool(tmp_path_factory):
    if GXX is None or CUDA_INCLUDE is None:
        pytest.skip("g++ or the CUDA headers not found")
    out = tmp_path_factory.mktemp("flat") / "flatKernelsHostTest"
    _run([GXX, "-std=c++17", "-O2", *WARN, "-I", CSRC / "common", "-isystem", CUDA_INCLUDE,
          CSRC / "tests" / "flatKernelsHostTest.cpp", "-o", out])
    return out


# (B, nW, C, K, dtype): Swin-T token rows (C=96, 192/384 B), K > nW (repeats), odd rows (10 B -> 2-byte vectors)
FLAT_CASES = [(2, 300, 96, 211, np.float16), (2, 300, 96, 211, np.float32), (3, 40, 5, 64, np.float16),
              (1, 17, 8, 0, np.float32), (2, 50, 3, 49, np.float32)]


@pytest.mark.parametrize("case", FLAT_CASES, ids=lambda c: f"B{c[0]}_nW{c[1]}_C{c[2]}_K{c[3]}_{np.dtype(c[4]).name}")
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("max_blocks", [3, 2112], ids=["grid_wraps", "h200_grid"])
def test_flat_kernel_bodies_match_reference_on_host(flat_host_tool, tmp_path, case, index_dtype, max_blocks):
    B, nW, C, K, dtype = case
    rng = np.random.default_rng(B * 1000 + nW + C + K)
    x = rng.standard_normal((B, nW, 1, C)).astype(dtype)
    src = rng.standard_normal((B, K, 1, C)).astype(dtype)
    idx = rng.integers(0, nW, (B, K)) if K > nW else np.stack([rng.permutation(nW)[:K] for _ in range(B)])
    if K:
        idx[:, :: max(K // 4, 1)] = rng.choice([-1, nW, nW + 5, -nW], size=idx[:, :: max(K // 4, 1)].shape)
    idx = idx.astype(index_dtype)
    row_bytes = C * x.itemsize
    vec = next(w for w in (16, 8, 4, 2, 1) if row_bytes % w == 0)
    files = {n: tmp_path / f"{n}.bin" for n in ("x", "idx", "src", "out")}
    for n, a in (("x", x), ("idx", idx), ("src", src)):
        files[n].write_bytes(np.ascontiguousarray(a).tobytes())
    want = {"gather": reference.window_gather_ref(x, idx),
            "scatter": reference.window_scatter_ref(x, idx, src),
            "scatter_inplace": reference.window_scatter_ref(x, idx, src)}
    for op, expected in want.items():
        proc = _run([flat_host_tool, op, vec, idx.itemsize, B, nW, K, row_bytes, max_blocks,
                     files["x"], files["idx"], files["src"], files["out"]])
        assert f"rowVecs={row_bytes // vec}" in proc.stdout
        got = np.frombuffer(files["out"].read_bytes(), dtype=dtype).reshape(expected.shape)
        np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8), err_msg=op)


# ---------------------------------------------------------------------------------------------- specs

@pytest.mark.parametrize("name", plugins.PLUGIN_OPS)
def test_spec_readme_and_sources_agree(name):
    spec = _spec(name)
    folder = PLUGIN_DIRS[name]
    assert spec["name"] == name and spec["interface"] == "IPluginV3"
    assert spec["namespace"] == plugins.PLUGIN_NAMESPACE
    assert list(spec["versions"]) == [plugins.PLUGIN_VERSION]
    v = spec["versions"][plugins.PLUGIN_VERSION]

    # Inputs are the oracle's arguments, in order; every float type x index type is supported.
    assert v["inputs"] == list(inspect.signature(REFERENCE[name]).parameters)
    combos = {tuple(sorted(c.items())) for entry in v["supported_input_types"] for c in entry.values()}
    data_inputs = [i for i in v["inputs"] if i != "idx"]
    want = {tuple(sorted([("idx", i)] + [(d, t) for d in data_inputs]))
            for t in ("float32", "float16", "bfloat16") for i in ("int32", "int64")}
    assert combos == want
    assert v["onnx_node_attributes"] == {"plugin_namespace": plugins.PLUGIN_NAMESPACE,
                                        "plugin_version": plugins.PLUGIN_VERSION}
    assert all(v[k] == 0.0 for k in ("abs_tol", "rel_tol", "fp16_atol", "bf16_atol")), "pure copies are exact"

    # The strings TensorRT matches on are the ones in the sources.
    stem = folder.name  # windowGatherPlugin
    cpp = (folder / f"{stem}.cpp").read_text()
    hdr = (folder / f"{stem}.h").read_text()
    common = (CSRC / "common" / "pluginCommon.h").read_text()
    assert f'{{"{name}"}}' in common and '{"vitdeploy"}' in common and 'kPLUGIN_VERSION{"1"}' in common
    assert f"class {name}Plugin " in hdr and f"class {name}PluginCreator " in hdr
    token = "kWINDOW_GATHER_NAME" if name == "WindowGather" else "kWINDOW_SCATTER_NAME"
    assert f'{token}{{"{name}"}}' in common and cpp.count(token) >= 2  # plugin and creator use it
    api = (CSRC / "api" / "plugin_api.cpp").read_text()
    assert f"{name}PluginCreator" in api and "getCreators" in api and "setLoggerFinder" in api

    # README documents every input, output and attribute, the bad-index rule and the changelog.
    readme = (folder / "README.md").read_text()
    for word in v["inputs"] + v["outputs"] + v["attributes"] + list(v["onnx_node_attributes"]):
        assert f"`{word}`" in readme, f"README of {name} does not mention `{word}`"
    assert "## Changelog" in readme and "Bad indices" in readme
    assert ("zeros" if name == "WindowGather" else "ignored") in readme
    assert ("zeros" if name == "WindowGather" else "ignored") in v["bad_index_behaviour"]


def test_plugins_table_lists_every_op():
    top = (CSRC / "README.md").read_text()
    for name in plugins.PLUGIN_OPS:
        assert f"`{name}` / `{plugins.PLUGIN_VERSION}` / `{plugins.PLUGIN_NAMESPACE}`" in top


# ---------------------------------------------------------------------------------------------- python API

def test_info_and_library_path_without_a_library(tmp_path, monkeypatch):
    monkeypatch.setenv("VITDEPLOY_HOME", str(tmp_path))
    monkeypatch.delenv("VITDEPLOY_PLUGIN_LIB", raising=False)
    assert plugins.default_build_dir() == tmp_path / "plugins"
    assert plugins.library_path() is None
    info = plugins.info()
    assert info["library"] is None and info["exists"] is False
    assert info["ops"] == list(plugins.PLUGIN_OPS) and info["namespace"] == "vitdeploy" and info["version"] == "1"
    assert "plugins build" in info["hint"]
    json.dumps(info)  # the CLI prints it

    missing = tmp_path / "nope.so"
    with pytest.raises(UserError, match="not found"):
        plugins.library_path(missing)
    assert plugins.info(missing)["exists"] is False
    monkeypatch.setenv("VITDEPLOY_PLUGIN_LIB", str(missing))
    with pytest.raises(UserError, match="VITDEPLOY_PLUGIN_LIB"):
        plugins.library_path()
    monkeypatch.delenv("VITDEPLOY_PLUGIN_LIB")
    with pytest.raises(UserError, match="plugins build"):
        plugins.load()


def test_library_path_finds_the_default_build(tmp_path, monkeypatch):
    monkeypatch.setenv("VITDEPLOY_HOME", str(tmp_path))
    monkeypatch.delenv("VITDEPLOY_PLUGIN_LIB", raising=False)
    built = tmp_path / "plugins" / plugins.LIBRARY_NAME
    built.parent.mkdir(parents=True)
    built.write_bytes(b"not really a library")
    assert plugins.library_path() == built
    info = plugins.info()
    assert info["exists"] and "load_error" in info  # info reports instead of raising
    with pytest.raises(UserError, match=f"{built}: not a vitdeploy plugin library"):
        plugins.load()


def test_cli_plugins_info(tmp_path, monkeypatch, capsys):
    from vitdeploy.cli import main

    monkeypatch.setenv("VITDEPLOY_HOME", str(tmp_path))
    monkeypatch.delenv("VITDEPLOY_PLUGIN_LIB", raising=False)
    assert main(["plugins", "info"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ops"] == list(plugins.PLUGIN_OPS)


# ---------------------------------------------------------------------------------------------- runner .npy

_NPY_TOOL = r"""
#include "npy.h"
#include <cstdio>
#include <cstring>
using namespace vitdeploy::npy;
// npy_tool IN OUT_COPY OUT_HALF OUT_BACK: copy; float32 -> float16; float16 -> float32
int main(int, char** argv) {
    Array a; std::string err;
    if (!load(argv[1], a, err)) { std::fprintf(stderr, "%s\n", err.c_str()); return 2; }
    if (!save(argv[2], a, err)) { std::fprintf(stderr, "%s\n", err.c_str()); return 2; }
    size_t n = a.data.size() / 4;
    Array h{"<f2", a.shape, std::vector<uint8_t>(n * 2)}, f{"<f4", a.shape, std::vector<uint8_t>(n * 4)};
    for (size_t i = 0; i < n; ++i) {
        float v; std::memcpy(&v, &a.data[4 * i], 4);
        uint16_t b = floatToHalf(v); std::memcpy(&h.data[2 * i], &b, 2);
        float back = halfToFloat(b); std::memcpy(&f.data[4 * i], &back, 4);
    }
    if (!save(argv[3], h, err) || !save(argv[4], f, err)) { std::fprintf(stderr, "%s\n", err.c_str()); return 2; }
    Array bad; return load(argv[5], bad, err) ? 3 : 0;  // argv[5] is not a valid .npy
}
"""


@pytest.mark.skipif(GXX is None, reason="g++ not found")
def test_runner_npy_io_and_half_conversion_match_numpy(tmp_path):
    src = tmp_path / "npy_tool.cpp"
    src.write_text(_NPY_TOOL)
    tool = tmp_path / "npy_tool"
    _run([GXX, "-std=c++17", *WARN, "-I", RUNNER_SRC, src, RUNNER_SRC / "npy.cpp", "-o", tool])

    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e9, -1e9, np.inf, -np.inf, np.nan,
                        2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * 1.0001, 3 * 2.0 ** -26, 6.1e-5, 5.96e-8, 1e-10,
                        1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 0.1, 1 / 3], dtype=np.float32)
    x = np.concatenate([special, rng.standard_normal(4000).astype(np.float32) * 10.0 ** rng.integers(-8, 5, 4000),
                        (rng.standard_normal(1000) * 1e-6)]).astype(np.float32).reshape(2, 3, -1)
    inp = tmp_path / "x.npy"
    np.save(inp, x)
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPX garbage")
    outs = [tmp_path / n for n in ("copy.npy", "half.npy", "back.npy")]
    _run([tool, inp, *outs, tmp_path / "bad.npy"])

    copy, half, back = (np.load(p) for p in outs)
    assert copy.dtype == np.float32 and copy.shape == x.shape and np.array_equal(copy, x, equal_nan=True)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)  # NumPy warns on the overflow-to-inf cases we test on purpose
    assert half.dtype == np.float16 and half.shape == x.shape
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(half), nan)
    assert np.array_equal(half.view(np.uint16)[~nan], want.view(np.uint16)[~nan])  # bit-exact, RNE
    assert np.array_equal(back, want.astype(np.float32), equal_nan=True)
    assert not list(tmp_path.glob("*.tmp")), "writes are atomic (temp file renamed)"
