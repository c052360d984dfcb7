"""One Runner interface for every backend (Polygraphy style), and the torch and onnxruntime runners.

A runner takes named numpy inputs and returns named numpy outputs. Parity, bench and serving only
ever talk to this interface, so each backend is interchangeable. The base class checks feeds
against the runner's input specs (names, dtype, rank, static dims) before a backend sees them, so
a wrong feed is one line rather than a backend's own error. The TensorRT runner lives in
trt_runner.py and the name -> runner factory in backends.py (which may import both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from vitdeploy.errors import UserError


@dataclass
class TensorSpec:
    name: str
    shape: List[object]  # ints, or a string for a dynamic axis (e.g. "batch")
    dtype: str = "float32"


class Runner:
    """Base class. Subclasses set `name`, `inputs`, `outputs` and implement `infer_impl`."""

    name: str = "runner"
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.check_feeds(feeds)
        return self.infer_impl(feeds)

    def infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def check_feeds(self, feeds: Dict[str, np.ndarray]) -> None:
        """UserError naming the first feed that does not fit an input spec (Polygraphy's checks)."""
        expected = [s.name for s in self.inputs]
        if sorted(feeds) != sorted(expected):
            raise UserError(f"{self.name}: feeds {sorted(feeds)} do not match the inputs {expected}")
        for spec in self.inputs:
            arr = feeds[spec.name]
            if np.dtype(arr.dtype).name != spec.dtype:
                raise UserError(f"{self.name}: input {spec.name!r} is {np.dtype(arr.dtype).name}, "
                                f"the model takes {spec.dtype}")
            if spec.shape and arr.ndim != len(spec.shape):
                raise UserError(f"{self.name}: input {spec.name!r} has shape {list(arr.shape)}, "
                                f"the model takes {spec.shape}")
            for axis, (got, want) in enumerate(zip(arr.shape, spec.shape)):
                if isinstance(want, int) and want > 0 and got != want:
                    raise UserError(f"{self.name}: input {spec.name!r} has shape {list(arr.shape)}, the model "
                                    f"takes {spec.shape} (axis {axis} must be {want})")

    def synchronize(self) -> None:
        """Block until queued device work is done (no-op on CPU backends)."""

    @property
    def device(self) -> str:
        return "cpu"

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def set_threads(threads: Optional[int]) -> None:
    """Apply one thread count to torch (intra + inter op) so torch and ORT compare fairly."""
    if not threads:
        return
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # can only be set once per process, before any parallel work


class TorchRunner(Runner):
    """The PyTorch model in eval mode, no grad. The reference for parity."""

    def __init__(self, model, input_name: str = "images", output_names: Sequence[str] = ("logits",),
                 input_shape: Sequence[object] = ("batch", 3, 224, 224), threads: Optional[int] = None,
                 name: str = "torch"):
        import torch

        set_threads(threads)
        self.model = model.eval()
        self.name = name
        self.inputs = [TensorSpec(input_name, list(input_shape))]
        self.outputs = [TensorSpec(n, []) for n in output_names]
        self._torch = torch

    def infer_impl(self, feeds):
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(feeds[self.inputs[0].name], dtype=np.float32))
        with torch.inference_mode():
            out = self.model(x)
        if isinstance(out, torch.Tensor):
            out = (out,)
        elif isinstance(out, dict):
            out = tuple(out[n] for n in (o.name for o in self.outputs))
        return {spec.name: t.float().numpy() for spec, t in zip(self.outputs, out)}


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
               "tensor(int32)": "int32", "tensor(double)": "float64"}


class OrtRunner(Runner):
    """ONNX Runtime session. `providers` like ("CUDAExecutionProvider", "CPUExecutionProvider").

    The custom vitdeploy nodes run through their model-local functions: nothing to register.
    """

    def __init__(self, onnx_path: str, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None, optimization: str = "all",
                 profile_prefix: Optional[str] = None, name: str = "ort"):
        import onnxruntime as ort

        # ORT CPU's extended optimizers mis-handle float8 Q/DQ (QDQ fusion
        # builds a QLinearConv that rejects float8; with that fusion off, a later one computes
        # wrong values, cosine 0.82); the basic level runs the Q/DQ nodes as reference ops.
        cpu_only = not providers or list(providers) == ["CPUExecutionProvider"]
        if optimization in ("all", "extended") and cpu_only and _is_fp8_onnx(onnx_path):
            optimization = "basic"
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        so.log_severity_level = 3
        requested = list(providers or ["CPUExecutionProvider"])
        import warnings

        try:
            with warnings.catch_warnings():  # "provider not available": we say it better below
                warnings.simplefilter("ignore")
                self.session = ort.InferenceSession(str(onnx_path), sess_options=so, providers=requested)
        except Exception as e:  # ORT raises several private exception types
            raise UserError(f"{onnx_path}: ONNX Runtime cannot load this model: {str(e).splitlines()[0]}")
        # get_available_providers() lies on CPU-only machines with onnxruntime-gpu: ask the session.
        self.providers = self.session.get_providers()
        wanted = requested[0]
        if wanted != "CPUExecutionProvider" and wanted not in self.providers:
            raise UserError(f"ONNX Runtime could not use {wanted} here (session runs on {self.providers}); "
                            "install onnxruntime-gpu with CUDA/cuDNN, or use --backend ort on CPU")
        self.name = name
        self.inputs = [TensorSpec(i.name, list(i.shape), _ORT_DTYPES.get(i.type, i.type))
                       for i in self.session.get_inputs()]
        self.outputs = [TensorSpec(o.name, list(o.shape), _ORT_DTYPES.get(o.type, o.type))
                        for o in self.session.get_outputs()]

    @property
    def device(self) -> str:
        return "cuda" if self.providers and self.providers[0] != "CPUExecutionProvider" else "cpu"

    def infer_impl(self, feeds):
        names = [o.name for o in self.outputs]
        res = self.session.run(names, {k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return dict(zip(names, res))

    def end_profiling(self) -> str:
        return self.session.end_profiling()


def _is_fp8_onnx(path) -> bool:
    """Whether the graph holds float8 Q/DQ (from its initializers, so metadata-less files count)."""
    if not str(path).endswith(".onnx"):
        return False
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable: let the session report it
        return False
    return any(t.data_type == onnx.TensorProto.FLOAT8E4M3FN for t in proto.graph.initializer)
