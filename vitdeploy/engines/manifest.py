"""The engine manifest `<engine>.json` (DESIGN decision 8): write it, read it, check it.

Why: a TensorRT plan is only valid for the TensorRT version, GPU (compute capability) and plugin
library it was built with, and TensorRT's own failure for a mismatch is "Version tag does not
match" or a crash in a plugin (users' top complaints, anchors.md §2.9). The manifest records what
the engine was built from and with, so loading can say what differs and print the exact command
that rebuilds it. It sits next to the engine as `<engine path>.json` (`model.engine` ->
`model.engine.json`), so it never collides with the ONNX-side `model.report.json`.

TensorRT and the GPU are queried only by `current_environment` (lazily, through
`vitdeploy.optional` and `vitdeploy.engines.device`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from vitdeploy import optional
from vitdeploy.errors import CheckFailed, UserError
from vitdeploy.fileio import atomic_write_bytes, file_sha256

MANIFEST_FORMAT = "vitdeploy-engine-manifest"
MANIFEST_VERSION = 2  # 2: tensorrt_flavour, compute_capabilities, plugin_layers, engine_bytes

# TensorRT spells dtypes its own way when numpy cannot name them.
_TRT_DTYPE_NAMES = {"float": "float32", "half": "float16", "int32": "int32", "int64": "int64", "int8": "int8",
                    "bool": "bool", "uint8": "uint8", "bf16": "bfloat16", "fp8": "float8_e4m3fn"}


class EngineManifest(dict):
    """The one type that writes and reads `<engine>.json`: a dict (the JSON, as written) with typed accessors.

    `EngineManifest.read(engine)` checks the format; `.write(path)` writes atomically; `tensors`,
    `batch_profile`, `flavour`, `targets` are the only readers of those fields (artifact.py and the
    TensorRT runner ask here)."""

    @classmethod
    def read(cls, engine_path) -> "EngineManifest":
        return read_manifest(engine_path)

    def write(self, path) -> Path:
        return write_manifest(path, self)

    @property
    def flavour(self) -> str:
        """"trt" (enterprise) or "rtx"; manifests before version 2 were enterprise only."""
        return str(self.get("tensorrt_flavour") or "trt")

    @property
    def targets(self) -> Optional[List[str]]:
        """RTX: the compute capabilities targeted ([] = the builder's defaults); enterprise: the GPU's one."""
        if self.flavour == "rtx":
            return list(self.get("compute_capabilities") or [])
        cc = self.get("compute_capability")
        return [cc] if cc else None

    @property
    def plugin_layers(self) -> int:
        return int(self.get("plugin_layers", (self.get("builder_options") or {}).get("plugin_layers", 0)) or 0)

    def tensors(self, what: str, where=None) -> List[Tuple[str, str, list]]:
        """(name, numpy dtype name, shape) of the engine's "inputs" or "outputs"; dynamic dims as strings."""
        where = where or self.get("engine", "engine manifest")
        items = self.get(what)
        if not isinstance(items, list) or not items or not all(isinstance(t, dict) and "name" in t for t in items):
            raise UserError(f"{where}: manifest has no usable {what!r} (name, shape, dtype); rebuild the engine "
                            "with `vitdeploy build`")
        out = []
        for t in items:
            dtype = str(t.get("dtype", "float32")).replace("DataType.", "")
            dtype = _TRT_DTYPE_NAMES.get(dtype.lower(), dtype)
            shape = t.get("shape")
            if not isinstance(shape, list):
                raise UserError(f"{where}: manifest {what} {t['name']!r} has no shape; rebuild the engine")
            out.append((str(t["name"]), dtype, [d if isinstance(d, int) and d >= 0 else str(d) for d in shape]))
        return out

    def batch_profile(self, input_name: str) -> Optional[Tuple[int, int, int]]:
        """(min, opt, max) batch of the optimization profile for `input_name`, or None."""
        entry = (self.get("profile") or {}).get(input_name)
        if not isinstance(entry, dict) or not all(k in entry for k in ("min", "opt", "max")):
            return None
        return int(entry["min"][0]), int(entry["opt"][0]), int(entry["max"][0])


class EngineWarning(UserWarning):
    """The engine runs here, but not on the setup it was tuned for (TensorRT itself only warns)."""


def manifest_path(engine_path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def write_manifest(path, manifest: dict) -> Path:
    """Write `manifest` as JSON to `path` atomically. `path` is the manifest path itself."""
    data = json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n"
    atomic_write_bytes(path, data)
    return Path(path)


def read_manifest(engine_path) -> EngineManifest:
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
    return EngineManifest(manifest)


def make_manifest(*, engine_path, onnx_path, onnx_sha256: str, onnx_metadata: Dict[str, str],
                  precision: str, profile: Dict[str, dict], inputs: List[dict], outputs: List[dict],
                  tensorrt_version: str, gpu_name: Optional[str], compute_capability: Optional[str],
                  plugin_lib: Optional[str], plugin_lib_sha256: Optional[str], engine_sha256: str,
                  build_time_s: float, builder_options: dict, vitdeploy_version: Optional[str] = None,
                  tensorrt_flavour: str = "trt", compute_capabilities: Optional[List[str]] = None,
                  plugin_layers: int = 0, engine_bytes: Optional[int] = None,
                  network: Optional[dict] = None) -> EngineManifest:
    """The manifest. `plugin_lib*` are set only when the built network has vitdeploy plugin layers.

    Enterprise TensorRT records the GPU it was built on (`gpu_name`, `compute_capability`); TensorRT for
    RTX records the compute capabilities it targeted (`compute_capabilities`, [] = the builder's defaults)
    and no GPU (its builder needs none)."""
    if vitdeploy_version is None:
        from vitdeploy import __version__ as vitdeploy_version
    return EngineManifest({
        "format": MANIFEST_FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "vitdeploy_version": vitdeploy_version,
        "tensorrt_flavour": tensorrt_flavour,
        "tensorrt_version": tensorrt_version,
        "compute_capabilities": list(compute_capabilities or []) if tensorrt_flavour == "rtx" else None,
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "plugin_layers": int(plugin_layers),
        "engine_bytes": engine_bytes,
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
        "network": network,  # layers, strongly_typed, layer_types histogram (engines/build.network_summary)
    })


def rebuild_command(manifest: dict, engine_path=None, plugin_lib: Optional[str] = None) -> str:
    """The `vitdeploy build ...` command line that rebuilds this engine with its recorded options."""
    opts = manifest.get("builder_options", {}) or {}
    engine = str(engine_path) if engine_path is not None else manifest.get("engine", "model.engine")
    parts = ["vitdeploy", "build", manifest.get("onnx_path", "MODEL.onnx"), "-o", engine]
    flavour = manifest.get("tensorrt_flavour") or "trt"
    parts += ["--tensorrt", flavour]
    if flavour == "rtx" and manifest.get("compute_capabilities"):
        parts += ["--compute-capability", *map(str, manifest["compute_capabilities"])]
    lib = plugin_lib or (manifest.get("plugin_lib_path") if manifest.get("plugin_lib_sha256") else None)
    if lib:
        parts += ["--plugin-lib", str(lib)]
    for key, flag in (("min_batch", "--min-batch"), ("opt_batch", "--opt-batch"), ("max_batch", "--max-batch")):
        if opts.get(key) is not None:
            parts += [flag, str(opts[key])]
    if opts.get("timing_cache"):
        parts += ["--timing-cache", str(opts["timing_cache"])]
    if opts.get("runtime_cache"):
        parts += ["--runtime-cache", str(opts["runtime_cache"])]
    return " ".join(shlex.quote(p) for p in parts)


def check_manifest(manifest: dict, *, trt_version: Optional[str], gpu_name: Optional[str],
                   compute_capability: Optional[str], plugin_lib_sha256: Optional[str]
                   ) -> Tuple[List[str], List[str]]:
    """(refusals, warnings): what stops the engine from running here, and what only makes it slower.

    Refusals: a plan is serialized for one exact TensorRT version (deserialize fails with "Version
    tag does not match"); kernels are compiled per compute capability; a different plugin library
    may lay out the plugin's serialized fields differently. Warning: another GPU model with the same
    compute capability runs the plan (TensorRT warns "not recommended": tactics were timed elsewhere).
    """
    refusals, notes = [], []
    built_trt = manifest.get("tensorrt_version")
    if built_trt != trt_version:
        refusals.append(f"TensorRT version: engine built with {built_trt}, this environment has {trt_version}")
    built_cc = manifest.get("compute_capability")
    if built_cc != compute_capability:
        refusals.append(f"GPU compute capability: engine built for {built_cc}, this GPU is {compute_capability}")
    elif manifest.get("gpu_name") != gpu_name:
        notes.append(f"GPU: engine built and timed on {manifest.get('gpu_name')!r}, this GPU is {gpu_name!r} "
                     f"(same compute capability {built_cc}: it runs, maybe slower)")
    need = manifest.get("plugin_lib_sha256")
    if need is not None:
        if plugin_lib_sha256 is None:
            refusals.append("plugin library: the engine has vitdeploy plugin layers but no plugin library was "
                            "found (pass --plugin-lib or run `vitdeploy plugins build`)")
        elif plugin_lib_sha256 != need:
            refusals.append(f"plugin library: engine built with sha256 {need[:12]}…, the library found has "
                            f"{plugin_lib_sha256[:12]}…")
    return refusals, notes


def current_environment(flavour: Optional[str] = None) -> dict:
    """This process's TensorRT (flavour, version) and, where there is one, the GPU (name, compute capability).

    Enterprise TensorRT builds for the GPU it runs on, so its build needs the GPU (NVML); TensorRT for
    RTX builds on any host and never asks NVML here (`gpu_name`/`compute_capability` are None)."""
    from vitdeploy.engines.device import current_gpu

    trt = optional.tensorrt(flavour)
    env = {"tensorrt_flavour": trt.flavour, "tensorrt_version": trt.version, "gpu_name": None,
           "compute_capability": None}
    if trt.flavour == "trt":
        env["gpu_name"], env["compute_capability"] = current_gpu()
    return env


def check_host_can_run(engine_path, manifest: EngineManifest) -> None:
    """UserError (exit 2), before CUDA is touched, when this host cannot run the engine at all: its flavour
    is not installed or another one is in use, there is no NVIDIA GPU, or (RTX) the GPU's compute
    capability is not among the engine's targets or `IRuntime.get_engine_validity` says no."""
    from vitdeploy.engines.device import current_gpu, gpu_present

    trt = optional.tensorrt(manifest.flavour)  # install hint / "already uses the other flavour": UserError
    what = f"{engine_path} is a {trt.label.rsplit(' ', 1)[0]} {manifest.get('tensorrt_version')} engine"
    targets = manifest.targets
    where = (f"an RTX GPU with compute capability {' or '.join(targets)}" if manifest.flavour == "rtx" and targets
             else "an RTX GPU (Ampere, Ada or Blackwell)" if manifest.flavour == "rtx"
             else f"a GPU with compute capability {manifest.get('compute_capability')}")
    if not gpu_present():
        raise UserError(f"{what}: this host has no NVIDIA GPU; run it on {where}, or check the ONNX here "
                        f"with --backend ort ({manifest.get('onnx_path', 'MODEL.onnx')})")
    if manifest.flavour != "rtx":
        return
    try:
        _, cc = current_gpu()
    except (CheckFailed, UserError):  # no nvidia-ml-py (the tensorrt-rtx extra has none): TensorRT decides below
        cc = None
    if targets and cc is not None and cc not in targets:
        raise UserError(f"{what} built for compute capability {', '.join(targets)}; this GPU is {cc}"
                        + (" (TensorRT for RTX has no 9.0 target: use --tensorrt trt on H100/H200)"
                           if cc.startswith("9.") else f": rebuild with --compute-capability {cc}"))
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    if hasattr(runtime, "get_engine_validity"):
        validity, diagnostics = runtime.get_engine_validity(Path(engine_path).read_bytes())
        if validity == trt.EngineValidity.SUBOPTIMAL:  # runs, but not as fast as it could (diagnostics: bits)
            warnings.warn(f"{what}: TensorRT says it runs on this GPU suboptimally (diagnostics {diagnostics}); "
                          f"rebuild it here for full speed", EngineWarning, stacklevel=3)
        elif validity != trt.EngineValidity.VALID:
            raise UserError(f"{what}: TensorRT says it cannot run on this GPU ({validity.name}: {diagnostics}); "
                            f"rebuild it: {rebuild_command(manifest, engine_path)}")


def assert_compatible(engine_path, plugin_lib: Optional[str] = None) -> dict:
    """Check an engine's manifest against this machine before deserializing it; returns the manifest.

    UserError when the engine/manifest is missing or unreadable or a named plugin library does not
    exist; CheckFailed (exit 1) when the setup differs, with what differs and the rebuild command;
    an EngineWarning when only the GPU model differs.
    """
    from vitdeploy import plugins

    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise UserError(f"{engine_path}: engine file not found")
    manifest = read_manifest(engine_path)
    check_host_can_run(engine_path, manifest)
    env = current_environment(manifest.flavour)
    if manifest.flavour == "rtx":  # the host check compared targets; the version is what remains
        env["gpu_name"], env["compute_capability"] = manifest.get("gpu_name"), manifest.get("compute_capability")
    lib_path = plugins.library_path(plugin_lib) if manifest.get("plugin_lib_sha256") is not None else None
    refusals, notes = check_manifest(
        manifest, trt_version=env["tensorrt_version"], gpu_name=env["gpu_name"],
        compute_capability=env["compute_capability"], plugin_lib_sha256=file_sha256(lib_path) if lib_path else None)
    want = manifest.get("engine_sha256")
    if want and file_sha256(engine_path) != want:
        refusals.append("engine file: its sha256 differs from the one recorded at build time "
                        "(the engine was replaced or truncated)")
    if refusals:
        cmd = rebuild_command(manifest, engine_path, plugin_lib=str(lib_path) if lib_path else None)
        raise CheckFailed(f"{engine_path} cannot run here: {'; '.join(refusals)}. Rebuild it: {cmd}")
    for note in notes:
        warnings.warn(f"{engine_path}: {note}", EngineWarning, stacklevel=2)
    return manifest
