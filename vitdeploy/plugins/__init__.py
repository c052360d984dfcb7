"""The native plugin library: its names, where it is (``library_path``) and loading it (``load``).

``libvitdeploy_plugins.so`` holds the TensorRT ``IPluginV3`` plugins ``vitdeploy::WindowGather`` and
``vitdeploy::WindowScatter`` (version "1") and exports ``getCreators`` / ``setLoggerFinder`` (DESIGN
decision 7): what ``IPluginRegistry::loadLibrary``, ``trtexec --dynamicPlugins`` and the C++ runner use.
``libvitdeploy_plugins_static_reg.so`` registers the same creators when it is dlopen'ed, for hosts
that only dlopen (Triton's TensorRT backend, ``LD_PRELOAD``, ``trtexec --staticPlugins``).

This module is the one place that decides which library file is meant and the one place that puts
it into TensorRT's (process-global) registry. Building is ``vitdeploy.plugins.build``, describing a
library is ``vitdeploy.plugins.info``. Nothing here imports TensorRT at module level.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Union

from vitdeploy import optional
from vitdeploy.errors import UserError
from vitdeploy.export.window_nodes import GATHER, PLUGIN_NAMESPACE, PLUGIN_VERSION, SCATTER

PLUGIN_OPS = (GATHER, SCATTER)

LIBRARY_NAME = "libvitdeploy_plugins.so"
STATIC_REG_LIBRARY_NAME = "libvitdeploy_plugins_static_reg.so"
KERNELS_LIBRARY_NAME = "libvitdeploy_window_ops.so"
RUNNER_NAME = "vitdeploy-run"
ENTRY_POINTS = ("getCreators", "setLoggerFinder", "vitdeployInitPlugins", "vitdeployPluginLibraryInfo")
REBUILD_HINT = ("rebuild it with `vitdeploy plugins build --tensorrt-root DIR` (or TensorRT_INCLUDE_DIR=DIR) "
                "against the TensorRT headers this process needs")

PathLike = Union[str, "os.PathLike[str]"]

# resolved path -> registry handle (None when the creators were already registered), so loading the same
# library twice in one process is a no-op instead of TensorRT's "already registered" error.
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
    """The plugin library meant: ``explicit``, else ``$VITDEPLOY_PLUGIN_LIB``, else the default build.

    A path the user named (argument or environment) must be a file, else UserError naming it; the
    default build may simply not have happened yet, which returns None.
    """
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise UserError(f"{p}: plugin library not found; build it with `vitdeploy plugins build` "
                            f"or pass the path of an existing {LIBRARY_NAME}")
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


_INFO_RE = re.compile(rb'\{"namespace":"vitdeploy"[^\x00]*?"registration":"(?:static|dynamic)"\}')


def library_info(path: PathLike) -> Optional[dict]:
    """The JSON that ``vitdeployPluginLibraryInfo()`` returns, read from the file's bytes.

    Read without dlopen on purpose: dlopen of the static-registration build registers its creators,
    which must not happen before we know the library matches this process's TensorRT major.
    None when the file is not a vitdeploy plugin library.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    m = _INFO_RE.search(data)
    if m is None:
        return None
    try:
        return json.loads(m.group(0).decode())
    except (ValueError, UnicodeDecodeError):
        return None


def _major(version: str) -> Optional[int]:
    head = str(version).split(".", 1)[0]
    return int(head) if head.isdigit() else None


def check_tensorrt_major(info: dict, tensorrt_version: str, path: PathLike, flavour: str = "trt") -> None:
    """UserError unless the library was built against the TensorRT headers' major this process needs.

    TensorRT keeps its plugin ABI only within a major (11.x added a base class to ``ILoggerFinder``,
    so a 10.x-built library calls the wrong vtable slot on its first log line). Enterprise TensorRT:
    the same major as the library. TensorRT for RTX 1.x: the TensorRT 11 headers
    (``optional.RTX_PLUGIN_HEADER_MAJOR``; an 11.1-header build is measured to load and build).
    """
    built = str(info.get("tensorrt_headers", ""))
    if flavour == "rtx":
        need = optional.RTX_PLUGIN_HEADER_MAJOR.get(_major(tensorrt_version))
        runs = f"TensorRT for RTX {tensorrt_version}, which needs a build against TensorRT {need or '?'}.x headers"
    else:
        need = _major(tensorrt_version)
        runs = f"TensorRT {tensorrt_version}"
    if _major(built) is None or need is None or _major(built) != need:
        raise UserError(f"{path}: built against TensorRT {built or 'unknown'} headers, but this process runs "
                        f"{runs}; {REBUILD_HINT}")


def registered_creators(trt) -> List[dict]:
    """Our creators in TensorRT's registry, through ``all_creators`` (``get_creator`` logs an error on a miss)."""
    out = []
    for c in trt.get_plugin_registry().all_creators:
        if getattr(c, "plugin_namespace", None) == PLUGIN_NAMESPACE:
            out.append({"name": c.name, "version": c.plugin_version, "namespace": c.plugin_namespace})
    return out


def _registry_has_ours(trt) -> bool:
    names = {(c["name"], c["version"]) for c in registered_creators(trt)}
    return all((op, PLUGIN_VERSION) in names for op in PLUGIN_OPS)


def load(path: Optional[PathLike] = None) -> str:
    """Register the library's creators with TensorRT's registry in this process; returns its resolved path.

    Checks the TensorRT major first (``check_tensorrt_major``). The dynamic-registration build goes
    through ``IPluginRegistry.load_library`` (its getCreators path); the static-registration build
    registers itself when dlopen'ed. Both are opened RTLD_LOCAL: nothing in them is for other libraries.
    """
    p = library_path(path)
    if p is None:
        raise UserError(f"the vitdeploy plugin library was not found (looked in {default_build_dir()}); build it "
                        "with `vitdeploy plugins build` or pass --plugin-lib PATH")
    key = str(p.resolve())
    if key in _LOADED:
        return key
    meta = library_info(key)
    if meta is None:
        raise UserError(f"{p}: not a vitdeploy plugin library (no vitdeployPluginLibraryInfo); pass "
                        f"{LIBRARY_NAME} from `vitdeploy plugins build`")
    trt = optional.tensorrt()
    check_tensorrt_major(meta, trt.version, p, trt.flavour)
    handle = None
    if not _registry_has_ours(trt):  # else registered already (this library's static twin, or LD_PRELOAD)
        try:
            ctypes.CDLL(key)  # RTLD_LOCAL; a missing dependency reads better here than from TensorRT
        except OSError as e:
            raise UserError(f"{p}: cannot load the plugin library ({e}); {REBUILD_HINT}") from None
        if meta.get("registration") != "static":
            handle = trt.get_plugin_registry().load_library(key)
            if not handle:
                raise UserError(f"{p}: TensorRT {trt.__version__} could not register this plugin library; "
                                f"{REBUILD_HINT}")
        if not _registry_has_ours(trt):
            raise UserError(f"{p}: loaded, but TensorRT's registry has no {PLUGIN_NAMESPACE} "
                            f"{'/'.join(PLUGIN_OPS)} version {PLUGIN_VERSION} creators; {REBUILD_HINT}")
    _LOADED[key] = handle
    return key


# Bound after the names above exist: the submodules import them from here.
from vitdeploy.plugins.build import build  # noqa: E402
from vitdeploy.plugins.info import info  # noqa: E402

__all__ = ["PLUGIN_NAMESPACE", "PLUGIN_VERSION", "PLUGIN_OPS", "LIBRARY_NAME", "STATIC_REG_LIBRARY_NAME",
           "KERNELS_LIBRARY_NAME", "RUNNER_NAME", "ENTRY_POINTS", "csrc_dir", "runner_src_dir",
           "default_build_dir", "library_path", "runner_path", "library_info", "check_tensorrt_major",
           "registered_creators", "load", "build", "info"]
