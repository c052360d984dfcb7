"""Backend name -> Runner for an exported artifact: the one place that knows every runner.

Here and not in runners.py, because the TensorRT runner (trt_runner.py) builds on runners.py: a
factory inside runners.py would import its own subclass's module (an import cycle).
"""

from __future__ import annotations

from typing import Optional

from vitdeploy.engines.runners import OrtRunner, Runner
from vitdeploy.errors import UserError

ARTIFACT_BACKENDS = ("ort", "ort-cuda", "ort-trt", "trt")
_ORT_PROVIDERS = {
    "ort": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    # ORT's TensorRT EP: our custom nodes run through their ONNX functions there
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def default_backend(artifact) -> str:
    """trt for an engine, ort (CPU) for an ONNX (`artifact` is a vitdeploy.artifact.Artifact)."""
    return "trt" if artifact.kind == "engine" else "ort"


def make_artifact_runner(backend: str, artifact: str, threads: Optional[int] = None,
                         plugin_lib: Optional[str] = None) -> Runner:
    """Runner for an exported artifact (.onnx or engine) on the named backend."""
    if backend in _ORT_PROVIDERS:
        return OrtRunner(artifact, threads=threads, providers=_ORT_PROVIDERS[backend], name=backend)
    if backend == "trt":
        from vitdeploy.engines.trt_runner import TrtRunner  # TensorRT is optional

        return TrtRunner(artifact, plugin_lib=plugin_lib)
    raise UserError(f"backend {backend!r} cannot run {artifact}; choose one of {', '.join(ARTIFACT_BACKENDS)}")
