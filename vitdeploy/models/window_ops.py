"""The SparseViT window gather/scatter as torch.library custom ops.

One definition serves eager PyTorch, ``torch.export`` and ONNX: the exporter sees each call as a
single opaque node (``torch.ops.vitdeploy.window_gather.default``), which
``vitdeploy.export.window_nodes`` turns into a ``vitdeploy::WindowGather`` node plus a standard-op
function body. Semantics, including the defined behaviour for out-of-range indices, are those of
``vitdeploy.plugins.reference`` (the kernels' oracle); this module must not import it (layering),
the tests compare the two.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.library.custom_op("vitdeploy::window_gather", mutates_args=())
def _window_gather(x: Tensor, idx: Tensor) -> Tensor:
    B, nW, N, C = x.shape
    idx = idx.to(torch.int64)
    valid = (idx >= 0) & (idx < nW)
    safe = torch.where(valid, idx, torch.zeros_like(idx))
    out = torch.gather(x, 1, safe[:, :, None, None].expand(B, idx.shape[1], N, C))
    if not bool(valid.all()):
        out = out.masked_fill(~valid[:, :, None, None], 0)
    return out


@_window_gather.register_fake
def _window_gather_fake(x: Tensor, idx: Tensor) -> Tensor:
    torch._check(x.dim() == 4, lambda: "window_gather: x must be [B, nW, N, C]")
    torch._check(idx.dim() == 2, lambda: "window_gather: idx must be [B, K]")
    return x.new_empty((x.shape[0], idx.shape[1], x.shape[2], x.shape[3]))


@torch.library.custom_op("vitdeploy::window_scatter", mutates_args=())
def _window_scatter(base: Tensor, idx: Tensor, src: Tensor) -> Tensor:
    B, nW, N, C = base.shape
    idx = idx.to(torch.int64)
    valid = (idx >= 0) & (idx < nW)
    out = base.clone()
    if bool(valid.all()):
        out.scatter_(1, idx[:, :, None, None].expand(B, idx.shape[1], N, C), src.to(base.dtype))
    else:
        # Bad indices are dropped (no write), matching the reference and the CUDA kernel.
        b = torch.arange(B, device=idx.device)[:, None].expand_as(idx)
        out[b[valid], idx[valid]] = src.to(base.dtype)[valid]
    return out


@_window_scatter.register_fake
def _window_scatter_fake(base: Tensor, idx: Tensor, src: Tensor) -> Tensor:
    torch._check(base.dim() == 4, lambda: "window_scatter: base must be [B, nW, N, C]")
    torch._check(idx.dim() == 2, lambda: "window_scatter: idx must be [B, K]")
    return torch.empty_like(base)


def window_gather(x: Tensor, idx: Tensor) -> Tensor:
    """Kept windows: ``x`` [B, nW, N, C], ``idx`` [B, K] int64 -> [B, K, N, C]."""
    return torch.ops.vitdeploy.window_gather(x, idx)


def window_scatter(base: Tensor, idx: Tensor, src: Tensor) -> Tensor:
    """Copy of ``base`` with windows ``idx`` replaced by ``src``; the rest pass through."""
    return torch.ops.vitdeploy.window_scatter(base, idx, src)
