"""The engine manifest `<engine>.json` (DESIGN decision 8).

Why: a TensorRT plan is only valid for the TensorRT version, GPU (compute capability) and plugin
library it was built with, and TensorRT's own failure for a mismatch is "Version tag does not
match" or a crash in a plugin (users' top complaints, anchors.md §2.9). The manifest records what
the engine was built from and with, so loading can say what differs and print the exact command
that rebuilds it. The manifest sits next to the engine as `<engine path>.json`
(`model.engine` -> `model.engine.json`), so it never collides with the ONNX-side
`model.report.json`.

TensorRT / CUDA are queried lazily (only `assert_compatible` and `current_environment` touch them).
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import json
import os
import shlex
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from vitdeploy.fileio import atomic_write_bytes, file_sha256
from vitdeploy.errors import CheckFailed, UserError

MANIFEST_FORMAT = "vitdeploy-engine-manifest"
MANIFEST_VERSION = 1


def manifest_path(engine_path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


sha256_file = file_sha256


def write_manifest(path, manifest: dict) -> Path:
    """Write `manifest` as JSON to `path` atomically. `path` is the manifest path itself."""
    data = json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n"
    atomic_write_bytes(path, data)
    return Path(path)


def read_manifest(engine_path) -> dict:
    """The manifest of `engine_path` (reads `<engine>.json`). UserError when missing/unreadable."""
    mpath = manifest_path(engine_path)
    if not mpath.exists():
        raise UserError(f"{engine_path}: no manifest {mpath.name} next to the engine; "
                        "build engines with `vitdeploy build` (it writes the manifest)")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{mpath}: unreadable engine manifest ({e}); rebuild the engine with vitdeploy build")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise UserError(f"{mpath}: not a vitdeploy engine manifest; rebuild the engine with vitdeploy build")
    return manifest


def make_manifest(*, engine_path, onnx_path, onnx_sha256: str, onnx_metadata: Dict[str, str],
                  precision: str, profile: Dict[str, dict], inputs: List[dict], outputs: List[dict],
                  tensorrt_version: str, gpu_name: Optional[str], compute_capability: Optional[str],
                  plugin_lib: Optional[str], plugin_lib_sha256: Optional[str], engine_sha256: str,
                  build_time_s: float, builder_options: dict, vitdeploy_version: Optional[str] = None) -> dict:
    if vitdeploy_version is None:
        from vitdeploy import __version__ as vitdeploy_version
    return {
        "format": MANIFEST_FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "vitdeploy_version": vitdeploy_version,
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "precision": precision,
        "profile": profile,
        "engine": os.path.basename(str(engine_path)),
        "engine_sha256": engine_sha256,
        "onnx_path": str(onnx_path),
        "onnx_sha256": onnx_sha256,
        "plugin_lib_path": str(plugin_lib) if plugin_lib else None,
        "plugin_lib_sha256": plugin_lib_sha256,
        "onnx_metadata": dict(onnx_metadata),
        "inputs": inputs,
        "outputs": outputs,
        "build_time_s": round(float(build_time_s), 3),
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "builder_options": builder_options,
    }


def rebuild_command(manifest: dict, engine_path=None, plugin_lib: Optional[str] = None) -> str:
    """The `vitdeploy build ...` command line that rebuilds this engine with its recorded options."""
    opts = manifest.get("builder_options", {}) or {}
    engine = str(engine_path) if engine_path is not None else manifest.get("engine", "model.engine")
    parts = ["vitdeploy", "build", manifest.get("onnx_path", "MODEL.onnx"), "-o", engine]
    lib = plugin_lib or (manifest.get("plugin_lib_path") if manifest.get("plugin_lib_sha256") else None)
    if lib:
        parts += ["--plugin-lib", str(lib)]
    for key, flag in (("min_batch", "--min-batch"), ("opt_batch", "--opt-batch"), ("max_batch", "--max-batch")):
        if opts.get(key) is not None:
            parts += [flag, str(opts[key])]
    if opts.get("timing_cache"):
        parts += ["--timing-cache", str(opts["timing_cache"])]
    return " ".join(shlex.quote(p) for p in parts)


def check_manifest(manifest: dict, *, trt_version: Optional[str], gpu_name: Optional[str],
                   compute_capability: Optional[str], plugin_lib_sha256: Optional[str]) -> List[str]:
    """Differences between what the engine was built with and the current setup (empty = OK).

    Why each: a plan is serialized for one exact TensorRT version (deserialize fails with
    "Version tag does not match"); kernels are compiled per compute capability; TensorRT warns
    that a plan used on another GPU model is "not recommended" (tactics were timed there); and a
    different plugin library may lay out the plugin's serialized fields differently.
    """
    diffs = []
    built_trt = manifest.get("tensorrt_version")
    if built_trt != trt_version:
        diffs.append(f"TensorRT version: engine built with {built_trt}, this environment has {trt_version}")
    built_cc = manifest.get("compute_capability")
    if built_cc != compute_capability:
        diffs.append(f"GPU compute capability: engine built for {built_cc}, this GPU is {compute_capability}")
    built_gpu = manifest.get("gpu_name")
    if built_gpu != gpu_name:
        diffs.append(f"GPU: engine built on {built_gpu!r}, this GPU is {gpu_name!r}")
    need = manifest.get("plugin_lib_sha256")
    if need is not None:
        if plugin_lib_sha256 is None:
            diffs.append("plugin library: the engine uses vitdeploy plugin nodes but no plugin library was "
                         "found (pass --plugin-lib or run `vitdeploy plugins build`)")
        elif plugin_lib_sha256 != need:
            diffs.append(f"plugin library: engine built with sha256 {need[:12]}…, the library found has "
                         f"{plugin_lib_sha256[:12]}…")
    return diffs


def _cuda_device_info():
    """(gpu name, "major.minor") of the current CUDA device through libcudart (Polygraphy's copy).

    cudaDeviceGetAttribute (attributes 75/76 = compute capability major/minor) is a stable API;
    the device name is the first field (char[256]) of cudaDeviceProp in every CUDA version, so a
    generous buffer is enough without knowing the struct's full layout for this CUDA release.
    """
    from polygraphy import cuda as pcuda

    lib = pcuda.wrapper().handle
    dev = ctypes.c_int(0)
    lib.cudaGetDevice(ctypes.byref(dev))
    major, minor = ctypes.c_int(-1), ctypes.c_int(-1)
    if lib.cudaDeviceGetAttribute(ctypes.byref(major), 75, dev) != 0 or \
            lib.cudaDeviceGetAttribute(ctypes.byref(minor), 76, dev) != 0:
        raise CheckFailed("CUDA could not report the GPU's compute capability (no GPU or driver problem)")
    buf = ctypes.create_string_buffer(16384)
    getprops = getattr(lib, "cudaGetDeviceProperties_v2", None) or lib.cudaGetDeviceProperties
    name = None
    if getprops(buf, dev) == 0:
        name = buf.raw[:256].split(b"\0", 1)[0].decode(errors="replace")
    return name, f"{major.value}.{minor.value}"


def current_environment() -> dict:
    """TensorRT version, GPU name and compute capability here (needs TensorRT and a GPU)."""
    trt = import_tensorrt()
    name, cc = _cuda_device_info()
    return {"tensorrt_version": trt.__version__, "gpu_name": name, "compute_capability": cc}


TENSORRT_MISSING = ("TensorRT is not installed: pip install 'vitdeploy[tensorrt]' "
                    "--extra-index-url https://pypi.nvidia.com (needs an NVIDIA GPU driver)")


def import_tensorrt():
    """`import tensorrt`, or UserError with the install hint (one line)."""
    try:
        import tensorrt as trt  # noqa: F401
    except Exception:  # ImportError, or OSError from missing libnvinfer in the bindings-only wheel
        raise UserError(TENSORRT_MISSING) from None
    return trt


def assert_compatible(engine_path, plugin_lib: Optional[str] = None) -> dict:
    """Check an engine's manifest against this machine before deserializing it.

    Returns the manifest. Raises UserError when the engine/manifest is missing or unreadable and
    CheckFailed (exit 1) when the setup differs, with what differs and the rebuild command.
    """
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise UserError(f"{engine_path}: engine file not found")
    manifest = read_manifest(engine_path)
    env = current_environment()
    lib_sha = None
    lib_path = None
    if manifest.get("plugin_lib_sha256") is not None:
        lib_path = resolve_plugin_lib(plugin_lib, required=False)
        lib_sha = sha256_file(lib_path) if lib_path else None
    diffs = check_manifest(manifest, trt_version=env["tensorrt_version"], gpu_name=env["gpu_name"],
                           compute_capability=env["compute_capability"], plugin_lib_sha256=lib_sha)
    want = manifest.get("engine_sha256")
    if want and sha256_file(engine_path) != want:
        diffs.append("engine file: its sha256 differs from the one recorded at build time "
                     "(the engine was replaced or truncated)")
    if diffs:
        cmd = rebuild_command(manifest, engine_path, plugin_lib=lib_path)
        raise CheckFailed(f"{engine_path} cannot run here: {'; '.join(diffs)}. Rebuild it: {cmd}")
    return manifest


def resolve_plugin_lib(explicit: Optional[str] = None, required: bool = False) -> Optional[str]:
    """The plugin library to use: explicit path, else `vitdeploy.plugins.library_path()`.

    The plugins module is written separately and may be absent or not built; tolerate both.
    """
    if explicit:
        if not os.path.isfile(explicit):
            raise UserError(f"{explicit}: plugin library not found; build it with `vitdeploy plugins build`")
        return str(explicit)
    path = None
    try:
        from vitdeploy import plugins

        finder = getattr(plugins, "library_path", None)
        if finder is not None:
            path = finder(None)
    except UserError:
        path = None
    except Exception:
        path = None
    if path and os.path.isfile(str(path)):
        return str(path)
    if required:
        raise UserError("the vitdeploy plugin library was not found; build it with `vitdeploy plugins build` "
                        "or pass --plugin-lib PATH")
    return None


DEFAULT_MAX_BATCH = 16


def profile_from_batches(input_shape: Sequence, min_batch: Optional[int] = None, opt_batch: Optional[int] = None,
                         max_batch: Optional[int] = None) -> dict:
    """{"min": shape, "opt": shape, "max": shape} for an NCHW input whose batch (dim 0) may vary.

    The resolution is fixed by the ONNX (SparseViT's TopK K is a constant), so only dim 0 varies;
    a static batch dim allows exactly that batch. Unset values default to the static batch, or to
    min 1 / opt = min / max = max(opt, 16) for a dynamic batch.
    """
    shape = list(input_shape)
    if not shape:
        raise UserError("the ONNX input has no dimensions; export the model again with vitdeploy export")
    static = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    if min_batch is None:
        min_batch = static or 1
    if opt_batch is None:
        opt_batch = static or min_batch
    if max_batch is None:
        max_batch = static or max(opt_batch, DEFAULT_MAX_BATCH)
    for name, b in (("--min-batch", min_batch), ("--opt-batch", opt_batch), ("--max-batch", max_batch)):
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise UserError(f"{name} {b!r}: batch sizes must be integers >= 1")
    if not (min_batch <= opt_batch <= max_batch):
        raise UserError(f"batch profile min={min_batch} opt={opt_batch} max={max_batch}: "
                        "needs min <= opt <= max")
    for i, d in enumerate(shape[1:], start=1):
        if not isinstance(d, int) or d <= 0:
            raise UserError(f"ONNX input dimension {i} is dynamic ({d!r}); only the batch may vary: "
                            "export with a fixed --img-size")
    batch = shape[0]
    if isinstance(batch, int) and batch > 0:
        if not (min_batch == opt_batch == max_batch == batch):
            raise UserError(f"the ONNX has a static batch of {batch} but the profile asks for "
                            f"{min_batch}/{opt_batch}/{max_batch}; use --min/--opt/--max-batch {batch} "
                            "or export with --batch dynamic")
    rest = [int(d) for d in shape[1:]]
    return {"min": [min_batch] + rest, "opt": [opt_batch] + rest, "max": [max_batch] + rest}
