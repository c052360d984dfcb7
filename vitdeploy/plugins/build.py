"""Build ``csrc/`` (kernels, plugin libraries, C++ runner) with CMake into the default build dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from vitdeploy.errors import CheckFailed, UserError
from vitdeploy.plugins import (
    KERNELS_LIBRARY_NAME,
    LIBRARY_NAME,
    RUNNER_NAME,
    STATIC_REG_LIBRARY_NAME,
    PathLike,
    csrc_dir,
    default_build_dir,
)

# CMake's FATAL_ERROR for headers and libnvinfer of different TensorRT majors starts with this.
MAJOR_MISMATCH_MARK = "vitdeploy: TensorRT headers and libnvinfer differ"


def find_nvcc() -> Optional[str]:
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


def _cmake_message(lines: List[str], mark: str) -> Optional[str]:
    """The CMake message that starts with `mark`, unwrapped (CMake breaks messages into indented lines)."""
    for i, line in enumerate(lines):
        if mark in line:
            parts = [line.strip()]
            for more in lines[i + 1:]:
                if not more.startswith("  ") or not more.strip():
                    break
                parts.append(more.strip())
            return " ".join(parts)
    return None


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
        mismatch = _cmake_message(tail, MAJOR_MISMATCH_MARK)
        if mismatch:  # the user's setup, not our code: one line, exit 2
            raise UserError(mismatch)
        raise CheckFailed(f"{what} failed (exit {rc}); full log in {log.name}; last lines:\n" + "\n".join(tail))


def build(build_dir: Optional[PathLike] = None, cuda_archs: Optional[str] = None,
          tensorrt_root: Optional[PathLike] = None, with_runner: bool = True,
          progress: Optional[Callable[[str], None]] = None, *, jobs: Optional[int] = None,
          require_tensorrt: bool = False, werror: bool = False) -> dict:
    """Configure and build ``csrc/`` with CMake; return what was built.

    With TensorRT headers alone the dynamic-registration plugin library is built (enterprise and RTX
    both load it); the static-registration library and the C++ runner also need libnvinfer (enterprise
    only). Without headers the CUDA kernels are still built (a compile check, and the library the GPU
    benchmark can use) and the result says that the plugin library needs TensorRT headers; with
    ``require_tensorrt`` that case raises UserError instead. (`vitdeploy plugins build` does not pass
    it: it prints the result first, then exits 2 with the message.)

    cuda_archs: CMAKE_CUDA_ARCHITECTURES, e.g. "80;90" (default "75;80;86;89;90").
    tensorrt_root: a TensorRT install with include/ and lib/; otherwise $TensorRT_ROOT,
    $TensorRT_INCLUDE_DIR/$TensorRT_LIB_DIR, a pip ``tensorrt``'s libraries, or system paths.
    """
    cmake = shutil.which("cmake")
    if cmake is None:
        raise UserError("cmake not found on PATH: install CMake >= 3.18 (apt-get install cmake, or "
                        "pip install cmake) to build the vitdeploy plugins")
    nvcc = find_nvcc()
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
        "static_registration_status": info.get("static_registration"),
        "runner_status": info.get("runner"),
    }
    if result["library"] is None:
        result["message"] = (
            "built the CUDA kernels only; the TensorRT plugin library needs the TensorRT headers: "
            "pass --tensorrt-root DIR (an unpacked TensorRT with include/), or set TensorRT_INCLUDE_DIR "
            "to the include/ of github.com/NVIDIA/TensorRT (11.x for TensorRT for RTX)")
        if require_tensorrt:
            raise UserError(f"{bdir}: " + result["message"] + f" [cmake: {info.get('plugins')}]")
    else:
        result["message"] = f"built {lib} against TensorRT {result['tensorrt_version']} headers"
        if result["static_registration_library"] is None or result["runner"] is None:
            # one line: what the headers-only build leaves out, and why
            result["message"] += ("; the static-registration library and vitdeploy-run are enterprise TensorRT only "
                                  "and need libnvinfer (not found: set TensorRT_LIB_DIR or --tensorrt-root)")
    return result
