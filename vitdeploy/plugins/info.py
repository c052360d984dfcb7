"""Describe a plugin library (``vitdeploy plugins info``) without requiring it to exist, TensorRT, or a GPU."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Optional

from vitdeploy import optional
from vitdeploy.errors import UserError
from vitdeploy.plugins import (
    ENTRY_POINTS,
    PLUGIN_NAMESPACE,
    PLUGIN_OPS,
    PLUGIN_VERSION,
    PathLike,
    csrc_dir,
    default_build_dir,
    library_info,
    library_path,
    load,
    registered_creators,
    runner_path,
)


def info(path: Optional[PathLike] = None) -> dict:
    """Names, where the library is, what it says about itself, and (with TensorRT) what got registered."""
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
    trt = optional.tensorrt() if optional.available("tensorrt") else None
    result["tensorrt"] = trt.label if trt is not None else None
    result["tensorrt_flavour"] = trt.flavour if trt is not None else None
    if not result["exists"]:
        result["hint"] = "build it with `vitdeploy plugins build` (needs nvcc, cmake and the TensorRT headers)"
        return result
    result["library_info"] = library_info(lib)
    if result["library_info"] is None:
        result["load_error"] = f"{lib}: not a vitdeploy plugin library (no vitdeployPluginLibraryInfo)"
        return result
    if result["library_info"].get("registration") != "static":  # dlopen of the static build registers
        try:
            handle = ctypes.CDLL(str(lib))
        except OSError as e:
            result["load_error"] = str(e)
            return result
        result["symbols"] = {name: hasattr(handle, name) for name in ENTRY_POINTS}
    if trt is not None:
        try:
            load(lib)
            result["registered_creators"] = registered_creators(trt)
        except UserError as e:
            result["load_error"] = str(e)
    return result
