"""ONNX -> TensorRT engine (+ manifest), on Polygraphy's TensorRT backend (DESIGN decision 11).

Polygraphy does the parsing, config and building (`NetworkFromOnnxPath`, `CreateConfig`,
`Profile`, `EngineBytesFromNetwork`, `save_timing_cache`); this module adds only what it does not
know: which plugin library to load, one batch profile derived from the ONNX, the manifest, parser
errors with node names, progress, and atomic output.

TensorRT API notes (checked against NVIDIA's TensorRT 10.x / 11.x Python API docs and the
TensorRT OSS Python bindings source `python/src/parsers/pyOnnx.cpp`):
- Strongly typed networks (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`, TRT >= 10.0; in 11.0
  "Deprecated ... Strongly typed mode is always enabled. This flag is retained ... but is
  ignored"). We always build strongly typed: the ONNX's types decide precision (decision 6), on
  10.x exactly as on 11.x; there is no FP16 builder flag (removed in 11.0).
- `OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE` (TRT >= 10.15; value 3 in NvOnnxParser.h): set when
  present and a plugin library is loaded. Our nodes also carry `plugin_namespace`, which makes
  10.15+/11.x prefer a registered plugin even without the flag; 10.7-10.14 prefer plugins over
  local functions anyway; < 10.7 always inline the function body (export-and-tensorrt.md §2).
  We set flags with `parser.set_flag` so the parser's defaults (e.g. NATIVE_INSTANCENORM) stay.
- `IParserError.node_name()/node_operator()/desc()/code()/local_function_stack()` (Python names
  from pyOnnx.cpp; C++ `nodeName`/`nodeOperator`/`localFunctionStack` listed in the 10.x
  `IParserError` reference).
- `IProgressMonitor` (TRT >= 10.0): `phase_start(phase_name, parent_phase, num_steps)`,
  `step_complete(phase_name, step) -> bool` (False cancels), `phase_finish(phase_name)`; must be
  thread-safe. Set through Polygraphy's `CreateConfig(progress_monitor=...)`.
- `IPluginRegistry.load_library(path)` (TRT >= 10.0; C++ `loadLibrary`, present since 8.6) loads
  a library through its `getCreators`/`setLoggerFinder` entry points (decision 7). Polygraphy's
  `LoadPlugins` only `ctypes.CDLL`s a library, which registers nothing for such a library.
- `IBuilderConfig.builder_optimization_level` (TRT >= 8.6, default 3, max 5),
  `set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)` (TRT >= 8.4), `INetworkDefinition`
  `get_input/get_output(i).name/.shape/.dtype`, `trt.nptype(DataType)`, `LayerType.PLUGIN_V3`
  (TRT >= 10.0; `PLUGIN_V2`/`PLUGIN` for older plugin layers).
- TF32 stays off (Polygraphy's default `tf32=False`): fp32 engines are compared against PyTorch
  with fp32 thresholds (max relative error 1e-4), which TF32 matmuls would not meet.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Union

from vitdeploy.engines.manifest import (
    atomic_write_bytes, current_environment, import_tensorrt, make_manifest, manifest_path,
    profile_from_batches, resolve_plugin_lib, sha256_file, write_manifest,
)
from vitdeploy.errors import CheckFailed, UserError

CUSTOM_DOMAIN = "vitdeploy"
PLUGIN_OPS = ("WindowGather", "WindowScatter")


def inspect_onnx(onnx_path) -> dict:
    """Inputs, outputs, vitdeploy metadata, plugin-node count and precision of an ONNX file."""
    import onnx

    from vitdeploy.export.onnx import load_onnx

    proto = load_onnx(onnx_path)

    def dims(vi):
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in vi.type.tensor_type.shape.dim]

    def dtype(vi):
        return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name

    init_names = {t.name for t in proto.graph.initializer}
    inputs = [{"name": i.name, "shape": dims(i), "dtype": dtype(i)}
              for i in proto.graph.input if i.name not in init_names]
    outputs = [{"name": o.name, "shape": dims(o), "dtype": dtype(o)} for o in proto.graph.output]
    meta = {p.key: p.value for p in proto.metadata_props if p.key.startswith("vitdeploy.")}
    plugin_nodes = sum(1 for n in proto.graph.node if n.domain == CUSTOM_DOMAIN and n.op_type in PLUGIN_OPS)
    precision = meta.get("vitdeploy.precision")
    if precision not in ("fp32", "fp16"):
        precision = "fp16" if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer) \
            else "fp32"
    return {"inputs": inputs, "outputs": outputs, "metadata": meta, "plugin_nodes": plugin_nodes,
            "precision": precision}


def load_plugin_library(path: str):
    """Register the plugin library's creators with TensorRT's plugin registry.

    Prefers `vitdeploy.plugins.load` (written alongside the library; it may do more, such as
    version checks) and falls back to `IPluginRegistry.load_library`.
    """
    try:
        from vitdeploy import plugins

        loader = getattr(plugins, "load", None)
    except Exception:
        loader = None
    if loader is not None:
        return loader(path)
    trt = import_tensorrt()
    handle = trt.get_plugin_registry().load_library(str(path))
    if not handle:
        raise UserError(f"{path}: TensorRT could not load this plugin library (built for another "
                        "TensorRT/CUDA?); rebuild it with `vitdeploy plugins build`")
    return handle


def _format_parser_errors(parser, onnx_path) -> str:
    msgs = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node_name = getattr(err, "node_name", lambda: "")() or ""
        node_op = getattr(err, "node_operator", lambda: "")() or ""
        stack = []
        if hasattr(err, "local_function_stack"):
            try:
                stack = list(err.local_function_stack())
            except Exception:
                stack = []
        where = f"node {node_name!r} ({node_op})" if node_name or node_op else f"node #{err.node()}"
        if stack:
            where += f" inside function {' > '.join(stack)}"
        msgs.append(f"{where}: {err.desc()} [{err.code()}]")
    return "; ".join(msgs) if msgs else "the parser reported failure without details"


def _network_loader(onnx_path: str, parser_flags: List):
    """A Polygraphy NetworkFromOnnxPath that reports parser errors with node names.

    Polygraphy logs parser errors and raises a generic "Could not parse ONNX correctly"; we keep
    its network/parser creation (strongly typed) and format the errors ourselves.
    """
    from polygraphy.backend.trt import NetworkFromOnnxPath
    from polygraphy.backend.trt.loader import BaseNetworkFromOnnx

    class _Loader(NetworkFromOnnxPath):
        def call_impl(self):
            base_impl = getattr(BaseNetworkFromOnnx.call_impl, "__wrapped__", BaseNetworkFromOnnx.call_impl)
            builder, network, parser = base_impl(self)
            for flag in parser_flags:
                parser.set_flag(flag)
            ok = parser.parse_from_file(str(self.path))
            if not ok or parser.num_errors > 0:
                raise UserError(f"{onnx_path}: TensorRT cannot parse this ONNX: "
                                f"{_format_parser_errors(parser, onnx_path)}")
            return builder, network, parser

    return _Loader(str(onnx_path), strongly_typed=True)


class _Heartbeat:
    """Elapsed-time progress while the builder runs (it gives no output for minutes)."""

    def __init__(self, progress: Callable[[str], None], every_s: float = 15.0):
        self.progress, self.every_s = progress, every_s
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every_s):
            self.progress(f"building engine... {time.monotonic() - self._t0:.0f} s")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=1.0)


def _progress_monitor(trt, progress: Callable[[str], None]):
    """A TensorRT IProgressMonitor reporting top-level builder phases, or None before TRT 10."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):
        def __init__(self):
            base.__init__(self)
            self._lock = threading.Lock()

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                with self._lock:
                    progress(f"TensorRT: {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            pass

    return _Monitor()


def _tensor_info(trt, tensor) -> dict:
    try:
        dtype = __import__("numpy").dtype(trt.nptype(tensor.dtype)).name
    except Exception:
        dtype = str(tensor.dtype)
    shape = [int(d) if int(d) >= 0 else "batch" if i == 0 else "?" for i, d in enumerate(tensor.shape)]
    return {"name": tensor.name, "shape": shape, "dtype": dtype}


def _plugin_layer_count(trt, network) -> int:
    kinds = {getattr(trt.LayerType, k) for k in ("PLUGIN_V3", "PLUGIN_V2", "PLUGIN") if hasattr(trt.LayerType, k)}
    return sum(1 for i in range(network.num_layers) if network.get_layer(i).type in kinds)


def build_engine(onnx_path, engine_path, *, plugin_lib: Union[str, None, bool] = None, min_batch: Optional[int] = None,
                 opt_batch: Optional[int] = None, max_batch: Optional[int] = None, timing_cache: Optional[str] = None,
                 opt_level: int = 3, workspace_gib: Optional[float] = None,
                 progress: Optional[Callable[[str], None]] = None) -> dict:
    """Build `engine_path` from `onnx_path` and write `<engine_path>.json`; returns the manifest.

    plugin_lib: a path; None = `vitdeploy.plugins.library_path()` when the ONNX has vitdeploy
    window nodes and the library is built (else the nodes run as their ONNX function bodies);
    False = never load a plugin (the function bodies are used).
    """
    progress = progress or (lambda msg: None)
    info = inspect_onnx(onnx_path)
    if len(info["inputs"]) != 1:
        raise UserError(f"{onnx_path}: expected one image input, found {[i['name'] for i in info['inputs']]}; "
                        "export it with vitdeploy export")
    inp = info["inputs"][0]
    shapes = profile_from_batches(inp["shape"], min_batch, opt_batch, max_batch)
    min_batch, opt_batch, max_batch = shapes["min"][0], shapes["opt"][0], shapes["max"][0]  # defaults resolved
    if not isinstance(opt_level, int) or not 0 <= opt_level <= 5:
        raise UserError(f"builder optimization level {opt_level!r}: must be an integer 0..5")
    if workspace_gib is not None and not workspace_gib > 0:
        raise UserError(f"workspace {workspace_gib!r} GiB: must be > 0")
    engine_path = Path(engine_path)
    if engine_path.is_dir():
        raise UserError(f"{engine_path}: is a directory; give an engine file path such as model.engine")
    if not engine_path.parent.exists():
        engine_path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(engine_path.parent, os.W_OK):
        raise UserError(f"{engine_path.parent}: directory is not writable")
    if timing_cache is not None and Path(timing_cache).is_dir():
        raise UserError(f"{timing_cache}: timing cache must be a file path")

    trt = import_tensorrt()
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, Profile

    env = current_environment()  # GPU name / compute capability: fail before a long build, not after

    lib = None
    if plugin_lib is not False:
        lib = resolve_plugin_lib(plugin_lib or None, required=False)
        if plugin_lib and lib is None:
            raise UserError(f"{plugin_lib}: plugin library not found")
    if lib:
        progress(f"loading plugin library {lib}")
        load_plugin_library(lib)
    elif info["plugin_nodes"]:
        progress("no plugin library loaded: the window gather/scatter nodes run as their ONNX function bodies")

    flags = []
    override = lib is not None and hasattr(trt.OnnxParserFlag, "ENABLE_PLUGIN_OVERRIDE")
    if override:
        flags.append(trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE)

    progress(f"parsing {onnx_path} (TensorRT {trt.__version__}, strongly typed, {info['precision']})")
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.WARNING):
        builder, network, parser = _network_loader(str(onnx_path), flags)()
    plugin_layers = _plugin_layer_count(trt, network)
    if info["plugin_nodes"] and lib and plugin_layers == 0:
        progress("note: this TensorRT inlined the window ops' function bodies instead of using the plugin "
                 "(plugins take precedence from TensorRT 10.7)")

    pool_limits = None
    if workspace_gib:
        pool_limits = {trt.MemoryPoolType.WORKSPACE: int(workspace_gib * (1 << 30))}
    monitor = _progress_monitor(trt, progress)
    load_cache = timing_cache if timing_cache and Path(timing_cache).is_file() else None
    from polygraphy.exception import PolygraphyException

    progress(f"building engine: batch {min_batch}..{max_batch} (opt {opt_batch}), optimization level {opt_level}")
    t0 = time.monotonic()
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.WARNING):
        config = CreateConfig(
            profiles=[Profile().add(inp["name"], shapes["min"], shapes["opt"], shapes["max"])],
            load_timing_cache=load_cache,
            builder_optimization_level=opt_level,
            memory_pool_limits=pool_limits,
            progress_monitor=monitor,
            tf32=False,
        )
    try:
        # Polygraphy's INFO lines (config dumps, TF32 notes) are noise here; TensorRT warnings and
        # errors still come through at WARNING.
        with _Heartbeat(progress), G_LOGGER.verbosity(G_LOGGER.WARNING):
            serialized = EngineBytesFromNetwork((builder, network, parser), config=config,
                                                save_timing_cache=timing_cache)()
    except PolygraphyException as e:
        raise CheckFailed(f"TensorRT could not build an engine from {onnx_path}: {str(e).strip().splitlines()[-1]}")
    build_time = time.monotonic() - t0
    if not serialized:
        raise CheckFailed(f"TensorRT could not build an engine from {onnx_path} (see the log above)")

    data = bytes(memoryview(serialized))
    inputs = [_tensor_info(trt, network.get_input(i)) for i in range(network.num_inputs)]
    outputs = [_tensor_info(trt, network.get_output(i)) for i in range(network.num_outputs)]
    import hashlib

    manifest = make_manifest(
        engine_path=engine_path, onnx_path=os.path.abspath(str(onnx_path)), onnx_sha256=sha256_file(onnx_path),
        onnx_metadata=info["metadata"], precision=info["precision"], profile={inp["name"]: shapes},
        inputs=inputs, outputs=outputs, tensorrt_version=trt.__version__, gpu_name=env["gpu_name"],
        compute_capability=env["compute_capability"], plugin_lib=lib if plugin_layers else None,
        plugin_lib_sha256=sha256_file(lib) if (lib and plugin_layers) else None,
        engine_sha256=hashlib.sha256(data).hexdigest(), build_time_s=build_time,
        builder_options={
            "min_batch": min_batch, "opt_batch": opt_batch, "max_batch": max_batch,
            "opt_level": opt_level, "workspace_gib": workspace_gib,
            "timing_cache": os.path.abspath(timing_cache) if timing_cache else None,
            "strongly_typed": True, "plugin_override_flag": override, "tf32": False,
            "plugin_layers": plugin_layers, "plugin_nodes_in_onnx": info["plugin_nodes"],
        },
    )
    # Engine first, then its manifest: if we die in between, the old manifest's engine_sha256
    # no longer matches and loading says so instead of running a mismatched engine.
    atomic_write_bytes(engine_path, data)
    write_manifest(manifest_path(engine_path), manifest)
    progress(f"engine built in {build_time:.1f} s ({len(data) / 1e6:.1f} MB, {plugin_layers} plugin layers)")
    return manifest
