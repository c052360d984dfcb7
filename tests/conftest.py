"""Helpers shared by the test files: the CLI as a user runs it, one-line-error checks, a tiny ONNX
with vitdeploy metadata, and the parity metrics the tests compute independently of vitdeploy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_IMG = 32
TINY_CLASSES = 10
TINY_MODEL = "tiny"


def run(*args, timeout=600, pythonpath=()):
    """`python -m vitdeploy.cli ARGS` in a subprocess, as a user runs it: this tree on PYTHONPATH
    (after the directories in `pythonpath`), VITDEPLOY_DEBUG unset."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(ROOT)]))
    env.pop("VITDEPLOY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "vitdeploy.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_user_error(res, needle):
    """Exit 2, no traceback, and the last stderr line names `needle`."""
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert needle.lower() in last.lower(), last


def rel_err(ref, got) -> float:
    """max |ref - got| / max |ref| (the parity module's max_rel_err, computed here independently);
    numpy arrays or CPU tensors."""
    ref, got = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
    return float(np.abs(ref - got).max() / max(np.abs(ref).max(), 1e-12))


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def make_tiny_onnx(path: Path, fixed_batch=None, metadata=None) -> Path:
    """A small conv classifier exported with the vitdeploy I/O names and metadata (no model build)."""
    import warnings

    import onnx
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(8, TINY_CLASSES)

        def forward(self, x):
            return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))

    torch.manual_seed(0)
    model = Tiny().eval()
    dyn = None if fixed_batch else {"images": {0: "batch"}, "logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(fixed_batch or 2, 3, TINY_IMG, TINY_IMG),), str(path),
                          input_names=["images"], output_names=["logits"], dynamic_axes=dyn, dynamo=False)
    proto = onnx.load(str(path))
    meta = {"version": "0.1.0", "model": TINY_MODEL, "task": "classify", "img_size": str(TINY_IMG),
            "sparsity": "null", "precision": "fp32", "mean": json.dumps([0.485, 0.456, 0.406]),
            "std": json.dumps([0.229, 0.224, 0.225]), "checkpoint_sha256": "random-seed-0",
            "num_classes": str(TINY_CLASSES), **(metadata or {})}
    for k, v in meta.items():
        proto.metadata_props.add(key=f"vitdeploy.{k}", value=v)
    onnx.save(proto, str(path))
    return path


def smooth_images(d: Path, n: int, size: int, seed: int) -> Path:
    """Smooth random RGB images: 4x4 random colours, bicubic-upsampled (no noise); the held-out int8
    images of tests/test_quantize.py and benchmarks/precision_cpu.py."""
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        lo = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        lo.resize((size + 32, size + 32), Image.BICUBIC).save(d / f"im{i}.png")
    return d


def scale_largest_initializer(src: Path, dst: Path, factor: float = 1.5) -> Path:
    """A tampered copy of an ONNX: a tenth of its largest weight scaled (metadata untouched)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(src))
    init = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = numpy_helper.to_array(init).copy()
    arr.flat[: max(1, arr.size // 10)] *= factor
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(proto, str(dst))
    return dst


# ----------------------------------------------------------------------------- TensorRT probes
# The one probe, through vitdeploy's own seam (vitdeploy.optional.tensorrt): it never imports a TensorRT
# module here, so the pytest process does not bind a flavour; builds run in `vitdeploy build` children.

def _builder_error():
    """Why no TensorRT builder (either flavour) is available here, or None."""
    from vitdeploy import optional

    return None if optional.available("tensorrt") else "neither tensorrt nor tensorrt_rtx is installed"


def _engine_run_error():
    """Why engines cannot run here (tier 3), or None: a TensorRT and an NVIDIA GPU are needed."""
    if BUILDER_ERR:
        return BUILDER_ERR
    from vitdeploy.engines.device import gpu_present

    return None if gpu_present() else "no NVIDIA GPU here (engines are built in tier 1, run only on a GPU)"


BUILDER_ERR = _builder_error()
requires_builder = pytest.mark.skipif(BUILDER_ERR is not None, reason=f"no TensorRT builder: {BUILDER_ERR}")
TRT_ERR = _engine_run_error()
requires_trt = pytest.mark.skipif(TRT_ERR is not None, reason=f"TensorRT engines cannot run here: {TRT_ERR}")
