"""EfficientViT-M0..M5 (Liu et al., CVPR 2023, "Memory Efficient Vision Transformer with Cascaded
Group Attention"), computing exactly what Microsoft's classification code computes.

Module names follow timm's `efficientvit_msra`, so timm checkpoints load with identity keys and the
official Microsoft checkpoints load through a deterministic rename (reference/models.md §1.7).

Deployment choices, and why:
- Every Conv+BN pair is an `nn.Sequential(conv, bn)` of plain torch layers and the classifier is
  `nn.Sequential(bn, drop, linear)`, so the generic folder in `export/fold.py` can fold them in place.
- The gathered attention bias `attention_biases[:, idxs]` is recomputed inside `forward` from a
  non-persistent index buffer instead of being cached as an attribute (the official `self.ab` and
  timm's per-device cache both go stale after `load_state_dict` / `.to()`). Both operands are
  constants at export time, so the exporter can fold the gather away.
- The input size (H x W, ``ImageSize``) is fixed at build time: stage resolutions, window padding and
  the partition reshapes are plain Python ints, so the traced graph has no data-dependent control
  flow and no shape arithmetic; only the batch axis is free (`-1` reshapes).
- The *training* resolution is separate from the input size (issue 16). A checkpoint's attention-bias
  tables fix each stage's window resolution (``min(7, map at the training size)``: 7, 7, 4 for the
  released 224 weights); the model is built with those tables and, at any input H x W, each stage's
  map is zero-padded bottom/right to a multiple of that window and partitioned into windows of it,
  with no mask -- the official/timm ``LocalWindowAttention`` run path. Two cases the official code
  cannot run are defined here, and documented: a stage whose map exceeds a window smaller than 7
  (stage 3 of a 224 model at >= 128 px) is partitioned into windows of the table's resolution (the
  official code partitions by 7 and then fails on the 4x4 bias); a map smaller than the window on
  both axes is padded to one window (the official code fails on the bias shape).
- q is multiplied by the scale before `q^T k` (timm's order). The official code scales after the
  matmul; with key_dim 16 the scale is 0.25, a power of two, so both orders give identical bits.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from vitdeploy.errors import UserError
from vitdeploy.models.size import ImageSize, as_size, check_multiple

__all__ = [
    "EfficientViTConfig",
    "VARIANTS",
    "MODEL_NAMES",
    "MIN_IMG_SIZE",
    "EfficientViT",
    "build_efficientvit",
    "build",
    "valid_img_size",
    "detect_format",
    "has_distillation_head",
    "convert_checkpoint",
    "to_official_state_dict",
    "to_timm_state_dict",
    "guess_variant",
    "attention_bias_index",
]


# ----------------------------------------------------------------------------------------------
# Configs (official classification/model/build.py == timm efficientvit_m0..m5)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EfficientViTConfig:
    embed_dim: Tuple[int, int, int]
    depth: Tuple[int, int, int]
    num_heads: Tuple[int, int, int]
    kernels: Tuple[int, int, int, int]  # per-head q depthwise kernel; only the first num_heads used
    key_dim: Tuple[int, int, int] = (16, 16, 16)
    window_size: Tuple[int, int, int] = (7, 7, 7)
    params: int = 0  # official parameter count at num_classes=1000, no distillation head


VARIANTS: Dict[str, EfficientViTConfig] = {
    "efficientvit_m0": EfficientViTConfig((64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5), params=2_349_436),
    "efficientvit_m1": EfficientViTConfig((128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3), params=2_980_560),
    "efficientvit_m2": EfficientViTConfig((128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3), params=4_187_554),
    "efficientvit_m3": EfficientViTConfig((128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5), params=6_900_722),
    "efficientvit_m4": EfficientViTConfig((128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3), params=8_804_228),
    "efficientvit_m5": EfficientViTConfig((192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3), params=12_473_772),
}
MODEL_NAMES: Tuple[str, ...] = tuple(VARIANTS)

PATCH_SIZE = 16
# Below 64 px the last stage is a single token and the first a 2x2 map: nothing a user could want.
MIN_IMG_SIZE = 64


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


class ConvNorm(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d. A Sequential so `export/fold.py` folds it in place."""

    def __init__(self, in_chs, out_chs, kernel_size=1, stride=1, padding=0, groups=1, bn_weight_init=1.0):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0)


class NormLinear(nn.Sequential):
    """BatchNorm1d BEFORE Linear (official BN_Linear); `drop` keeps timm's child names."""

    def __init__(self, in_features, out_features, bias=True, std=0.02, drop=0.0):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        nn.init.trunc_normal_(self.linear.weight, std=std)
        if bias:
            nn.init.constant_(self.linear.bias, 0)


class ResidualDrop(nn.Module):
    """x + m(x); stochastic depth only in training with drop > 0 (the official blocks use 0)."""

    def __init__(self, m: nn.Module, drop: float = 0.0):
        super().__init__()
        self.m = m
        self.drop = drop

    def forward(self, x):
        if self.training and self.drop > 0:
            keep = torch.rand(x.size(0), 1, 1, 1, device=x.device).ge_(self.drop).div(1 - self.drop)
            return x + self.m(x) * keep.detach()
        return x + self.m(x)


class ConvMlp(nn.Module):
    """Official FFN: 1x1 ConvNorm -> ReLU -> 1x1 ConvNorm (expansion 2 everywhere)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.pw1 = ConvNorm(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvNorm(hidden, dim, bn_weight_init=0.0)

    def forward(self, x):
        return self.pw2(self.act(self.pw1(x)))


def _make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    # timm.layers.make_divisible, which timm's SqueezeExcite uses for the reduced width.
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class SqueezeExcite(nn.Module):
    """timm SEModule(channels, rd_ratio=.25) as the official PatchMerging uses it: keys fc1/fc2."""

    def __init__(self, channels, rd_ratio=0.25):
        super().__init__()
        rd = _make_divisible(channels * rd_ratio, 8, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * s.sigmoid()


class PatchMerging(nn.Module):
    """1x1 expand x4 -> ReLU -> 3x3/2 depthwise -> ReLU -> SE -> 1x1 project; no residual."""

    def __init__(self, dim, out_dim):
        super().__init__()
        hid = dim * 4
        self.conv1 = ConvNorm(dim, hid)
        self.act = nn.ReLU()
        self.conv2 = ConvNorm(hid, hid, 3, 2, 1, groups=hid)
        self.se = SqueezeExcite(hid, 0.25)
        self.conv3 = ConvNorm(hid, out_dim)

    def forward(self, x):
        return self.conv3(self.se(self.act(self.conv2(self.act(self.conv1(x))))))


def attention_bias_index(resolution: int) -> torch.Tensor:
    """(N, N) offset index for a res x res window, N = res^2: idx[p, q] = |dr|*res + |dc|.

    Equal to the official insertion-order construction (unique (|dr|, |dc|) pairs numbered as first
    met while scanning p then q row-major), which is what the checkpoints' bias columns mean.
    """
    r = torch.arange(resolution).repeat_interleave(resolution)
    c = torch.arange(resolution).repeat(resolution)
    return (r[:, None] - r[None, :]).abs() * resolution + (c[:, None] - c[None, :]).abs()


class CascadedGroupAttention(nn.Module):
    """Head i attends over (its channel split + head i-1's output); q gets a depthwise conv."""

    def __init__(self, dim, key_dim, num_heads, resolution, kernels):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim ** -0.5
        # attn_ratio = dim / (key_dim * num_heads) makes the value width exactly dim // num_heads,
        # which is what lets head i's output be added to head i+1's input split (the cascade).
        self.d = dim // num_heads
        self.resolution = resolution
        self.qkvs = nn.ModuleList(ConvNorm(dim // num_heads, 2 * key_dim + self.d) for _ in range(num_heads))
        self.dws = nn.ModuleList(
            ConvNorm(key_dim, key_dim, kernels[i], 1, kernels[i] // 2, groups=key_dim) for i in range(num_heads)
        )
        self.proj = nn.Sequential(nn.ReLU(), ConvNorm(self.d * num_heads, dim, bn_weight_init=0.0))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        # Non-persistent: it is a pure function of the resolution; official files carry it anyway and
        # convert_checkpoint drops it.
        self.register_buffer("attention_bias_idxs", attention_bias_index(resolution), persistent=False)

    @torch.no_grad()
    def fuse_for_deploy(self) -> bool:
        """After BN folding, move the q scale into each head's depthwise conv: one Mul per head
        less in the exported graph. Exact for key_dim 16 (scale 0.25 is a power of two)."""
        if self.scale == 1.0:
            return False
        convs = []
        for dw in self.dws:
            if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in dw.modules()):
                return False  # BN not folded yet: the scale would be applied before the BN
            convs.append(dw.conv)
        for conv in convs:
            conv.weight.mul_(self.scale)
            if conv.bias is not None:
                conv.bias.mul_(self.scale)
        self.scale = 1.0
        return True

    def forward(self, x):
        r, kd, d = self.resolution, self.key_dim, self.d
        n = r * r  # the input is always one r x r window (LocalWindowAttention partitions)
        # Static sizes everywhere (no x.shape arithmetic), so traced graphs carry no Shape ops.
        feats_in = x.split([d] * self.num_heads, dim=1)
        feats_out = []
        feat = feats_in[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if i > 0:
                feat = feat + feats_in[i]
            q, k, v = qkv(feat).split([kd, kd, d], dim=1)
            q = dw(q).reshape(-1, kd, n)
            if self.scale != 1.0:  # static; 1.0 once fuse_for_deploy() moved it into the dw conv
                q = q * self.scale
            # Gathered here on every call on purpose: never stale after load_state_dict()/.to(), and
            # a gather of two constants, which the exporter folds into one (N, N) initializer per head.
            bias = self.attention_biases[i][self.attention_bias_idxs]
            attn = (q.transpose(-2, -1) @ k.reshape(-1, kd, n) + bias).softmax(dim=-1)  # (B, N, N)
            feat = (v.reshape(-1, d, n) @ attn.transpose(-2, -1)).reshape(-1, d, r, r)
            feats_out.append(feat)
        return self.proj(torch.cat(feats_out, 1))


class LocalWindowAttention(nn.Module):
    """Non-overlapping window attention (no shift, no mask); zero pad bottom/right when needed.

    ``resolution`` is the (h, w) map this block runs on, ``window_resolution`` the attention window
    (the bias table's resolution, module docstring)."""

    def __init__(self, dim, key_dim, num_heads, resolution, window_resolution, kernels):
        super().__init__()
        self.dim = dim
        self.resolution = resolution if isinstance(resolution, tuple) else (resolution, resolution)
        self.window_resolution = window_resolution
        self.attn = CascadedGroupAttention(dim, key_dim, num_heads, window_resolution, kernels)

    def forward(self, x):
        (h, w), ws, C = self.resolution, self.window_resolution, self.dim
        if (h, w) == (ws, ws):  # static: fixed at build time; one window, attention on the map
            return self.attn(x)
        pb, pr = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pb or pr:
            x = F.pad(x, (0, pr, 0, pb))
        nh, nw = (h + pb) // ws, (w + pr) // ws
        # (B, C, nh*ws, nw*ws) -> (B*nh*nw, C, ws, ws), windows in row-major order as the official code.
        x = x.reshape(-1, C, nh, ws, nw, ws).permute(0, 2, 4, 1, 3, 5).reshape(-1, C, ws, ws)
        x = self.attn(x)
        x = x.reshape(-1, nh, nw, C, ws, ws).permute(0, 3, 1, 4, 2, 5).reshape(-1, C, nh * ws, nw * ws)
        if pb or pr:
            x = x[:, :, :h, :w]
        return x


class EfficientViTBlock(nn.Module):
    """Sandwich: dw -> FFN -> window attention -> dw -> FFN, each residual."""

    def __init__(self, dim, key_dim, num_heads, resolution, window_resolution, kernels):
        super().__init__()
        self.dw0 = ResidualDrop(ConvNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0))
        self.ffn0 = ResidualDrop(ConvMlp(dim, dim * 2))
        self.mixer = ResidualDrop(
            LocalWindowAttention(dim, key_dim, num_heads, resolution, window_resolution, kernels)
        )
        self.dw1 = ResidualDrop(ConvNorm(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=0.0))
        self.ffn1 = ResidualDrop(ConvMlp(dim, dim * 2))

    def forward(self, x):
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


def _dw_ffn(dim):
    return nn.Sequential(ResidualDrop(ConvNorm(dim, dim, 3, 1, 1, groups=dim)), ResidualDrop(ConvMlp(dim, dim * 2)))


class EfficientViTStage(nn.Module):
    """timm layout: the official subsample block (end of stage i) opens stage i+1 here."""

    def __init__(self, in_dim, dim, key_dim, num_heads, resolution, window_resolution, kernels, depth, downsample):
        super().__init__()
        if downsample:
            self.resolution = tuple((r - 1) // 2 + 1 for r in resolution)
            self.downsample = nn.Sequential()
            self.downsample.add_module("res1", _dw_ffn(in_dim))
            self.downsample.add_module("patchmerge", PatchMerging(in_dim, dim))
            self.downsample.add_module("res2", _dw_ffn(dim))
        else:
            self.resolution = resolution
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(
            *[EfficientViTBlock(dim, key_dim, num_heads, self.resolution, window_resolution, kernels)
              for _ in range(depth)]
        )

    def forward(self, x):
        return self.blocks(self.downsample(x))


class PatchEmbedding(nn.Sequential):
    """4 x (3x3 stride-2 ConvNorm), ReLU between: 3 -> C/8 -> C/4 -> C/2 -> C, total stride 16."""

    def __init__(self, in_chans, dim):
        super().__init__()
        self.conv1 = ConvNorm(in_chans, dim // 8, 3, 2, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = ConvNorm(dim // 8, dim // 4, 3, 2, 1)
        self.relu2 = nn.ReLU()
        self.conv3 = ConvNorm(dim // 4, dim // 2, 3, 2, 1)
        self.relu3 = nn.ReLU()
        self.conv4 = ConvNorm(dim // 2, dim, 3, 2, 1)


def stage_resolutions(size, n: int = 3) -> List[Tuple[int, int]]:
    """(h, w) of each stage's map: stride 16 stem, then ``(r - 1) // 2 + 1`` per subsample."""
    size = as_size(size)
    r = (size.h // PATCH_SIZE, size.w // PATCH_SIZE)
    out = [r]
    for _ in range(n - 1):
        r = tuple((x - 1) // 2 + 1 for x in r)
        out.append(r)
    return out


def window_resolutions(cfg: "EfficientViTConfig", train_size=224) -> Tuple[int, ...]:
    """Each stage's attention window (bias-table resolution) of a model trained at ``train_size``:
    ``min(window_size, map)``, as the official LocalWindowAttention builds its attention."""
    return tuple(min(ws, min(r)) for ws, r in zip(cfg.window_size, stage_resolutions(train_size)))


FEATURE_STRIDES = (16, 32, 64)
FEATURE_MODULES = ("stages.0", "stages.1", "stages.2")  # timm feature_info / forward_intermediates


class EfficientViT(nn.Module):
    """EfficientViT-M at a fixed H x W input (multiples of 16, >= MIN_IMG_SIZE): a classifier, or
    (task="backbone") the three stage maps at strides 16/32/64 (timm ``stages.0..2``).

    ``windows``: per-stage attention window resolution (from the checkpoint's bias tables); default
    that of a model trained at ``img_size`` when square, at 224 (the released weights) otherwise."""

    def __init__(self, cfg: EfficientViTConfig, img_size=224, in_chans: int = 3, num_classes: int = 1000,
                 distillation: bool = False, name: str = "efficientvit", task: str = "classify",
                 windows: Optional[Tuple[int, ...]] = None):
        super().__init__()
        size = as_size(img_size)
        self.name = name
        self.cfg = cfg
        self.img_size = size
        self.task = task
        self.num_classes = num_classes
        self.distillation = distillation
        if windows is None:
            windows = window_resolutions(cfg, size if size.is_square else 224)
        self.windows = tuple(int(w) for w in windows)
        self.patch_embed = PatchEmbedding(in_chans, cfg.embed_dim[0])
        resolution = (size.h // PATCH_SIZE, size.w // PATCH_SIZE)
        stages = []
        self.stage_resolutions: List[Tuple[int, int]] = []
        for i in range(3):
            stage = EfficientViTStage(
                cfg.embed_dim[i - 1] if i else cfg.embed_dim[0], cfg.embed_dim[i], cfg.key_dim[i], cfg.num_heads[i],
                resolution, self.windows[i], cfg.kernels, cfg.depth[i], downsample=i > 0,
            )
            resolution = stage.resolution
            self.stage_resolutions.append(resolution)
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.num_features = cfg.embed_dim[-1]
        self.feature_strides = FEATURE_STRIDES
        if task == "classify":
            self.head = NormLinear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
            if distillation:
                self.head_dist = NormLinear(self.num_features, num_classes)

    def _check_input(self, x):
        # Shape check only outside tracing/export, where it would only add guards/warnings.
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
            return
        if torch.compiler.is_compiling():
            return
        expected = (self.patch_embed.conv1.conv.in_channels, self.img_size.h, self.img_size.w)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise UserError(
                f"{self.name} was built for input [B,{self.patch_embed.conv1.conv.in_channels},"
                f"{self.img_size.h},{self.img_size.w}], got {list(x.shape)}; resize the input or rebuild with "
                f"img_size={'x'.join(map(str, x.shape[-2:])) if x.dim() == 4 else '?'}"
            )

    def forward_features(self, x):
        self._check_input(x)
        return self.stages(self.patch_embed(x))

    def forward_intermediates(self, x) -> List[torch.Tensor]:
        """The three stage outputs (NCHW, strides 16/32/64), e.g. for a detection neck (timm's name)."""
        self._check_input(x)
        x = self.patch_embed(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_head(self, x):
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # the official pooling call
        if self.distillation:
            x, x_dist = self.head(x), self.head_dist(x)
            if self.training:
                return x, x_dist
            return (x + x_dist) / 2
        return self.head(x)

    def forward(self, x):
        if self.task == "backbone":
            return tuple(self.forward_intermediates(x))
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------


def valid_img_size(img_size) -> bool:
    try:
        size = as_size(img_size)
    except UserError:
        return False
    return all(v >= MIN_IMG_SIZE and v % PATCH_SIZE == 0 for v in size.hw)


def check_legal_size(size: ImageSize) -> None:
    """H and W multiples of 16 (the stem's four stride-2 convs), >= 64."""
    check_multiple(size, PATCH_SIZE, MIN_IMG_SIZE, "EfficientViT",
                   "the stem's four stride-2 convs; 224 = the released weights' size")


def build_efficientvit(name: str, num_classes: int = 1000, img_size=224,
                       distillation: bool = False, task: str = "classify",
                       windows: Optional[Tuple[int, ...]] = None) -> EfficientViT:
    """Build an EfficientViT-M with the official initialisation (random weights, train mode)."""
    if name not in VARIANTS:
        raise UserError(f"unknown EfficientViT variant {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if isinstance(img_size, bool) or not isinstance(img_size, (int, ImageSize)):
        raise UserError(f"{name} cannot take img_size={img_size!r}: expected an int or an ImageSize whose H and W "
                        f"are multiples of {PATCH_SIZE}")
    check_legal_size(as_size(img_size))
    if not isinstance(num_classes, int) or num_classes < 0:
        raise UserError(f"{name}: num_classes must be an integer >= 0 (0 = pooled features), got {num_classes!r}")
    if distillation and num_classes == 0:
        raise UserError(f"{name}: a distillation head needs num_classes > 0")
    if task not in ("classify", "backbone"):
        raise UserError(f"{name} supports --task classify|backbone, not {task!r}")
    return EfficientViT(VARIANTS[name], img_size=img_size, num_classes=num_classes,
                        distillation=distillation and task == "classify", name=name, task=task, windows=windows)


def checkpoint_windows(state_dict: Mapping[str, torch.Tensor], name: str) -> Optional[Tuple[int, ...]]:
    """Per-stage window resolution the checkpoint was trained with, read from its bias tables
    (``attention_biases`` is (heads, r*r)); None when the file has none."""
    try:
        sd = _rename_to_ours(state_dict)
    except UserError:
        return None
    found: Dict[int, int] = {}
    for k, v in sd.items():
        m = re.match(r"stages\.(\d)\.blocks\.\d+\.mixer\.m\.attn\.attention_biases$", k)
        if m and getattr(v, "ndim", 0) == 2:
            r = int(round(int(v.shape[1]) ** 0.5))
            if r * r != int(v.shape[1]):
                raise UserError(f"{name}: checkpoint bias table {k} has {int(v.shape[1])} columns, not a "
                                f"square window's r*r; the file is damaged or not EfficientViT-M")
            found.setdefault(int(m.group(1)), r)
    if len(found) != 3:
        return None
    return tuple(found[i] for i in range(3))


def build(name: str, *, num_classes: int, img_size, task: str = "classify", sparsity=None,
          state_dict: Optional[Mapping[str, object]] = None, norm_order=None) -> EfficientViT:
    """The registry's builder (one signature for every family). Built with the checkpoint's own
    window resolutions (its training size) and run at ``img_size``; a distillation head in
    `state_dict` is built, so eval averages both heads like the official code."""
    if sparsity is not None:
        raise UserError(f"--sparsity applies to Swin models (SparseViT), not {name}")
    if norm_order is not None:
        raise UserError(f"--norm-order applies to Swin models, not {name}")
    if task not in ("classify", "backbone"):
        raise UserError(f"{name} supports --task classify|backbone, not {task!r}")
    distill = task == "classify" and state_dict is not None and has_distillation_head(state_dict)
    windows = checkpoint_windows(state_dict, name) if state_dict is not None else None
    return build_efficientvit(name, num_classes=num_classes, img_size=img_size, distillation=distill,
                              task=task, windows=windows)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------

_DOWN = ("res1", "patchmerge", "res2")


def _official_key_to_ours(key: str) -> str:
    """Deterministic official -> timm/ours rename (reference/models.md §1.7)."""
    p = key.split(".")
    if p[0] == "patch_embed" and len(p) > 1 and p[1] in ("0", "2", "4", "6"):
        p = ["patch_embed", f"conv{int(p[1]) // 2 + 1}"] + p[2:]
    elif p[0] == "blocks1" and len(p) > 1:
        p = ["stages", "0", "blocks"] + p[1:]
    elif p[0] in ("blocks2", "blocks3") and len(p) > 1 and p[1].isdigit():
        s, j = int(p[0][-1]) - 1, int(p[1])
        p = ["stages", str(s)] + (["downsample", _DOWN[j]] if j < 3 else ["blocks", str(j - 3)]) + p[2:]
    return ".".join({"c": "conv", "l": "linear"}.get(x, x) for x in p)


def _our_key_to_official(key: str) -> str:
    p = key.split(".")
    if p[0] == "patch_embed" and len(p) > 1 and p[1].startswith("conv"):
        p = ["patch_embed", str(2 * (int(p[1][4:]) - 1))] + p[2:]
    elif p[0] == "stages":
        s = int(p[1])
        if p[2] == "downsample":
            p = [f"blocks{s + 1}", str(_DOWN.index(p[3]))] + p[4:]
        else:  # blocks
            j = int(p[3]) + (3 if s > 0 else 0)
            p = [f"blocks{s + 1}", str(j)] + p[4:]
    return ".".join({"conv": "c", "linear": "l"}.get(x, x) for x in p)


_OFFICIAL_RE = re.compile(r"^(blocks[123]\.|patch_embed\.[0246]\.c\.|head\.l\.)")


def detect_format(state_dict: Mapping[str, object]) -> Optional[str]:
    """'official' (Microsoft), 'timm' (timm or ours: same keys), or None."""
    keys = list(state_dict)
    if any(k.startswith("stages.") for k in keys) and any(k.startswith("patch_embed.conv1.") for k in keys):
        return "timm"
    if any(_OFFICIAL_RE.match(k) for k in keys) and any(k.startswith("blocks1.") for k in keys):
        return "official"
    return None


def _looks_like(keys: List[str]) -> str:
    """A human description of what an unrecognised key set is, for the error message."""
    has = lambda pat: any(re.search(pat, k) for k in keys)  # noqa: E731
    if has(r"(^|\.)layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table"):
        return "this looks like a timm/official Swin checkpoint (layers.*); load it with a swin_* model"
    if has(r"attn\.w_msa\.") or has(r"^backbone\.stages\.\d+\.blocks\.\d+\.ffn\.layers"):
        return ("this looks like a Swin/SparseViT (mmdet) checkpoint (backbone.stages.*.attn.w_msa); "
                "load it with a swin_* model")
    if has(r"^backbone\.(blocks[123]|patch_embed)\."):
        return ("this looks like an mmdet detector with an EfficientViT backbone (backbone.*); "
                "vitdeploy's efficientvit models are ImageNet classifiers")
    if has(r"(^|\.)(input_stem|op_list)\.") or has(r"context_module\.main"):
        return "this looks like an MIT-HAN EfficientViT (B/L series) checkpoint, a different model family"
    if has(r"^blocks\.\d+\.attn\.qkv\.") or has(r"^cls_token$"):
        return "this looks like a plain ViT/DeiT checkpoint"
    if has(r"^(layer[1-4]\.|conv1\.weight$)"):
        return "this looks like a ResNet-style CNN checkpoint"
    return "the keys match neither the official Microsoft format (blocks1.*, .c./.l.) nor timm's (stages.*)"


def has_distillation_head(state_dict: Mapping[str, object]) -> bool:
    """True when the file has a distillation head (build with distillation=True to use it)."""
    return any(k.startswith("head_dist.") for k in state_dict)


def _rename_to_ours(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    fmt = detect_format(state_dict)
    if fmt is None:
        keys = list(state_dict)
        sample = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
        raise UserError(f"not an EfficientViT-M checkpoint: {_looks_like(keys)} (keys: {sample or 'none'})")
    out = {}
    for k, v in state_dict.items():
        nk = _official_key_to_ours(k) if fmt == "official" else k
        if nk.endswith("attention_bias_idxs"):  # derived from the resolution; ours is non-persistent
            continue
        out[nk] = v
    return out


def convert_checkpoint(state_dict: Mapping[str, torch.Tensor], model: EfficientViT) -> Dict[str, torch.Tensor]:
    """Official-Microsoft or timm state dict -> our keys, ready for a strict `load_state_dict`.

    - `attention_bias_idxs` (persistent in official files and old timm) are dropped.
    - 2-D tensors where the model has an (o, i, 1, 1) conv weight get `[:, :, None, None]`, as the
      official build.py does for released 1x1 weights.
    - `head_dist.*` in the file while `model` has no distillation head: dropped with a warning. The
      model then outputs the main head alone, whereas the official eval output averages both heads;
      build with `distillation=True` (see `has_distillation_head`) to reproduce it.
    - `*.num_batches_tracked` the file lacks are filled with the model's own (they never affect eval).
    - Same variant but attention-bias tables of another size (trained at another img_size): UserError
      saying so. Other shape mismatches (another variant, another num_classes) are left for the
      strict loader to report (`guess_variant` names the variant a file belongs to).
    """
    sd = _rename_to_ours(state_dict)
    target = model.state_dict()
    if getattr(model, "task", "classify") == "backbone":  # the feature maps only: no classifier
        sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "head_dist."))}
    if not hasattr(model, "head_dist") and has_distillation_head(sd):
        warnings.warn(
            f"{getattr(model, 'name', 'efficientvit')}: checkpoint has a distillation head (head_dist.*) that the "
            "model lacks; dropping it, so outputs use the main head only (the official eval averages both heads; "
            "build with distillation=True to match)",
            stacklevel=2,
        )
        sd = {k: v for k, v in sd.items() if not k.startswith("head_dist.")}
    for k, v in list(sd.items()):
        t = target.get(k)
        if (t is not None and isinstance(v, torch.Tensor) and v.dim() == 2 and t.dim() == 4
                and t.shape[2:] == (1, 1) and tuple(v.shape) == tuple(t.shape[:2])):
            sd[k] = v[:, :, None, None]
    _check_bias_tables(sd, target, model)
    present = set(sd)
    for k, t in target.items():
        stem = k[: -len("num_batches_tracked")]
        if k.endswith("num_batches_tracked") and k not in present and stem + "running_mean" in present:
            sd[k] = t.clone()
    return sd


def _check_bias_tables(sd, target, model):
    """Same variant but bias tables of another size: say it is the input size, not a wrong model."""
    bad = [(k, tuple(sd[k].shape), tuple(t.shape)) for k, t in target.items()
           if k.endswith("attention_biases") and k in sd and tuple(sd[k].shape) != tuple(t.shape)]
    if bad and _signature(sd) == _signature(target):
        k, got, want = bad[0]
        name = getattr(model, "name", "efficientvit")
        raise UserError(
            f"{name}: the checkpoint's attention-bias table {k} is {list(got)} but the model built for "
            f"windows {getattr(model, 'windows', '?')} needs {list(want)}; the checkpoint was trained at another "
            f"input size: build with its windows (build() reads them from the file)"
        )


def to_timm_state_dict(model: EfficientViT) -> Dict[str, torch.Tensor]:
    """timm `efficientvit_msra` keys are ours (timm has no distillation head, so drop it)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("head_dist.")}


def to_official_state_dict(model: EfficientViT) -> Dict[str, torch.Tensor]:
    """Microsoft's key layout, including the persistent `attention_bias_idxs` their files carry."""
    out = {_our_key_to_official(k): v.detach().clone() for k, v in model.state_dict().items()}
    for name, buf in model.named_buffers():
        if name.endswith("attention_bias_idxs"):
            out[_our_key_to_official(name)] = buf.detach().clone()
    return out


@functools.lru_cache(maxsize=None)
def _variant_signature(name: str) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    with torch.device("meta"):
        m = EfficientViT(VARIANTS[name], img_size=224, num_classes=1000, name=name)
    return _signature(m.state_dict())


def _squeeze_shape(shape: Iterable[int]) -> Tuple[int, ...]:
    s = tuple(int(x) for x in shape)
    while len(s) > 2 and s[-1] == 1:  # 1x1 conv weights may be stored 2-D
        s = s[:-1]
    return s


def _signature(sd: Mapping[str, torch.Tensor]) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    # The classifier width and the attention-bias table size depend on num_classes / img_size, not
    # on the variant; leave them out so any such checkpoint is still recognised.
    items = []
    for k, v in sd.items():
        if k.startswith(("head.", "head_dist.")) or k.endswith(("attention_bias_idxs", "num_batches_tracked")):
            continue
        shape = () if k.endswith("attention_biases") else _squeeze_shape(getattr(v, "shape", ()))
        items.append((k, shape))
    return tuple(sorted(items))


def guess_variant(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """Which efficientvit_m* an official or timm state dict belongs to (None if none)."""
    try:
        sd = _rename_to_ours(state_dict)
    except UserError:
        return None
    sig = _signature(sd)
    for name in MODEL_NAMES:
        if _variant_signature(name) == sig:
            return name
    return None
