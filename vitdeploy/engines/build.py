"""ONNX -> TensorRT engine (+ manifest), on Polygraphy's TensorRT backend (DESIGN decision 11).

Polygraphy does the network creation, config and building (`BaseNetworkFromOnnx`, `CreateConfig`,
`Profile`, `EngineBytesFromNetwork`, `save_timing_cache`); this module adds only what it does not
know: which plugin library to load, one batch profile derived from the ONNX, the manifest, parser
errors with node names, progress, and atomic output.

TensorRT API notes (checked against NVIDIA's TensorRT 10.x / 11.x Python API docs and the
TensorRT OSS Python bindings source `python/src/parsers/pyOnnx.cpp`):
- Strongly typed networks (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`, TRT >= 10.0; in 11.0
  "Deprecated ... Strongly typed mode is always enabled. This flag is retained ... but is
  ignored"). We always build strongly typed: the ONNX's types decide precision (decision 6), on
  10.x exactly as on 11.x; there is no FP16 builder flag (removed in 11.0).
- What the parser gets is decided by `parse_plan`, a pure function (tier-1 tested): TensorRT's
  plugin registry is process-global and from 10.7 the parser prefers a registered plugin over a
  model-local function (10.15+/11.x: any node with a `plugin_namespace` attribute), so a build
  without the plugin parses a copy with the local functions inlined (`onnx.inliner`): no vitdeploy
  node reaches the parser, whatever was loaded earlier in the process.
- `OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE` is never set: Polygraphy's loader calls
  `trt.init_libnvinfer_plugins(logger, "")`, which registers the legacy `ScatterND` /
  `ScatterElements` plugins in namespace "", and with the flag "a loaded plugin with the same name
  as an ONNX operator type" replaces the standard op even without a namespace attribute
  (NvOnnxParser.h): a portable SparseViT's ScatterND nodes would become that fp32/int32-only plugin.
- The manifest's plugin dependency comes from the built network: PLUGIN_V3 layers whose plugin
  namespace is `vitdeploy` (`IPluginV3Layer.plugin.get_capability_interface(CORE).plugin_namespace`),
  never from whether a library path was given.
- `IParserError.node_name()/node_operator()/desc()/code()/local_function_stack()` (Python names
  from pyOnnx.cpp; C++ `nodeName`/`nodeOperator`/`localFunctionStack` listed in the 10.x
  `IParserError` reference).
- `IProgressMonitor` (TRT >= 10.0): `phase_start(phase_name, parent_phase, num_steps)`,
  `step_complete(phase_name, step) -> bool` (False cancels), `phase_finish(phase_name)`; must be
  thread-safe. Set through Polygraphy's `CreateConfig(progress_monitor=...)`.
- `IPluginRegistry.load_library(path)` (TRT >= 10.0; C++ `loadLibrary`, present since 8.6) loads
  a library through its `getCreators`/`setLoggerFinder` entry points (decision 7), done by
  `vitdeploy.plugins.load`. Polygraphy's `LoadPlugins` only `ctypes.CDLL`s a library, which registers
  nothing for such a library.
- `IBuilderConfig.builder_optimization_level` (TRT >= 8.6, default 3, max 5),
  `set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)` (TRT >= 8.4), `INetworkDefinition`
  `get_input/get_output(i).name/.shape/.dtype`, `trt.nptype(DataType)`, `LayerType.PLUGIN_V3`
  (TRT >= 10.0).
- TF32 stays off (Polygraphy's default `tf32=False`; RTX turns it on by default and the seam clears
  it): fp32 engines are compared against PyTorch with fp32 thresholds (max relative error 1e-4),
  which TF32 matmuls would not meet.
- Two flavours (DESIGN decision 14): everything flavour-specific — the module, Polygraphy's classes,
  the config (`CreateConfig` vs `CreateConfigRTX` + compute capabilities), the environment facts,
  the RTX parser's loader fix — comes from `vitdeploy.optional.tensorrt()`; this module names no
  TensorRT module. TensorRT for RTX 1.7 has no precision builder flags (strongly typed only, as we
  build), no `add_plugin_v3` (plugins enter through the parser), timing-cache calls are no-ops (a
  runtime cache replaces them) and `nptype(DataType.FP8)` raises (dtype names are mapped here).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Tuple, Union

import onnx

from vitdeploy import optional, plugins
from vitdeploy.engines.manifest import current_environment, make_manifest, manifest_path, write_manifest
from vitdeploy.engines.profiles import profile_from_batches
from vitdeploy.errors import CheckFailed, UserError
from vitdeploy.export.window_nodes import DOMAIN, inline_functions
from vitdeploy.fileio import atomic_write_bytes, file_sha256

# ------------------------------------------------------------------------------ what the parser gets

@dataclass(frozen=True)
class ParsePlan:
    model: onnx.ModelProto  # what TensorRT's ONNX parser is given
    load_plugin: bool  # register the plugin library before parsing
    vitdeploy_nodes: int  # vitdeploy nodes in the original graph


def vitdeploy_node_count(proto: onnx.ModelProto) -> int:
    return sum(1 for n in proto.graph.node if n.domain == DOMAIN)


def parse_plan(proto: onnx.ModelProto, plugin_available: bool) -> ParsePlan:
    """What the parser gets. Pure: no TensorRT, no files.

    With vitdeploy nodes and a plugin library: the model as is, and the library is loaded. Otherwise
    (no library, a no-plugin build, or no vitdeploy nodes at all) the library is not loaded, and
    any vitdeploy nodes are replaced by their function bodies here, so the parser never sees one
    (it would pick a registered plugin over the body, from TensorRT 10.7).
    """
    count = vitdeploy_node_count(proto)
    if count and plugin_available:
        return ParsePlan(proto, True, count)
    if not count:
        return ParsePlan(proto, False, 0)
    try:
        inlined = inline_functions(proto)  # every inlined node named uniquely: no parser duplicate-name warning
    except ValueError as e:
        raise UserError(f"the ONNX has {e}; export it again with vitdeploy export, or build with the plugin "
                        "library") from None
    return ParsePlan(inlined, False, count)


def count_plugin_layers(layers: Iterable[Tuple[str, Optional[str]]]) -> int:
    """How many (layer kind, plugin namespace) pairs are vitdeploy plugin layers."""
    return sum(1 for kind, namespace in layers if kind == "PLUGIN_V3" and namespace == plugins.PLUGIN_NAMESPACE)


def network_summary(trt, network) -> dict:
    """What the parsed network is made of, for the manifest and the tests: layer count, strongly typed,
    and a histogram of "LAYER_TYPE:OUTPUT_DTYPE" (e.g. "MATRIX_MULTIPLY:HALF", "QUANTIZE:INT8")."""
    hist = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        dtype = layer.get_output(0).dtype.name if layer.num_outputs else "NONE"
        key = f"{layer.type.name}:{dtype}"
        hist[key] = hist.get(key, 0) + 1
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return {"layers": network.num_layers,
            "strongly_typed": bool(network.get_flag(flag)) if flag is not None else None,
            "layer_types": dict(sorted(hist.items()))}


def _network_layers(trt, network):
    """(kind, plugin namespace or None) of every layer, read the way Polygraphy casts layers."""
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = layer.type.name  # pybind11 enum member name, e.g. "PLUGIN_V3"
        namespace = None
        if layer.type == trt.LayerType.PLUGIN_V3:
            layer.__class__ = trt.IPluginV3Layer
            core = layer.plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
            namespace = getattr(core, "plugin_namespace", None)
        yield kind, namespace


# ------------------------------------------------------------------------------ parsing

def _format_parser_errors(parser) -> str:
    msgs = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node_name = err.node_name() or ""
        node_op = err.node_operator() or ""
        stack = list(err.local_function_stack())
        where = f"node {node_name!r} ({node_op})" if node_name or node_op else f"node #{err.node()}"
        if stack:
            where += f" inside function {' > '.join(stack)}"
        msgs.append(f"{where}: {err.desc()} [{err.code()}]")
    return "; ".join(msgs) if msgs else "the parser reported failure without details"


def _network_loader(trt, onnx_path: str, plan: ParsePlan):
    """Polygraphy's strongly typed network + parser, fed the plan's model; parser errors with node names.

    Polygraphy logs parser errors and raises a generic "Could not parse ONNX correctly"; we keep
    its network/parser creation and parse ourselves. `path` lets the parser find external weights.
    The parser's flags stay TensorRT's defaults (ENABLE_PLUGIN_OVERRIDE off: module docstring);
    `parser_flags` reads back what the real parser has, for the manifest and the tests.
    """
    BaseNetworkFromOnnx = trt.polygraphy().BaseNetworkFromOnnx
    model_bytes = plan.model.SerializeToString()

    class _Loader(BaseNetworkFromOnnx):
        def call_impl(self):
            base_impl = getattr(BaseNetworkFromOnnx.call_impl, "__wrapped__", BaseNetworkFromOnnx.call_impl)
            builder, network, parser = base_impl(self)
            if "ENABLE_PLUGIN_OVERRIDE" in trt.parser_flags(parser):
                raise RuntimeError("the ONNX parser has ENABLE_PLUGIN_OVERRIDE set; vitdeploy never sets it")
            ok = parser.parse(model_bytes, str(onnx_path))
            if not ok or parser.num_errors > 0:
                raise UserError(f"{onnx_path}: TensorRT cannot parse this ONNX: {_format_parser_errors(parser)}")
            return builder, network, parser

    return _Loader(strongly_typed=True)


# ------------------------------------------------------------------------------ progress

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
    """A TensorRT IProgressMonitor reporting top-level builder phases."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
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


_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
                "INT64": "int64", "BOOL": "bool", "UINT8": "uint8", "FP8": "float8_e4m3fn"}


def _tensor_info(trt, tensor) -> dict:
    dtype = _DTYPE_NAMES.get(tensor.dtype.name, tensor.dtype.name.lower())  # nptype(FP8) raises on RTX
    shape = [int(d) if int(d) >= 0 else "batch" if i == 0 else "?" for i, d in enumerate(tensor.shape)]
    return {"name": tensor.name, "shape": shape, "dtype": dtype}


# ------------------------------------------------------------------------------ build

def _check_outputs(engine_path: Path, timing_cache: Optional[str], runtime_cache: Optional[str] = None) -> None:
    if engine_path.is_dir():
        raise UserError(f"{engine_path}: is a directory; give an engine file path such as model.engine")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(engine_path.parent, os.W_OK):
        raise UserError(f"{engine_path.parent}: directory is not writable")
    if timing_cache is not None and Path(timing_cache).is_dir():
        raise UserError(f"{timing_cache}: timing cache must be a file path")
    if runtime_cache is not None and Path(runtime_cache).is_dir():
        raise UserError(f"{runtime_cache}: runtime cache must be a file path")


def _plugin_library(plugin_lib: Union[str, None, bool], plugin_nodes: int,
                    progress: Callable[[str], None]) -> Tuple[Optional[str], bool]:
    """(the library to try for this build or None, whether the user named it: argument or $VITDEPLOY_PLUGIN_LIB)."""
    if plugin_lib is False:
        return None, False
    named = bool(plugin_lib) or bool(os.environ.get("VITDEPLOY_PLUGIN_LIB"))
    lib = plugins.library_path(plugin_lib or None)  # a bad explicit path or $VITDEPLOY_PLUGIN_LIB: UserError
    if lib is not None and not plugin_nodes:
        progress(f"not loading {lib}: the ONNX has no vitdeploy nodes")
        return None, False
    if lib is None and plugin_nodes:
        progress("no plugin library found: the window gather/scatter nodes are inlined as standard ops")
    return (str(lib) if lib else None), named


def _load_plugin(trt, lib: str, named: bool, progress: Callable[[str], None]) -> Optional[str]:
    """Register `lib`, or say why it cannot be used: UserError when the user named it, else None (inline)."""
    why = None
    if not trt.parser_plugins:  # the RTX parser would std::terminate on the first plugin node
        why = f"{trt.label}'s ONNX parser cannot import plugins in this process ({trt.parser_plugins_why})"
    else:
        try:
            return plugins.load(lib)
        except UserError as e:
            why = str(e)
    if named:
        raise UserError(f"cannot use the plugin library: {why}")
    progress(f"not using the plugin library ({why}): the window gather/scatter nodes are inlined as standard ops")
    return None


@dataclass(frozen=True)
class BuildRequest:
    """What a build was asked for, checked before TensorRT is imported: the artifact, its one input
    and the batch profile with defaults resolved."""

    art: object  # vitdeploy.artifact.Artifact (imported lazily: artifact sits above engines)
    onnx_path: str
    engine_path: Path
    input_name: str
    shapes: dict  # {"min": shape, "opt": shape, "max": shape}
    opt_level: int
    workspace_gib: Optional[float]
    timing_cache: Optional[str]
    runtime_cache: Optional[str]

    @property
    def batches(self) -> Tuple[int, int, int]:
        return self.shapes["min"][0], self.shapes["opt"][0], self.shapes["max"][0]


def check_request(onnx_path, engine_path, *, min_batch=None, opt_batch=None, max_batch=None, opt_level: int = 3,
                  workspace_gib=None, timing_cache=None, runtime_cache=None) -> BuildRequest:
    """Every argument check that needs no TensorRT: bad input is a UserError before a long import."""
    from vitdeploy.artifact import open_artifact

    art = open_artifact(onnx_path)
    if art.kind != "onnx":
        raise UserError(f"{onnx_path}: not an .onnx file; pass the ONNX that vitdeploy export wrote")
    if len(art.inputs) != 1:
        raise UserError(f"{onnx_path}: expected one image input, found {[i.name for i in art.inputs]}; "
                        "export it with vitdeploy export")
    inp = art.inputs[0]
    shapes = profile_from_batches(inp.shape, min_batch, opt_batch, max_batch)
    if not isinstance(opt_level, int) or not 0 <= opt_level <= 5:
        raise UserError(f"builder optimization level {opt_level!r}: must be an integer 0..5")
    if workspace_gib is not None and not workspace_gib > 0:
        raise UserError(f"workspace {workspace_gib!r} GiB: must be > 0")
    engine_path = Path(engine_path)
    _check_outputs(engine_path, timing_cache, runtime_cache)
    return BuildRequest(art=art, onnx_path=str(onnx_path), engine_path=engine_path, input_name=inp.name,
                        shapes=shapes, opt_level=opt_level, workspace_gib=workspace_gib,
                        timing_cache=timing_cache, runtime_cache=runtime_cache)


def choose_tensorrt(tensorrt: Optional[str], req: BuildRequest, compute_capabilities: Optional[Sequence[str]]):
    """(the TensorRT seam, RTX targets); a cache flag that means nothing for the flavour is a UserError."""
    trt = optional.tensorrt(tensorrt)
    if trt.flavour == "rtx" and req.timing_cache:
        raise UserError("--timing-cache is for enterprise TensorRT (TensorRT for RTX ignores timing caches): "
                        "use --runtime-cache FILE with --tensorrt rtx")
    if trt.flavour == "trt" and req.runtime_cache:
        raise UserError("--runtime-cache is for TensorRT for RTX: use --timing-cache FILE with enterprise TensorRT")
    return trt, trt.compute_capabilities(compute_capabilities)  # UserError for enterprise or an unknown target


@dataclass
class ParsedNetwork:
    builder: object
    network: object
    parser: object
    plan: ParsePlan
    parser_flags: list
    summary: dict
    plugin_layers: int


def parse_network(trt, onnx_path: str, plan: ParsePlan, precision: str,
                  progress: Callable[[str], None]) -> ParsedNetwork:
    """Parse through Polygraphy and check the plugin layers against the plan."""
    progress(f"parsing {onnx_path} ({trt.label}, strongly typed, {precision})")
    G_LOGGER = trt.polygraphy().G_LOGGER
    with G_LOGGER.verbosity(G_LOGGER.WARNING):
        builder, network, parser = _network_loader(trt, onnx_path, plan)()
    plugin_layers = count_plugin_layers(_network_layers(trt, network))
    if plugin_layers and not plan.load_plugin:
        raise CheckFailed(f"{onnx_path}: the network has {plugin_layers} vitdeploy plugin layers although the "
                          "window ops were inlined; this is a vitdeploy bug")
    if plan.load_plugin and not plugin_layers:
        progress("note: this TensorRT used the window ops' function bodies instead of the plugin "
                 "(plugins take precedence over local functions from TensorRT 10.7)")
    return ParsedNetwork(builder, network, parser, plan, trt.parser_flags(parser), network_summary(trt, network),
                         plugin_layers)


def build_serialized(trt, req: BuildRequest, parsed: ParsedNetwork, targets, where: str,
                     progress: Callable[[str], None]) -> Tuple[bytes, float, list]:
    """(engine bytes, build seconds, the RTX targets the config recorded); TensorRT failing is CheckFailed."""
    poly = trt.polygraphy()
    G_LOGGER = poly.G_LOGGER
    lo, opt, hi = req.batches
    pool_limits = {trt.MemoryPoolType.WORKSPACE: int(req.workspace_gib * (1 << 30))} if req.workspace_gib else None
    load_cache = req.timing_cache if req.timing_cache and Path(req.timing_cache).is_file() else None
    progress(f"building engine with {trt.label} for {where}: batch {lo}..{hi} (opt {opt}), "
             f"optimization level {req.opt_level}")
    t0 = time.monotonic()
    with G_LOGGER.verbosity(G_LOGGER.WARNING):
        config_loader = trt.create_config(
            profiles=[poly.Profile().add(req.input_name, req.shapes["min"], req.shapes["opt"], req.shapes["max"])],
            load_timing_cache=load_cache, builder_optimization_level=req.opt_level, memory_pool_limits=pool_limits,
            progress_monitor=_progress_monitor(trt, progress), compute_capabilities=targets)
    recorded = {}

    def config(builder_, network_):
        cfg = config_loader(builder_, network_)
        recorded["targets"] = trt.config_targets(cfg) if trt.flavour == "rtx" else []
        return cfg

    try:
        # Polygraphy's INFO lines (config dumps, TF32 notes) are noise here; TensorRT warnings and
        # errors still come through at WARNING.
        with _Heartbeat(progress), G_LOGGER.verbosity(G_LOGGER.WARNING):
            serialized = poly.EngineBytesFromNetwork((parsed.builder, parsed.network, parsed.parser), config=config,
                                                     save_timing_cache=req.timing_cache)()
    except poly.PolygraphyException as e:
        raise CheckFailed(f"TensorRT could not build an engine from {req.onnx_path}: "
                          f"{str(e).strip().splitlines()[-1]}")
    if not serialized:
        raise CheckFailed(f"TensorRT could not build an engine from {req.onnx_path} (see the log above)")
    return bytes(memoryview(serialized)), time.monotonic() - t0, recorded.get("targets")


def engine_manifest(trt, req: BuildRequest, parsed: ParsedNetwork, data: bytes, build_time: float,
                    targets, env: dict, lib: Optional[str]) -> dict:
    """The manifest of a built engine: what `vitdeploy info/validate/serve` later read through `artifact.py`."""
    lo, opt, hi = req.batches
    uses_plugin = parsed.plugin_layers > 0
    net = parsed.network
    return make_manifest(
        engine_path=req.engine_path, onnx_path=os.path.abspath(req.onnx_path), onnx_sha256=file_sha256(req.onnx_path),
        onnx_metadata={f"vitdeploy.{k}": v for k, v in req.art.metadata.items()}, precision=req.art.precision,
        profile={req.input_name: req.shapes},
        inputs=[_tensor_info(trt, net.get_input(i)) for i in range(net.num_inputs)],
        outputs=[_tensor_info(trt, net.get_output(i)) for i in range(net.num_outputs)],
        tensorrt_version=trt.version, tensorrt_flavour=trt.flavour, compute_capabilities=targets,
        gpu_name=env["gpu_name"], compute_capability=env["compute_capability"],
        plugin_lib=lib if uses_plugin else None, plugin_lib_sha256=file_sha256(lib) if uses_plugin else None,
        plugin_layers=parsed.plugin_layers, engine_bytes=len(data),
        engine_sha256=hashlib.sha256(data).hexdigest(), build_time_s=build_time,
        builder_options={
            "min_batch": lo, "opt_batch": opt, "max_batch": hi,
            "opt_level": req.opt_level, "workspace_gib": req.workspace_gib,
            "timing_cache": os.path.abspath(req.timing_cache) if req.timing_cache else None,
            "runtime_cache": os.path.abspath(req.runtime_cache) if req.runtime_cache else None,
            "strongly_typed": True, "parser_flags": parsed.parser_flags, "tf32": False,
            "plugin_layers": parsed.plugin_layers, "plugin_nodes_in_onnx": parsed.plan.vitdeploy_nodes,
            "window_ops_inlined": bool(parsed.plan.vitdeploy_nodes) and not parsed.plan.load_plugin,
        },
        network=parsed.summary,
    )


def build_engine(onnx_path, engine_path, *, plugin_lib: Union[str, None, bool] = None, min_batch: Optional[int] = None,
                 opt_batch: Optional[int] = None, max_batch: Optional[int] = None, timing_cache: Optional[str] = None,
                 opt_level: int = 3, workspace_gib: Optional[float] = None,
                 tensorrt: Optional[str] = None, compute_capabilities: Optional[Sequence[str]] = None,
                 runtime_cache: Optional[str] = None, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Build `engine_path` from `onnx_path` and write `<engine_path>.json`; returns the manifest.

    plugin_lib: a path; None = `vitdeploy.plugins.library_path()` (explicit env var or default
    build) when the ONNX has vitdeploy window nodes; False = never use the plugin (the nodes are
    inlined as their standard-op bodies before parsing). A library the user named (path or
    $VITDEPLOY_PLUGIN_LIB) that cannot be used is a UserError; a default one falls back to inlining.
    tensorrt: "auto" | "trt" | "rtx" (None: $VITDEPLOY_TENSORRT or auto), see `optional.tensorrt`.
    compute_capabilities: RTX targets such as ["8.6", "12.0"] (default: the RTX builder's).
    timing_cache (enterprise) / runtime_cache (RTX, recorded for the runtime's JIT): a flag meaningless
    for the flavour is a UserError, never silently ignored.
    """
    progress = progress or (lambda msg: None)
    req = check_request(onnx_path, engine_path, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
                        opt_level=opt_level, workspace_gib=workspace_gib, timing_cache=timing_cache,
                        runtime_cache=runtime_cache)
    plugin_nodes = vitdeploy_node_count(req.art.onnx)
    lib, named = _plugin_library(plugin_lib, plugin_nodes, progress)
    trt, targets = choose_tensorrt(tensorrt, req, compute_capabilities)
    env = current_environment(trt.flavour)  # enterprise: the GPU, before a long build; RTX: no NVML, no GPU
    if lib is not None:
        progress(f"loading plugin library {lib}")
        lib = _load_plugin(trt, lib, named, progress)
    plan = parse_plan(req.art.onnx, plugin_available=lib is not None)
    parsed = parse_network(trt, req.onnx_path, plan, req.art.precision, progress)
    where = (f"targets {', '.join(f'{a}.{b}' for a, b in targets)}" if targets
             else "the RTX builder's default targets" if trt.flavour == "rtx" else env["gpu_name"])
    data, build_time, recorded = build_serialized(trt, req, parsed, targets, where, progress)
    manifest = engine_manifest(trt, req, parsed, data, build_time, recorded, env, lib)
    # Engine first, then its manifest: if we die in between, the old manifest's engine_sha256
    # no longer matches and loading says so instead of running a mismatched engine.
    atomic_write_bytes(req.engine_path, data)
    write_manifest(manifest_path(req.engine_path), manifest)
    progress(f"engine built with {trt.label} in {build_time:.1f} s ({len(data) / 1e6:.1f} MB, "
             f"{parsed.plugin_layers} plugin layers)")
    return manifest
