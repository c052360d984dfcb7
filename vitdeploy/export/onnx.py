"""torch -> ONNX: dynamo export, window-op custom nodes + functions, metadata, checks, atomic write.

The exported graph is what every later stage reads: its metadata carries the model name, task,
resolution, sparsity, precision and normalization, so `validate`, `build` and `info` need no flags
that the export already knew (`vitdeploy.artifact` reads them back).
"""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Dict, List, Sequence

import onnx

from vitdeploy.errors import UserError
from vitdeploy.fileio import atomic_write_bytes

DEFAULT_OPSET = 20
META_PREFIX = "vitdeploy."  # written here (set_metadata); stripped in one place, vitdeploy.artifact


def output_names_for(task: str, model=None) -> List[str]:
    """``logits``, or one ``features.i`` per stage map (Swin 4 at strides 4-32, EfficientViT 3 at
    16-64: the model's ``feature_strides``)."""
    n = len(getattr(model, "feature_strides", ())) or 4
    return ["logits"] if task == "classify" else [f"features.{i}" for i in range(n)]


@contextmanager
def _quiet():
    """The dynamo exporter prints progress and warnings to stdout/stderr; keep ours clean."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stdout(buf), redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def check_writable(path: os.PathLike) -> Path:
    """Fail before the (slow) export when the output cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"output {path} is a directory; give a file name like {path / 'model.onnx'}")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"cannot write {path}: {parent} is a file, not a directory")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create output directory {parent}: {e.strerror}")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output directory {parent} is not writable")
    return path


def export_module(model, example, out_names: Sequence[str], *, dynamic_batch: bool = True,
                  opset: int = DEFAULT_OPSET, portable: bool = False, uses_window_ops: bool = False
                  ) -> onnx.ModelProto:
    """Trace `model` with the dynamo exporter; return the ModelProto (custom nodes finalized)."""
    import torch

    extra = {}
    if uses_window_ops:
        from vitdeploy.export import window_nodes

        extra = window_nodes.export_hooks(portable)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None

    class _Wrap(torch.nn.Module):
        # Name the forward argument `images` so the ONNX input is called that.
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, images):
            return self.m(images)

    wrapped = _Wrap(model).eval()
    with _quiet() as log, torch.no_grad():
        try:
            prog = torch.onnx.export(wrapped, (example,), None, dynamo=True, opset_version=opset,
                                     input_names=["images"], output_names=list(out_names),
                                     dynamic_shapes=dynamic_shapes, optimize=True, verify=False,
                                     report=False, **extra)
        except Exception as e:
            tail = log.getvalue().strip().splitlines()[-3:]
            raise RuntimeError(f"torch.onnx.export failed: {type(e).__name__}: {str(e).splitlines()[0]}"
                               + ("\n" + "\n".join(tail) if tail else "")) from e
    proto = prog.model_proto
    if uses_window_ops:
        from vitdeploy.export import window_nodes

        proto = window_nodes.finalize(proto, portable)
    if dynamic_batch:
        for vi in list(proto.graph.input) + list(proto.graph.output):
            d0 = vi.type.tensor_type.shape.dim[0]
            if d0.dim_param or not d0.HasField("dim_value"):
                d0.dim_param = "batch"
    return proto


def set_metadata(proto: onnx.ModelProto, meta: Dict[str, object]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for k, v in meta.items():
        key = k if k.startswith(META_PREFIX) else META_PREFIX + k
        val = v if isinstance(v, str) else json.dumps(v)
        if key in existing:
            existing[key].value = val
        else:
            proto.metadata_props.add(key=key, value=val)


def load_onnx(path: os.PathLike) -> onnx.ModelProto:
    """Load an .onnx for inspection (graph, metadata and inline weights; external data files are not
    read), or a one-line UserError saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable ONNX model ({first}); export it with vitdeploy export")


def op_histogram(proto: onnx.ModelProto) -> Dict[str, int]:
    c = collections.Counter((f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type)
                            for n in proto.graph.node)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def check_model(proto: onnx.ModelProto) -> None:
    """onnx.checker (full, with shape inference) + our structural promises."""
    onnx.checker.check_model(proto, full_check=True)
    bn = [n.name for n in proto.graph.node if n.op_type == "BatchNormalization"]
    if bn:
        raise RuntimeError(f"exported graph still has {len(bn)} BatchNormalization nodes ({bn[0]}); "
                           "folding missed a pattern")


def save_model(proto: onnx.ModelProto, path: os.PathLike) -> int:
    data = proto.SerializeToString()
    atomic_write_bytes(path, data)
    return len(data)
