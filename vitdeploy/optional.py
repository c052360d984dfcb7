"""One lazy importer per optional backend, each with its install hint (Polygraphy's `lazy_import`).

`import vitdeploy` must work on a machine with none of TensorRT, a CUDA build of ONNX Runtime,
PyTriton or matplotlib: every module that needs one calls the function here at the point of use,
and a missing backend becomes one UserError line (exit 2) that says how to install it.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType, SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

from vitdeploy.errors import UserError

INSTALL_HINTS: Dict[str, str] = {
    "tensorrt": ("TensorRT is not installed: pip install 'vitdeploy[tensorrt-rtx]' (TensorRT for RTX: builds "
                 "engines on any host, runs them on RTX GPUs) or pip install 'vitdeploy[tensorrt]' "
                 "--extra-index-url https://pypi.nvidia.com (enterprise TensorRT, needs an NVIDIA GPU driver)"),
    "tensorrt-enterprise": ("enterprise TensorRT is not installed: pip install 'vitdeploy[tensorrt]' "
                            "--extra-index-url https://pypi.nvidia.com (or build with --tensorrt rtx)"),
    "tensorrt-rtx": ("TensorRT for RTX is not installed: pip install 'vitdeploy[tensorrt-rtx]' "
                     "(or build with --tensorrt trt)"),
    "onnxruntime-gpu": ("the CUDA build of ONNX Runtime is not installed: pip install 'vitdeploy[gpu]' "
                        "(replaces the CPU onnxruntime; needs CUDA and cuDNN)"),
    "pytriton": "PyTriton is not installed: pip install 'vitdeploy[serve]'",
    "matplotlib": "matplotlib is not installed: pip install 'vitdeploy[plot]'",
    "nvidia-ml-py": ("nvidia-ml-py is not installed (needed to read the GPU's name and compute capability): "
                     "pip install 'vitdeploy[tensorrt]' or pip install nvidia-ml-py"),
    # torch is a dependency of the package, but a serving host may run `validate --reference` without it
    "torch": "PyTorch is not installed: pip install torch==2.13.0 (or compare with --reference OUT.ref.npz)",
}


def _import(module: str, backend: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except Exception:  # ImportError, or OSError when a binding's shared library is missing
        raise UserError(INSTALL_HINTS[backend]) from None


def available(backend: str) -> bool:
    """Whether `backend` (a key of INSTALL_HINTS) imports here; never raises.

    "tensorrt": either flavour, without choosing one for this process."""
    if backend == "tensorrt":
        return bool(_TENSORRT) or _importable("tensorrt") or _importable("tensorrt_rtx")
    try:
        {"tensorrt": tensorrt, "onnxruntime-gpu": onnxruntime_gpu, "pytriton": pytriton,
         "matplotlib": pyplot, "torch": torch, "nvidia-ml-py": nvml}[backend]()
    except UserError:
        return False
    return True


def nvml() -> ModuleType:
    """`pynvml` (nvidia-ml-py): the GPU's name and compute capability from the driver alone."""
    return _import("pynvml", "nvidia-ml-py")


# ------------------------------------------------------------------------------ TensorRT: the one seam
#
# Two flavours share the `nvinfer1` API and vitdeploy's build path (DESIGN decision 14): enterprise
# TensorRT (module `tensorrt`, 10.7+/11.x) and TensorRT for RTX (module `tensorrt_rtx`, 1.x: its builder
# runs without a GPU). Polygraphy picks its module from POLYGRAPHY_USE_TENSORRT_RTX when its backend is
# first imported, so the flavour is chosen once per process, here, and every TensorRT user in vitdeploy
# asks `tensorrt()` for the module, Polygraphy's classes, the config and the environment facts.

TENSORRT_FLAVOURS = ("auto", "trt", "rtx")
FLAVOUR_NAMES = {"trt": "TensorRT", "rtx": "TensorRT for RTX"}
_MODULES = {"trt": "tensorrt", "rtx": "tensorrt_rtx"}
# The TensorRT header major a plugin library must be built with, per flavour major. RTX 1.x: a library
# built against the TensorRT 11.1 headers loads and builds (measured, reference/tensorrt-rtx.md); one
# built against 10.x headers loads, but its errors bypass TensorRT's logger (ILoggerFinder changed in 11).
RTX_PLUGIN_HEADER_MAJOR = {1: 11}
# RTX compute-capability targets (ComputeCapability.SM<major><minor>; RTX 1.7 has no SM90).
_TENSORRT: Dict[str, "TensorRT"] = {}


def _rtx_loader_fix() -> Tuple[bool, str]:
    """Make the RTX parser's `dlopen("libtensorrt_rtx.so")` resolve; (done, why not). Before the import.

    The RTX ONNX parser reaches `addPluginV3` through a private API it looks up by the unversioned name;
    the wheel ships only `libtensorrt_rtx.so.1`, and the failed lookup calls std::terminate (the whole
    process dies, no Python exception). Both RTX libraries have RPATH $ORIGIN, and the loader takes
    $ORIGIN from the path an object was opened by: so we open them, RTLD_GLOBAL, through symlinks in a
    private directory that also holds `libtensorrt_rtx.so`. The bindings' own loads then find the same
    files (same inode) already mapped, and the parser's lookup finds the symlink beside it.
    """
    import ctypes
    import importlib.util
    import shutil
    import tempfile

    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is None or not spec.origin:
        return False, "the tensorrt_rtx_libs package was not found"
    libdir = os.path.dirname(spec.origin)
    core = os.path.join(libdir, "libtensorrt_rtx.so.1")
    parser = os.path.join(libdir, "libtensorrt_onnxparser_rtx.so.1")
    if not (os.path.isfile(core) and os.path.isfile(parser)):
        return False, f"{libdir} has no libtensorrt_rtx.so.1 / libtensorrt_onnxparser_rtx.so.1"
    if _mapped(core) or _mapped(parser):
        return False, ("the TensorRT for RTX libraries were loaded before vitdeploy could apply its loader fix "
                       "(import vitdeploy's TensorRT through vitdeploy.optional.tensorrt() first)")
    priv = tempfile.mkdtemp(prefix="vitdeploy-rtx-")
    import atexit

    atexit.register(shutil.rmtree, priv, True)
    for link, target in (("libtensorrt_rtx.so", core), ("libtensorrt_rtx.so.1", core),
                         ("libtensorrt_onnxparser_rtx.so.1", parser)):
        os.symlink(target, os.path.join(priv, link))
    try:
        ctypes.CDLL(os.path.join(priv, "libtensorrt_rtx.so.1"), mode=ctypes.RTLD_GLOBAL)
        handle = ctypes.CDLL(os.path.join(priv, "libtensorrt_onnxparser_rtx.so.1"), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        return False, f"cannot preload the TensorRT for RTX libraries ({e})"
    origin = _origin(handle)
    if origin is None or not os.path.exists(os.path.join(origin, "libtensorrt_rtx.so")):
        return False, f"the loader did not take $ORIGIN from {priv} (got {origin})"
    return True, ""


def _mapped(path: str) -> bool:
    """Whether `path` (resolved) is mapped into this process already."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/maps") as f:
            return any(line.rstrip().endswith(real) for line in f)
    except OSError:
        return False


def _origin(handle) -> Optional[str]:
    """The $ORIGIN the dynamic loader uses for a ctypes-opened library (dlinfo RTLD_DI_ORIGIN)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        buf = ctypes.create_string_buffer(4096)
        if libc.dlinfo(ctypes.c_void_p(handle._handle), 6, buf) != 0:  # RTLD_DI_ORIGIN
            return None
        return buf.value.decode()
    except (AttributeError, OSError, UnicodeDecodeError):
        return None


class TensorRT:
    """The chosen TensorRT flavour: its module (attribute access falls through to it: `trt.LayerType`),
    version, Polygraphy classes, builder config and the environment facts the manifest records."""

    def __init__(self, flavour: str, module: ModuleType, parser_plugins: bool, parser_plugins_why: str):
        self.flavour = flavour
        self.module = module
        self.version = str(module.__version__)
        self.parser_plugins = parser_plugins  # the parser can import plugin nodes without aborting
        self.parser_plugins_why = parser_plugins_why

    def __getattr__(self, name):  # only for names not set above: the module's API
        if "module" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["module"], name)

    @property
    def label(self) -> str:
        return f"{FLAVOUR_NAMES[self.flavour]} {self.version}"

    @property
    def major(self) -> Optional[int]:
        head = self.version.split(".", 1)[0]
        return int(head) if head.isdigit() else None

    def plugin_header_major(self) -> Optional[int]:
        """The TensorRT header major our plugin library must be compiled against for this flavour."""
        return self.major if self.flavour == "trt" else RTX_PLUGIN_HEADER_MAJOR.get(self.major)

    # ---------------------------------------------------------------- Polygraphy
    def polygraphy(self) -> SimpleNamespace:
        """Polygraphy's TensorRT classes, imported for this flavour."""
        from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, EngineFromPath, Profile, TrtRunner
        from polygraphy.backend.trt.loader import BaseNetworkFromOnnx
        from polygraphy.exception import PolygraphyException
        from polygraphy.logger import G_LOGGER

        return SimpleNamespace(CreateConfig=CreateConfig, EngineBytesFromNetwork=EngineBytesFromNetwork,
                               EngineFromPath=EngineFromPath, Profile=Profile, TrtRunner=TrtRunner,
                               BaseNetworkFromOnnx=BaseNetworkFromOnnx, PolygraphyException=PolygraphyException,
                               G_LOGGER=G_LOGGER)

    def compute_capabilities(self, wanted: Optional[Sequence[str]]) -> Optional[List[Tuple[int, int]]]:
        """RTX targets as (major, minor); UserError for one this version cannot target. None: the defaults."""
        if not wanted:
            return None
        if self.flavour != "rtx":
            raise UserError("--compute-capability is for TensorRT for RTX (--tensorrt rtx); enterprise TensorRT "
                            "builds for the GPU it runs on")
        known = [n[2:] for n in self.module.ComputeCapability.__members__ if n.startswith("SM")]
        out = []
        for cc in wanted:
            major, _, minor = str(cc).partition(".")
            if not (major.isdigit() and minor.isdigit()) or f"{major}{minor}" not in known:
                raise UserError(f"compute capability {cc!r}: {self.label} targets "
                                f"{', '.join(k[:-1] + '.' + k[-1] for k in known)}")
            out.append((int(major), int(minor)))
        return out

    def create_config(self, *, profiles, builder_optimization_level: int, memory_pool_limits=None,
                      progress_monitor=None, load_timing_cache: Optional[str] = None,
                      compute_capabilities: Optional[List[Tuple[int, int]]] = None):
        """Polygraphy's config loader: strongly typed, TF32 off on both flavours (fp32 parity thresholds)."""
        common = dict(profiles=profiles, builder_optimization_level=builder_optimization_level,
                      memory_pool_limits=memory_pool_limits, progress_monitor=progress_monitor)
        if self.flavour == "trt":
            from polygraphy.backend.trt import CreateConfig

            return CreateConfig(load_timing_cache=load_timing_cache, tf32=False, **common)
        from polygraphy.backend.tensorrt_rtx import CreateConfigRTX

        trt = self.module
        loader = CreateConfigRTX(compute_capabilities=compute_capabilities, **common)

        def create(builder, network):  # RTX turns TF32 on by default and CreateConfigRTX takes no tf32
            config = loader(builder, network)
            config.clear_flag(trt.BuilderFlag.TF32)
            return config

        return create

    @staticmethod
    def config_targets(config) -> List[str]:
        """The compute capabilities an RTX builder config targets, as "8.6" strings ([] = the builder's defaults)."""
        out = []
        for i in range(getattr(config, "num_compute_capabilities", 0)):
            name = config.get_compute_capability(i).name  # e.g. SM86
            out.append(f"{name[2:-1]}.{name[-1]}" if name.startswith("SM") else name)
        return out

    def parser_flags(self, parser) -> List[str]:
        """The OnnxParserFlag names set on a real parser."""
        return sorted(n for n, v in self.module.OnnxParserFlag.__members__.items() if parser.get_flag(v))


def tensorrt_flavour_requested(flavour: Optional[str] = None) -> str:
    """`flavour`, else $VITDEPLOY_TENSORRT, else "auto"; UserError for anything else."""
    want = flavour or os.environ.get("VITDEPLOY_TENSORRT") or "auto"
    if want not in TENSORRT_FLAVOURS:
        raise UserError(f"TensorRT flavour {want!r}: use one of {', '.join(TENSORRT_FLAVOURS)} "
                        "(auto: enterprise tensorrt if installed, else tensorrt_rtx)")
    return want


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def tensorrt(flavour: Optional[str] = None) -> TensorRT:
    """The TensorRT of this process, chosen once: `flavour` auto|trt|rtx (None: $VITDEPLOY_TENSORRT or auto).

    auto = enterprise `tensorrt` when it imports, else `tensorrt_rtx`. A second call asking for the
    other flavour is a UserError: Polygraphy has already bound its module.
    """
    want = tensorrt_flavour_requested(flavour)
    if _TENSORRT:
        got = next(iter(_TENSORRT.values()))
        if want not in ("auto", got.flavour):
            raise UserError(f"this process already uses {got.label}; {FLAVOUR_NAMES[want]} needs its own process "
                            "(Polygraphy binds one TensorRT module per process)")
        return got
    if want == "auto":
        want = "trt" if _importable("tensorrt") else "rtx" if _importable("tensorrt_rtx") else "trt"
        hint = "tensorrt"
    else:
        hint = {"trt": "tensorrt-enterprise", "rtx": "tensorrt-rtx"}[want]
    if not _importable(_MODULES[want]):
        raise UserError(INSTALL_HINTS[hint])
    other = {"trt": "tensorrt_rtx", "rtx": "tensorrt"}[want]
    if other in sys.modules or (want == "rtx") != _polygraphy_rtx_setting(want):
        raise UserError(f"this process already imported {'Polygraphy for ' if other not in sys.modules else ''}"
                        f"{other}; {FLAVOUR_NAMES[want]} needs its own process")
    ok, why = True, ""
    if want == "rtx":
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"
        if "polygraphy.config" in sys.modules:
            sys.modules["polygraphy.config"].USE_TENSORRT_RTX = True
        ok, why = _rtx_loader_fix()
    else:
        os.environ.pop("POLYGRAPHY_USE_TENSORRT_RTX", None)
    module = _import(_MODULES[want], hint)
    _TENSORRT[want] = TensorRT(want, module, ok, why)
    return _TENSORRT[want]


def _polygraphy_rtx_setting(want: str) -> bool:
    """The RTX setting Polygraphy's TensorRT backend is bound to (`want`'s when it is not imported yet)."""
    if "polygraphy.backend.trt" not in sys.modules:
        return want == "rtx"
    return bool(getattr(sys.modules.get("polygraphy.config"), "USE_TENSORRT_RTX", False))


def onnxruntime_gpu() -> ModuleType:
    """`onnxruntime`, checked to be a build with the CUDA execution provider."""
    ort = importlib.import_module("onnxruntime")  # a hard dependency: the CPU build is always there
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UserError(INSTALL_HINTS["onnxruntime-gpu"])
    return ort


def pytriton() -> ModuleType:
    """The `pytriton` package (its submodules are imported by the caller once this succeeds)."""
    mod = _import("pytriton", "pytriton")
    _import("pytriton.triton", "pytriton")
    return mod


def torch() -> ModuleType:
    """`torch`, for the jobs that rebuild the PyTorch original."""
    return _import("torch", "torch")


def pyplot() -> ModuleType:
    """`matplotlib.pyplot` on the non-interactive Agg backend (we only write files)."""
    mpl = _import("matplotlib", "matplotlib")
    mpl.use("Agg", force=True)
    return _import("matplotlib.pyplot", "matplotlib")
