"""NumPy reference semantics of the plugin ops: the oracle every implementation is tested against.

The window ops move whole windows (rows of ``N*C`` contiguous values) between a full window grid
``[B, nW, N, C]`` and a compact set of kept windows ``[B, K, N, C]``:

``window_gather(x, idx) -> y``
    ``y[b, k] = x[b, idx[b, k]]``.
``window_scatter(base, idx, src) -> y``
    ``y = copy(base)``; then ``y[b, idx[b, k]] = src[b, k]`` for every k. Windows not named in
    ``idx[b]`` keep ``base``'s values (SparseViT: pruned windows pass through unchanged).

Defined behaviour for bad indices (the CUDA kernels must match it; they must never read or
write out of bounds, and a silent wrap-around would corrupt a neighbouring sample):

* An index outside ``[0, nW)`` -- negative included, there is **no** Python-style wrap-around --
  makes ``window_gather`` write **zeros** for that output window, and makes ``window_scatter``
  **ignore** that source window (no write).
* Duplicate indices within one sample are outside the contract: for scatter, which source window
  wins is unspecified (the reference happens to let the last one win). Indices produced by TopK
  are unique, so the model never produces them.

The standard-op ONNX function bodies (``vitdeploy.export.window_nodes``) implement only in-range
indices -- the only ones the exported model produces; ONNX ``Gather`` would wrap negative indices
and ``ScatterND`` rejects out-of-range ones.

Index dtype is int64 (int32 accepted here); data dtype is whatever the caller uses (fp32/fp16).
"""

from __future__ import annotations

import numpy as np


def _check(x: np.ndarray, idx: np.ndarray) -> None:
    if x.ndim != 4:
        raise ValueError(f"window data must be [B, nW, N, C], got shape {x.shape}")
    if idx.ndim != 2 or idx.shape[0] != x.shape[0]:
        raise ValueError(f"idx must be [B, K] with B={x.shape[0]}, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"idx must be an integer array, got {idx.dtype}")


def window_gather_ref(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """[B, nW, N, C], [B, K] -> [B, K, N, C]; out-of-range index -> zero window."""
    x = np.asarray(x)
    idx = np.asarray(idx)
    _check(x, idx)
    B, nW, N, C = x.shape
    K = idx.shape[1]
    y = np.zeros((B, K, N, C), dtype=x.dtype)
    for b in range(B):
        for k in range(K):
            w = int(idx[b, k])
            if 0 <= w < nW:
                y[b, k] = x[b, w]
    return y


def window_scatter_ref(base: np.ndarray, idx: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Copy of ``base`` [B, nW, N, C] with windows ``idx`` [B, K] replaced by ``src`` [B, K, N, C].

    Out-of-range index -> that source window is ignored.
    """
    base = np.asarray(base)
    idx = np.asarray(idx)
    src = np.asarray(src)
    _check(base, idx)
    B, nW, N, C = base.shape
    if src.shape != (B, idx.shape[1], N, C):
        raise ValueError(f"src must be {(B, idx.shape[1], N, C)}, got {src.shape}")
    y = base.copy()
    for b in range(B):
        for k in range(idx.shape[1]):
            w = int(idx[b, k])
            if 0 <= w < nW:
                y[b, w] = src[b, k]
    return y
