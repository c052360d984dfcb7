"""One lazy importer per optional backend, each with its install hint (Polygraphy's `lazy_import`).

`import vitdeploy` must work on a machine with none of TensorRT, a CUDA build of ONNX Runtime,
PyTriton or matplotlib: every module that needs one calls the function here at the point of use,
and a missing backend becomes one UserError line (exit 2) that says how to install it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Dict

from vitdeploy.errors import UserError

INSTALL_HINTS: Dict[str, str] = {
    "tensorrt": ("TensorRT is not installed: pip install 'vitdeploy[tensorrt]' --extra-index-url "
                 "https://pypi.nvidia.com (needs an NVIDIA GPU driver)"),
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
    """Whether `backend` (a key of INSTALL_HINTS) imports here; never raises."""
    try:
        {"tensorrt": tensorrt, "onnxruntime-gpu": onnxruntime_gpu, "pytriton": pytriton,
         "matplotlib": pyplot, "torch": torch, "nvidia-ml-py": nvml}[backend]()
    except UserError:
        return False
    return True


def nvml() -> ModuleType:
    """`pynvml` (nvidia-ml-py): the GPU's name and compute capability from the driver alone."""
    return _import("pynvml", "nvidia-ml-py")


def tensorrt() -> ModuleType:
    """The `tensorrt` Python module."""
    return _import("tensorrt", "tensorrt")


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
