"""BatchNorm folding on the module tree, before tracing (DESIGN decision 2).

Generic: any container whose children run in registration order (nn.Sequential and subclasses)
is scanned for Conv2d->BatchNorm2d, Linear->BatchNorm1d and BatchNorm1d->Linear pairs. The BN
child becomes nn.Identity and the conv/linear is rewritten in place, so module names (and with
them checkpoint keys of the unfolded model) stay meaningful. The exporter's own optimizer does
not fold BN *before* a Linear (EfficientViT's head), which is why this runs on modules.

Folding is done in float64 and cast back, so the folded model differs from the unfolded one only
by the final rounding.
"""

from __future__ import annotations

import copy
from typing import Dict

import torch
from torch import nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm):
    if not bn.track_running_stats or bn.running_var is None:
        raise ValueError(f"cannot fold a BatchNorm without running statistics: {bn}")
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.affine else torch.ones_like(var)
    beta = bn.bias.double() if bn.affine else torch.zeros_like(var)
    s = gamma / torch.sqrt(var + bn.eps)
    return s, beta - mean * s


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    s, t = _bn_scale_shift(bn)
    w = conv.weight.double() * s.view(-1, 1, 1, 1)
    b = (conv.bias.double() * s if conv.bias is not None else 0) + t
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    out.weight.copy_(w.to(conv.weight.dtype))
    out.bias.copy_(b.to(conv.weight.dtype))
    return out.to(conv.weight.device)


@torch.no_grad()
def fold_linear_bn(lin: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """y = BN(W x + b)  ->  W' = s W, b' = s b + t."""
    s, t = _bn_scale_shift(bn)
    out = nn.Linear(lin.in_features, lin.out_features, bias=True)
    out.weight.copy_((lin.weight.double() * s[:, None]).to(lin.weight.dtype))
    b = (lin.bias.double() if lin.bias is not None else 0) * s + t
    out.bias.copy_(b.to(lin.weight.dtype))
    return out.to(lin.weight.device)


@torch.no_grad()
def fold_bn_linear(bn: nn.BatchNorm1d, lin: nn.Linear) -> nn.Linear:
    """y = W BN(x) + b = W (s x + t) + b  ->  W' = W diag(s), b' = W t + b (official BN_Linear.fuse)."""
    s, t = _bn_scale_shift(bn)
    w = lin.weight.double()
    out = nn.Linear(lin.in_features, lin.out_features, bias=True)
    out.weight.copy_((w * s[None, :]).to(lin.weight.dtype))
    b = w @ t + (lin.bias.double() if lin.bias is not None else 0)
    out.bias.copy_(b.to(lin.weight.dtype))
    return out.to(lin.weight.device)


def _passthrough(m: nn.Module) -> bool:
    """Modules that sit between a BN and a Linear without changing values at inference."""
    return isinstance(m, (nn.Identity, nn.Dropout))


def fold_batchnorm(model: nn.Module) -> Dict[str, int]:
    """Fold every foldable BN pair in place; returns counts per pattern."""
    counts = {"conv_bn": 0, "linear_bn": 0, "bn_linear": 0}
    for parent in list(model.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules.keys())
        i = 0
        while i < len(names) - 1:
            a = parent._modules[names[i]]
            # next non-passthrough child
            j = i + 1
            while j < len(names) - 1 and _passthrough(parent._modules[names[j]]) and isinstance(a, _BN):
                j += 1
            b = parent._modules[names[j]]
            if type(a) is nn.Conv2d and type(b) is nn.BatchNorm2d:
                parent._modules[names[i]] = fold_conv_bn(a, b)
                parent._modules[names[j]] = nn.Identity()
                counts["conv_bn"] += 1
            elif type(a) is nn.Linear and type(b) is nn.BatchNorm1d:
                parent._modules[names[i]] = fold_linear_bn(a, b)
                parent._modules[names[j]] = nn.Identity()
                counts["linear_bn"] += 1
            elif type(a) is nn.BatchNorm1d and type(b) is nn.Linear:
                parent._modules[names[j]] = fold_bn_linear(a, b)
                parent._modules[names[i]] = nn.Identity()
                counts["bn_linear"] += 1
            i += 1
    return counts


def fuse_for_deploy(model: nn.Module) -> int:
    """Run model-specific deploy fusions (modules that define `fuse_for_deploy()`, like the
    official code's `fuse()` methods) after BN folding; returns how many fired."""
    return sum(bool(m.fuse_for_deploy()) for m in list(model.modules())
               if m is not model and callable(getattr(m, "fuse_for_deploy", None)))


def folded_copy(model: nn.Module) -> nn.Module:
    """The folded deploy model; the original stays untouched as the parity reference."""
    m = copy.deepcopy(model).eval()
    fold_batchnorm(m)
    fuse_for_deploy(m)
    return m


def count_batchnorm(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
