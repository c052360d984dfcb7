"""Find, build, load and describe the native plugin library (DESIGN decision 7).

``libvitdeploy_plugins.so`` holds the TensorRT ``IPluginV3`` plugins ``vitdeploy::WindowGather`` and
``vitdeploy::WindowScatter`` (version "1") and exports ``getCreators`` / ``setLoggerFinder``, so one
file serves ``IPluginRegistry::loadLibrary``, ``trtexec --dynamicPlugins``, Python, the C++ runner
and Triton. Sources live in ``csrc/`` (CMake); the build goes to ``default_build_dir()`` unless told
otherwise. Nothing here imports TensorRT or CUDA at module level: on a machine without them the
module still imports, ``info()`` still answers, and ``build()`` still compiles the CUDA kernels.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

from vitdeploy.errors import CheckFailed, UserError

PLUGIN_NAMESPACE = "vitdeploy"
PLUGIN_VERSION = "1"
PLUGIN_OPS = ("WindowGather", "WindowScatter")

LIBRARY_NAME = "libvitdeploy_plugins.so"
STATIC_REG_LIBRARY_NAME = "libvitdeploy_plugins_static_reg.so"
KERNELS_LIBRARY_NAME = "libvitdeploy_window_ops.so"
RUNNER_NAME = "vitdeploy-run"
ENTRY_POINTS = ("getCreators", "setLoggerFinder", "vitdeployInitPlugins", "vitdeployPluginLibraryInfo")

PathLike = Union[str, "os.PathLike[str]"]

# path -> registry handle, so a second load() of the same library in one process is a no-op instead of
# TensorRT's "already registered" failure.
_LOADED: Dict[str, object] = {}


def csrc_dir() -> Path:
    """The CMake project of the kernels, plugins and (via add_subdirectory) the C++ runner."""
    return Path(__file__).resolve().parent / "csrc"


def runner_src_dir() -> Path:
    """Sources of ``vitdeploy-run`` (built by the same CMake project)."""
    return Path(__file__).resolve().parent.parent / "engines" / "cpp"


def default_build_dir() -> Path:
    """``$VITDEPLOY_HOME/plugins``, else ``~/.cache/vitdeploy/plugins``: outside the source tree, so a
    pip-installed package (read-only site-packages) can still be built."""
    home = os.environ.get("VITDEPLOY_HOME")
    root = Path(home).expanduser() if home else Path.home() / ".cache" / "vitdeploy"
    return root / "plugins"


def library_path(explicit: Optional[PathLike] = None) -> Optional[Path]:
    """The plugin library to use: ``explicit``, else ``$VITDEPLOY_PLUGIN_LIB``, else the default build.

    A path the user named (argument or environment) must exist; the default build may simply not have
    happened yet, which returns None.
    """
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise UserError(f"{p}: plugin library not found; build it with `vitdeploy plugins build` "
                            "or pass the path of an existing libvitdeploy_plugins.so")
        return p
    env = os.environ.get("VITDEPLOY_PLUGIN_LIB")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise UserError(f"{p}: VITDEPLOY_PLUGIN_LIB names a file that does not exist; unset it or "
                            "run `vitdeploy plugins build`")
        return p
    p = default_build_dir() / LIBRARY_NAME
    return p if p.is_file() else None


def runner_path(build_dir: Optional[PathLike] = None) -> Optional[Path]:
    """``vitdeploy-run`` from a build, or None when it was not built (it needs TensorRT)."""
    p = Path(build_dir or default_build_dir()) / RUNNER_NAME
    return p if p.is_file() else None


def _find_nvcc() -> Optional[str]:
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and Path(root, "bin", "nvcc").is_file():
            return str(Path(root, "bin", "nvcc"))
    return None


def _read_build_info(build_dir: Path) -> Dict[str, str]:
    info: Dict[str, str] = {}
    path = build_dir / "vitdeploy_build_info.txt"
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not value.strip().endswith("NOTFOUND"):  # CMake's spelling of "not found"
                info[key.strip()] = value.strip()
    return info


def _run(cmd: List[str], log, progress: Optional[Callable[[str], None]], what: str) -> None:
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: List[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        log.write(line)
        tail = (tail + [line.rstrip()])[-25:]
        if progress and line.startswith("[") and "]" in line[:16]:
            progress(f"{what}: {line.strip()[:120]}")  # ninja/make step counters
    rc = proc.wait()
    log.flush()
    if rc != 0:
        raise CheckFailed(f"{what} failed (exit {rc}); full log in {log.name}; last lines:\n" + "\n".join(tail))


def build(build_dir: Optional[PathLike] = None, cuda_archs: Optional[str] = None,
          tensorrt_root: Optional[PathLike] = None, with_runner: bool = True,
          progress: Optional[Callable[[str], None]] = None, *, jobs: Optional[int] = None,
          require_tensorrt: bool = False, werror: bool = False) -> dict:
    """Configure and build ``csrc/`` with CMake; return what was built.

    Without TensorRT the CUDA kernels are still built (a compile check, and the library the GPU
    benchmark can use) and the result says that the plugin library needs TensorRT; with
    ``require_tensorrt`` that case raises UserError instead (the CLI uses it, so `plugins build`
    does not report success without the plugin library).

    cuda_archs: CMAKE_CUDA_ARCHITECTURES, e.g. "80;90" (default "75;80;86;89;90").
    tensorrt_root: a TensorRT install with include/ and lib/; otherwise $TensorRT_ROOT,
    $TensorRT_INCLUDE_DIR/$TensorRT_LIB_DIR, a pip ``tensorrt``'s libraries, or system paths.
    """
    cmake = shutil.which("cmake")
    if cmake is None:
        raise UserError("cmake not found on PATH: install CMake >= 3.18 (apt-get install cmake, or "
                        "pip install cmake) to build the vitdeploy plugins")
    nvcc = _find_nvcc()
    if nvcc is None:
        raise UserError("nvcc (CUDA toolkit) not found: install the CUDA toolkit and put its bin/ on PATH "
                        "or set CUDA_HOME, then rerun `vitdeploy plugins build`")
    if tensorrt_root is not None:
        root = Path(tensorrt_root).expanduser()
        if not (root / "include" / "NvInfer.h").is_file():
            raise UserError(f"{root}: not a TensorRT install (no include/NvInfer.h); pass the directory that "
                            "holds include/ and lib/ of an unpacked TensorRT release")
        tensorrt_root = root
    bdir = Path(build_dir).expanduser() if build_dir else default_build_dir()
    bdir.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _msg: None)

    cfg = [cmake, "-S", str(csrc_dir()), "-B", str(bdir), f"-DCMAKE_CUDA_COMPILER={nvcc}",
           f"-DVITDEPLOY_PYTHON={sys.executable}", f"-DVITDEPLOY_BUILD_RUNNER={'ON' if with_runner else 'OFF'}",
           f"-DVITDEPLOY_WERROR={'ON' if werror else 'OFF'}"]
    if not (bdir / "CMakeCache.txt").exists() and shutil.which("ninja"):
        cfg += ["-G", "Ninja"]
    if cuda_archs:
        cfg.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_archs}")
    if tensorrt_root is not None:
        cfg.append(f"-DTensorRT_ROOT={tensorrt_root}")
    cmd_build = [cmake, "--build", str(bdir), "--parallel", str(jobs or os.cpu_count() or 2)]

    log_path = bdir / "build.log"
    with open(log_path, "w") as log:
        say(f"configuring {csrc_dir()} in {bdir}")
        _run(cfg, log, None, "cmake configure")
        say("compiling (CUDA kernels take a while per architecture)")
        _run(cmd_build, log, progress, "cmake build")

    info = _read_build_info(bdir)
    lib = bdir / LIBRARY_NAME
    static_lib = bdir / STATIC_REG_LIBRARY_NAME
    runner = bdir / RUNNER_NAME
    result = {
        "build_dir": str(bdir),
        "log": str(log_path),
        "cuda_version": info.get("cuda_version"),
        "cuda_architectures": info.get("cuda_architectures"),
        "kernels_library": str(bdir / KERNELS_LIBRARY_NAME) if (bdir / KERNELS_LIBRARY_NAME).is_file() else None,
        "tensorrt_version": info.get("tensorrt_version") or None,
        "tensorrt_include_dir": info.get("tensorrt_include_dir") or None,
        "library": str(lib) if lib.is_file() else None,
        "static_registration_library": str(static_lib) if static_lib.is_file() else None,
        "runner": str(runner) if runner.is_file() else None,
        "plugins": info.get("plugins"),
        "runner_status": info.get("runner"),
    }
    if result["library"] is None:
        result["message"] = (
            "built the CUDA kernels only; the TensorRT plugin library needs TensorRT headers and libnvinfer: "
            "pass --tensorrt-root DIR (an unpacked TensorRT with include/ and lib/), or set TensorRT_INCLUDE_DIR "
            "(headers) and TensorRT_LIB_DIR (or pip install tensorrt for the libraries)")
        if require_tensorrt:
            raise UserError(f"{bdir}: " + result["message"] + f" [cmake: {info.get('plugins')}]")
    else:
        result["message"] = f"built {lib} against TensorRT {result['tensorrt_version']}"
    return result


def _import_tensorrt():
    try:
        import tensorrt as trt  # noqa: WPS433 (lazy: TensorRT is optional)
    except Exception:  # ImportError, or OSError from missing libnvinfer behind the bindings
        return None
    return trt


def _registry_has_ours(registry) -> bool:
    try:
        return registry.get_creator(PLUGIN_OPS[0], PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None
    except Exception:
        return False


def load(path: Optional[PathLike] = None) -> str:
    """Load the library into this process and register its creators with TensorRT when importable.

    ctypes with RTLD_GLOBAL first (so the launchers are visible to later dlopens and a failing
    dependency gives a readable OSError), then ``trt.get_plugin_registry().load_library`` (the
    getCreators path). Loading the same library again in one process is a no-op.
    """
    p = library_path(path)
    if p is None:
        raise UserError(f"the vitdeploy plugin library was not found (looked in {default_build_dir()}); build it "
                        "with `vitdeploy plugins build` or pass --plugin-lib PATH")
    key = str(p.resolve())
    try:
        ctypes.CDLL(key, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise UserError(f"{p}: cannot load the plugin library ({e}); rebuild it with `vitdeploy plugins build` "
                        "on this machine") from None
    trt = _import_tensorrt()
    if trt is not None and key not in _LOADED:
        registry = trt.get_plugin_registry()
        if _registry_has_ours(registry):
            _LOADED[key] = None  # registered already (another copy, or static registration)
        else:
            handle = registry.load_library(key)
            if not handle:
                raise UserError(f"{p}: TensorRT {trt.__version__} could not register this plugin library (built "
                                "against other TensorRT headers?); rebuild it with `vitdeploy plugins build`")
            _LOADED[key] = handle
    return key


def _registered_creators(trt) -> List[dict]:
    out = []
    try:
        creators = list(trt.get_plugin_registry().all_creators)
    except Exception:
        return out
    for c in creators:
        ns = getattr(c, "plugin_namespace", None)
        if ns != PLUGIN_NAMESPACE:
            continue
        out.append({"name": getattr(c, "name", None), "version": getattr(c, "plugin_version", None),
                    "namespace": ns, "interface": getattr(c, "interface_info", None) and
                    getattr(c.interface_info, "kind", None)})
    return out


def info(path: Optional[PathLike] = None) -> dict:
    """Describe the plugin library without requiring it to exist, TensorRT, or a GPU."""
    try:
        lib = library_path(path)
    except UserError:
        lib = Path(path or os.environ.get("VITDEPLOY_PLUGIN_LIB", "")).expanduser()
    result: dict = {
        "library": str(lib) if lib else None,
        "exists": bool(lib and lib.is_file()),
        "namespace": PLUGIN_NAMESPACE,
        "version": PLUGIN_VERSION,
        "ops": list(PLUGIN_OPS),
        "csrc_dir": str(csrc_dir()),
        "default_build_dir": str(default_build_dir()),
        "runner": str(runner_path()) if runner_path() else None,
    }
    trt = _import_tensorrt()
    result["tensorrt"] = getattr(trt, "__version__", None) if trt is not None else None
    if not result["exists"]:
        result["hint"] = "build it with `vitdeploy plugins build` (needs nvcc, cmake and TensorRT)"
        return result
    try:
        handle = ctypes.CDLL(str(lib), mode=ctypes.RTLD_LOCAL)
    except OSError as e:
        result["load_error"] = str(e)
        return result
    result["symbols"] = {name: hasattr(handle, name) for name in ENTRY_POINTS}
    if result["symbols"]["vitdeployPluginLibraryInfo"]:
        fn = handle.vitdeployPluginLibraryInfo
        fn.restype = ctypes.c_char_p
        try:
            result["library_info"] = json.loads(fn().decode())
        except (ValueError, UnicodeDecodeError):
            result["library_info"] = None
    if trt is not None:
        try:
            load(lib)
            result["registered_creators"] = _registered_creators(trt)
        except UserError as e:
            result["load_error"] = str(e)
    return result
