"""The one TensorRT optimization profile an engine is built with, derived from the ONNX input."""

from __future__ import annotations

from typing import Optional, Sequence

from vitdeploy.errors import UserError

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
    if static is not None and not (min_batch == opt_batch == max_batch == static):
        raise UserError(f"the ONNX has a static batch of {static} but the profile asks for "
                        f"{min_batch}/{opt_batch}/{max_batch}; use --min/--opt/--max-batch {static} "
                        "or export with --batch dynamic")
    rest = [int(d) for d in shape[1:]]
    return {"min": [min_batch] + rest, "opt": [opt_batch] + rest, "max": [max_batch] + rest}
