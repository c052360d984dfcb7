"""Swin-T/S/B whose blocks run at window level: a dense Swin, or a SparseViT when pruning ratios are set.

Module names equal timm's ``swin_transformer`` names, so timm checkpoints load with identity keys;
``convert_checkpoint`` also takes Microsoft-original and mmdet/SparseViT layouts.

Semantics follow the official SparseViT code (reference/models.md §2.3), per block:
pad -> roll (shifted) -> partition -> [gather kept windows] -> LN1 -> W-MSA (+ relative position
bias, + shift mask gathered with the same indices) -> residual -> LN2 -> MLP -> residual ->
[scatter back; pruned windows unchanged] -> reverse -> roll back -> crop.
Window importance is computed once per stage at the first pruned block, from its input
(channel-mean |x| per token, padded, rolled for shifted blocks, L2 over each window's tokens);
regular and shifted blocks keep separate sorted top-k index sets, later blocks take a prefix.
A block runs in one of three explicit forms: ``forward`` (dense windows), ``forward_kept`` (only
the kept windows, gathered and scattered back) and ``forward_kept_tokens`` (stages where every
block is pruned stay on the token map). The model has timm's ``forward_features`` /
``forward_head`` / ``forward_intermediates``.

Execution does not go back to the token map between blocks (going back costs five full-map copies
per block: roll, partition, reverse, roll back, plus the scatter's). A stage keeps its activations as
window rows ``[B, nW*N, C]`` of the padded map, in the *regular* partition or the *shifted* one
(partition of the map rolled by -shift). "Reverse, roll back, pad, roll, partition" between two
blocks is then one constant permutation of those rows: a single ``index_select`` (ONNX ``Gather``
on a constant index). The map is partitioned once at stage start and rebuilt once at stage end.
Pad tokens: the reference re-pads with zeros before every block (LN1 then sees zeros there), so
where a stage needs padding the pad rows are re-zeroed by a constant 0/1 row mask after each
permutation; stages without padding carry no mask. The per-token importance map is permuted the
same way (one channel: cheap), so regular and shifted window scores are bit-identical to
computing them on the padded, rolled, partitioned map.

Where a stage's token map is no larger than the window, the window is the whole map and blocks do
not shift (as in Swin/timm; DESIGN decision 5). The relative-position table keeps its 13x13 size
for checkpoint compatibility and such a smaller window indexes its central part.

Export: every shape is a Python int fixed by ``img_size`` except the batch; TopK's K is a Python
int; the window gather/scatter are single ``vitdeploy::`` custom ops. A dense model (all ratios 0)
contains no custom op at all.
"""

from __future__ import annotations

import re
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitdeploy.errors import UserError
from vitdeploy.models.size import ImageSize, as_size, check_multiple
from vitdeploy.models.sparsity import SparsityConfig, StageGeometry, keep_count, parse_sparsity, stage_geometry
from vitdeploy.models.window_ops import window_gather, window_scatter

WINDOW = 7
PATCH = 4
MLP_RATIO = 4.0

NORM_ORDERS = ("sparsevit", "timm")  # pad -> roll -> LN1 (SparseViT) | LN1 -> pad -> roll (timm, mmdet)
SIZE_MULTIPLE = 32  # patch 4 and three 2x merges
MIN_SIZE = 32


def check_legal_size(size: ImageSize) -> None:
    """Swin takes H and W that are multiples of 32 (patch 4, then three 2x patch merges)."""
    check_multiple(size, SIZE_MULTIPLE, MIN_SIZE, "Swin/SparseViT", "patch 4 and three 2x patch merges")


CONFIGS: dict[str, dict] = {
    "swin_t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "swin_s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "swin_b": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}


# ----------------------------------------------------------------------------------------- helpers

def _partition(x: Tensor, wh: int, ww: int) -> Tensor:
    """(B, Hp, Wp, C) -> (B, nW, wh*ww, C), windows in row-major order (nWh rows of nWw windows)."""
    B, Hp, Wp, C = x.shape
    x = x.reshape(-1, Hp // wh, wh, Wp // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, (Hp // wh) * (Wp // ww), wh * ww, C)


def _relative_position_index(wh: int, ww: int, table_window: int) -> Tensor:
    """(N, N) indices into a ((2*table_window-1)^2, heads) table, for a wh x ww window (a window
    smaller than the table's indexes its central part)."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (table_window - 1)
    return rel[..., 0] * (2 * table_window - 1) + rel[..., 1]


def _axis_regions(n: int, ws: int, shift: int) -> Tensor:
    """Swin's three shift regions along one axis of the padded map (one region when not shifted)."""
    p = torch.arange(n)
    if not shift:
        return torch.zeros(n, dtype=torch.long)
    return (p >= n - ws).long() + (p >= n - shift).long()


def _shift_mask(g: StageGeometry) -> Tensor:
    """(nW, N, N) additive mask (0 / -100) for the cyclically shifted padded map (Swin/SparseViT),
    over the *padded* size, per axis."""
    lab = _axis_regions(g.hp, g.wh, g.sh)[:, None] * 3 + _axis_regions(g.wp, g.ww, g.sw)[None, :]
    mw = _partition(lab.float().reshape(1, g.hp, g.wp, 1), g.wh, g.ww)[0, :, :, 0]  # (nW, N)
    mask = mw[:, None, :] - mw[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


# ----------------------------------------------------------------------------------------- modules

class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, PATCH, PATCH)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # NHWC


class PatchMerging(nn.Module):
    """timm layout: 2x2 neighbours concatenated as (h0w0, h1w0, h0w1, h1w1) then LN(4C), Linear."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        x = x.reshape(-1, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, wh: int, ww: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.N = wh * ww
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * WINDOW - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Non-persistent: recomputed, never read from (or stale in) a checkpoint.
        self.register_buffer("relative_position_index", _relative_position_index(wh, ww, WINDOW).flatten(),
                             persistent=False)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, K, N, C); mask None or (B|1, K, N, N)."""
        B, K, N, C = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(-1, K, N, 3, h, C // h).permute(3, 0, 1, 4, 2, 5)  # 3,B,K,h,N,d
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # B,K,h,N,N
        bias = self.relative_position_bias_table[self.relative_position_index]
        attn = attn + bias.reshape(N, N, h).permute(2, 0, 1)
        if mask is not None:
            attn = attn + mask.unsqueeze(2)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).permute(0, 1, 3, 2, 4).reshape(-1, K, N, C)
        return self.proj(out)


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, geom: StageGeometry, shifted: bool):
        super().__init__()
        g = geom
        self.wh, self.ww = g.wh, g.ww
        self.ws = g.wh if g.wh == g.ww else (g.wh, g.ww)  # kept for callers of the square API
        # Along an axis no larger than the window there is one window: no shift there (DESIGN 5).
        self.shift_hw = (g.sh, g.sw) if shifted else (0, 0)
        self.shift = max(self.shift_hw)
        self.H, self.W, self.Hp, self.Wp = g.h, g.w, g.hp, g.wp
        self.nW = g.n_windows
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, g.wh, g.ww)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * MLP_RATIO))
        if self.shift:
            self.register_buffer("attn_mask", _shift_mask(g), persistent=False)
        else:
            self.attn_mask = None

    def _attend(self, y: Tensor, mask: Tensor | None, ln_valid: Tensor | None = None) -> Tensor:
        """LN1 -> W-MSA -> residual -> LN2 -> MLP -> residual on windows. ``ln_valid`` (timm/mmdet
        order only): 0 on pad tokens, so LN1's output is zero there as if LN1 ran before padding;
        None = SparseViT's order (pad first, pad tokens see LN1(0))."""
        n = self.norm1(y)
        if ln_valid is not None:
            n = n * ln_valid
        y = y + self.attn(n, mask)
        return y + self.mlp(self.norm2(y))

    def _kept_mask(self, idx: Tensor) -> Tensor | None:
        """The shift mask of the kept windows: a constant-data Gather on (nW, N, N), no per-sample copy."""
        if self.attn_mask is None:
            return None
        N = self.wh * self.ww
        return self.attn_mask.index_select(0, idx.reshape(-1)).reshape(-1, idx.shape[1], N, N)

    def forward(self, x: Tensor, ln_valid: Tensor | None = None) -> Tensor:
        """Dense: x is this block's windows (B, nW, N, C), padded/rolled/partitioned as the reference
        does (the stage brings them into this layout); returns the same layout."""
        return self._attend(x, None if self.attn_mask is None else self.attn_mask.unsqueeze(0), ln_valid)

    def forward_kept(self, x: Tensor, idx: Tensor) -> Tensor:
        """Pruned, window form: only the windows `idx` (B, K) of x (B, nW, N, C) run; the others pass
        through unchanged (SparseViT's gather -> block -> scatter)."""
        return window_scatter(x, idx, self._attend(window_gather(x, idx), self._kept_mask(idx)))

    def forward_kept_tokens(self, x: Tensor, idx: Tensor, rows: Tensor, valid: Tensor | None) -> Tensor:
        """Pruned, token form (stages where every block is pruned): x is the padded token map
        (B, Hp*Wp, C); `rows` (B, K*N) are the map rows of the kept windows' tokens in window order,
        moved with the same gather/scatter ops as one-token windows; `valid` (B, K, N, 1) zeroes
        results on pad tokens so the map's pad stays zero (the reference re-pads every block)."""
        K, N, C = idx.shape[1], self.wh * self.ww, x.shape[-1]
        y = self._attend(window_gather(x.unsqueeze(2), rows).reshape(-1, K, N, C), self._kept_mask(idx))
        if valid is not None:
            y = y * valid
        return window_scatter(x.unsqueeze(2), rows, y.reshape(-1, K * N, 1, C)).squeeze(2)


def _layout_source(g: StageGeometry, shifted: bool) -> Tensor:
    """For each window row of a layout, the padded-map position (r*Wp + c) it holds."""
    pos = torch.arange(g.hp * g.wp).reshape(1, g.hp, g.wp, 1)
    if shifted:
        pos = torch.roll(pos, shifts=(-g.sh, -g.sw), dims=(1, 2))
    return _partition(pos, g.wh, g.ww).reshape(-1)


class SwinStage(nn.Module):
    """A stage's blocks on persistent window rows (module docstring): layout 0 is the regular
    partition of the padded map, layout 1 the shifted one."""

    def __init__(self, dim_in: int, dim: int, depth: int, num_heads: int, geom: StageGeometry,
                 downsample: bool, ratios: list[float], norm_order: str = "sparsevit"):
        super().__init__()
        self.downsample = PatchMerging(dim_in) if downsample else nn.Identity()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, geom, shifted=(j % 2 == 1)) for j in range(depth))
        self.geom = geom
        self.norm_order = norm_order
        b = self.blocks[0]
        nW = b.nW
        # Python ints: TopK's K must be a constant in the exported graph.
        self.keep: list[int | None] = [keep_count(nW, r) if r > 0 else None for r in ratios]
        self.H, self.W, self.Hp, self.Wp, self.ws, self.nW = b.H, b.W, b.Hp, b.Wp, b.ws, nW
        self.N = geom.tokens
        self.padded = geom.padded
        shift = max(blk.shift for blk in self.blocks)
        n = b.Hp * b.Wp
        ident = torch.arange(n)
        srcs = [_layout_source(geom, False)] + ([_layout_source(geom, True)] if shift else [])
        invs = [torch.empty_like(s_).scatter_(0, s_, ident) for s_ in srcs]
        valid_pos = torch.arange(b.Hp)[:, None].mul(b.Wp).add(torch.arange(b.Wp))[: b.H, : b.W].reshape(-1)
        # Constant row permutations; None where a step is the identity (no node at all).
        self.register_buffer("rows_from_map", None if torch.equal(srcs[0], ident) else srcs[0], persistent=False)
        for L, inv in enumerate(invs):
            to_map = inv[valid_pos]
            self.register_buffer(f"map_from_{L}", None if torch.equal(to_map, ident) else to_map, persistent=False)
            # 1 where a row is a real token, 0 on padding (only stages that pad use it).
            valid = (srcs[L] // b.Wp < b.H) & (srcs[L] % b.Wp < b.W)
            self.register_buffer(f"valid_{L}", valid.float()[:, None] if self.padded else None, persistent=False)
        if shift:
            self.register_buffer("perm_0to1", invs[0][srcs[1]], persistent=False)
            self.register_buffer("perm_1to0", invs[1][srcs[0]], persistent=False)
        # Token form: (nW, N) map rows of each window's tokens per layout, and their pad validity.
        for L, src in enumerate(srcs):
            self.register_buffer(f"tokens_{L}", src.reshape(nW, -1), persistent=False)
            valid = (src // b.Wp < b.H) & (src % b.Wp < b.W)
            self.register_buffer(f"tokens_valid_{L}", valid.float().reshape(nW, -1, 1) if self.padded else None,
                                 persistent=False)

    def _relayout(self, x: Tensor, src: int, dst: int) -> Tensor:
        """[B, nW*N, *] rows of layout ``src`` -> layout ``dst`` (one Gather on a constant index)."""
        return x if src == dst else x.index_select(1, getattr(self, f"perm_{src}to{dst}"))

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        C = x.shape[-1]
        nW, N = self.nW, self.N
        if self.padded:
            x = F.pad(x, (0, 0, 0, self.Wp - self.W, 0, self.Hp - self.H))
        x = x.reshape(-1, self.Hp * self.Wp, C)
        if all(k is not None for k in self.keep):
            return self._forward_pruned(x).reshape(-1, self.Hp, self.Wp, C)[:, : self.H, : self.W]
        if self.rows_from_map is not None:
            x = x.index_select(1, self.rows_from_map)  # partition (+ pad) once per stage
        cur = 0
        act = act_layout = None
        index_sets: dict[int, Tensor] = {}  # 0: regular blocks, 1: shifted blocks
        for j, blk in enumerate(self.blocks):
            want = 1 if blk.shift else 0
            if j > 0:
                x = self._relayout(x, cur, want)
                if self.padded:  # the reference re-pads with zeros before every block
                    x = x * getattr(self, f"valid_{want}")
            cur = want
            k = self.keep[j]
            if k is None:
                ln_valid = None
                if self.norm_order == "timm" and self.padded:
                    ln_valid = getattr(self, f"valid_{cur}").reshape(nW, N, 1)
                x = blk(x.reshape(-1, nW, N, C), ln_valid).reshape(-1, nW * N, C)
                continue
            if act is None:  # once per stage, from the first pruned block's input (pad rows are 0)
                act, act_layout = x.abs().mean(dim=-1), cur
            kind = j % 2
            if kind not in index_sets:  # first pruned block of its kind: the largest K of its kind
                a = self._relayout(act, act_layout, cur).reshape(-1, nW, N)
                score = torch.linalg.vector_norm(a, ord=2, dim=2)
                index_sets[kind] = torch.topk(score, k, dim=1, sorted=True).indices
            idx = index_sets[kind]
            if k < idx.shape[1]:
                idx = idx[:, :k]
            x = blk.forward_kept(x.reshape(-1, nW, N, C), idx).reshape(-1, nW * N, C)
        to_map = getattr(self, f"map_from_{cur}")
        if to_map is not None:
            x = x.index_select(1, to_map)  # reverse + roll back + crop, once per stage
        return x.reshape(-1, self.H, self.W, C)

    def _forward_pruned(self, x: Tensor) -> Tensor:
        """Every block pruned: stay on the padded token map. A block's only full-map pass is then
        the scatter's copy; no partition, relayout or reverse is executed at all."""
        nW, N = self.nW, self.N
        act = x.abs().mean(dim=-1)  # first pruned block's input = the stage input; pad rows are 0
        index_sets: dict[int, Tensor] = {}
        for j, blk in enumerate(self.blocks):
            k = self.keep[j]
            L = 1 if blk.shift else 0
            kind = j % 2
            if kind not in index_sets:
                a = act.index_select(1, getattr(self, f"tokens_{L}").reshape(-1)).reshape(-1, nW, N)
                index_sets[kind] = torch.topk(torch.linalg.vector_norm(a, ord=2, dim=2), k, dim=1,
                                              sorted=True).indices
            idx = index_sets[kind]
            if k < idx.shape[1]:
                idx = idx[:, :k]
            rows = getattr(self, f"tokens_{L}").index_select(0, idx.reshape(-1)).reshape(-1, k * N)
            tv = getattr(self, f"tokens_valid_{L}")
            valid = None if tv is None else tv.index_select(0, idx.reshape(-1)).reshape(-1, k, N, 1)
            x = blk.forward_kept_tokens(x, idx, rows, valid)
        return x


class SwinTransformer(nn.Module):
    def __init__(self, embed_dim: int, depths, num_heads, num_classes: int = 1000, img_size=224,
                 task: str = "classify", sparsity: SparsityConfig | None = None, variant: str = "custom",
                 norm_order: str | None = None):
        super().__init__()
        if task not in ("classify", "backbone"):
            raise UserError(f"task {task!r} is not supported by Swin; use classify or backbone")
        size = as_size(img_size)
        check_legal_size(size)
        depths = list(depths)
        if sparsity is not None and sparsity.is_dense:
            sparsity = None
        if sparsity is not None:
            if [len(s) for s in sparsity.ratios] != depths:
                raise UserError(f"sparsity config has depths {[len(s) for s in sparsity.ratios]}, "
                                f"{variant} has {depths}; give one ratio per block")
            sparsity.validate_for(size)
        if norm_order is None:
            norm_order = "sparsevit" if sparsity is not None else "timm"
        if norm_order not in NORM_ORDERS:
            raise UserError(f"norm order {norm_order!r}: expected one of {', '.join(NORM_ORDERS)}")
        if sparsity is not None and norm_order != "sparsevit":
            raise UserError("a pruned (SparseViT) model follows SparseViT's pad -> roll -> LN1 order; "
                            "--norm-order timm applies to dense models only")
        self.norm_order = norm_order
        self.variant = variant
        self.task = task
        self.img_size = size
        self.geometry = stage_geometry(size, len(depths))
        self.num_classes = num_classes
        self.depths = depths
        self.sparsity = sparsity
        self.uses_window_ops = sparsity is not None
        ratios = sparsity.ratios if sparsity is not None else [[0.0] * d for d in depths]
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.dims = dims
        self.feature_strides = tuple(PATCH * 2 ** i for i in range(len(depths)))
        self.patch_embed = PatchEmbed(embed_dim)
        layers = []
        for i, (d, h) in enumerate(zip(depths, num_heads)):
            layers.append(SwinStage(dims[i - 1] if i else embed_dim, dims[i], d, h, self.geometry[i],
                                    downsample=i > 0, ratios=ratios[i], norm_order=norm_order))
        self.layers = nn.Sequential(*layers)
        if task == "classify":
            self.norm = nn.LayerNorm(dims[-1])
            self.head = nn.Module()
            self.head.fc = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        else:
            for i, d in enumerate(dims):
                self.add_module(f"norm{i}", nn.LayerNorm(d))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Classify task: the final normalized map (B, H/32, W/32, C), timm's forward_features."""
        x = self.layers(self.patch_embed(x))
        return self.norm(x) if self.task == "classify" else x

    def forward_head(self, x: Tensor) -> Tensor:
        return self.head.fc(x.mean(dim=(1, 2)))

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Every stage's map, NCHW (strides 4/8/16/32): normalized by norm0..3 for the backbone task
        (the `features.i` outputs), the raw stage outputs for a classifier."""
        x = self.patch_embed(x)
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            y = getattr(self, f"norm{i}")(x) if self.task == "backbone" else x
            feats.append(y.permute(0, 3, 1, 2).contiguous())
        return feats

    def forward(self, x: Tensor):
        if self.task == "classify":
            return self.forward_head(self.forward_features(x))
        return tuple(self.forward_intermediates(x))


def _build(embed_dim, depths, num_heads, variant, num_classes, img_size, task, sparsity,
           norm_order=None) -> SwinTransformer:
    return SwinTransformer(embed_dim, depths, num_heads, num_classes=num_classes, img_size=img_size,
                           task=task, sparsity=sparsity, variant=variant, norm_order=norm_order)


def build_swin(name: str, num_classes: int = 1000, img_size=224, task: str = "classify",
               sparsity: SparsityConfig | None = None, norm_order: str | None = None) -> SwinTransformer:
    """Swin-T/S/B (a SparseViT when ``sparsity`` has a non-zero ratio), random weights, eval mode."""
    if name not in CONFIGS:
        raise UserError(f"unknown Swin variant {name!r}; choose one of {', '.join(CONFIGS)}")
    c = CONFIGS[name]
    return _build(c["embed_dim"], c["depths"], c["num_heads"], name, num_classes, img_size, task,
                  sparsity, norm_order).eval()


def default_norm_order(sparsity, state_dict=None) -> str:
    """Pruned: SparseViT's (pad -> roll -> LN1). Dense: the family the checkpoint came from -- an
    mmdet/SparseViT-layout file is taken as SparseViT's (its own dense model is ratio 0 of the same
    code), timm/Microsoft layouts and random weights as timm's (LN1 -> pad). ``--norm-order``
    overrides it where the file cannot tell (an mmdet Swin detector is LN1-first)."""
    if sparsity is not None and not getattr(sparsity, "is_dense", False):
        return "sparsevit"
    if state_dict is not None and detect_format(state_dict) == "mmdet":
        return "sparsevit"
    return "timm"


def build(name: str, *, num_classes: int, img_size, task: str = "classify", sparsity=None,
          state_dict=None, norm_order: str | None = None) -> SwinTransformer:
    """The registry's builder (one signature for every family). `sparsity` is a spec (None, float,
    preset name, JSON path) or a parsed SparsityConfig; the state dict only decides the dense norm
    order (``default_norm_order``)."""
    if name not in CONFIGS:
        raise UserError(f"unknown Swin variant {name!r}; choose one of {', '.join(CONFIGS)}")
    check_legal_size(as_size(img_size))
    if sparsity is not None and not isinstance(sparsity, SparsityConfig):
        sparsity = parse_sparsity(sparsity, CONFIGS[name]["depths"], img_size=img_size)
    if norm_order is None:
        norm_order = default_norm_order(sparsity, state_dict)
    return build_swin(name, num_classes=num_classes, img_size=img_size, task=task, sparsity=sparsity,
                      norm_order=norm_order)


# ------------------------------------------------------------------------------------- checkpoints

_EFFICIENTVIT_HINTS = ("blocks1.", ".downsample.patchmerge", "patch_embed.conv1")
_DROP = re.compile(r"(^|\.)(relative_position_index|attn_mask)$")


def guess_variant(state_dict) -> str | None:
    """"swin_t"/"swin_s"/"swin_b" from embed dim and stage-2 depth, any supported key layout; else None."""
    keys = [k[len("backbone."):] if k.startswith("backbone.") else k for k in state_dict]
    embed = None
    for k, v in zip(keys, state_dict.values()):
        if k in ("patch_embed.proj.weight", "patch_embed.projection.weight"):
            embed = int(v.shape[0])
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"(?:layers|stages)\.2\.blocks\.(\d+)\.", k))}
    depth = max(blocks) + 1 if blocks else None
    for name, c in CONFIGS.items():
        if (embed, depth) == (c["embed_dim"], c["depths"][2]):
            return name
    return None


def detect_format(state_dict) -> str | None:
    """"ours" (= timm), "microsoft" (original Swin repo), "mmdet" (mmdet/SparseViT), or None when the
    keys are no Swin layout (the same contract as efficientvit.detect_format)."""
    keys = list(state_dict)
    stripped = [k[len("backbone."):] if k.startswith("backbone.") else k for k in keys]
    if any(k.startswith("stages.") and ".attn.w_msa." in k for k in stripped) or \
            "patch_embed.projection.weight" in stripped:
        return "mmdet"
    if "patch_embed.proj.weight" in keys and any(k.startswith("layers.") for k in keys):
        if "head.weight" in keys or any(k.startswith("layers.0.downsample.") for k in keys):
            return "microsoft"
        return "ours"
    return None


def _not_swin(keys: list) -> UserError:
    if any(h in k for k in keys for h in _EFFICIENTVIT_HINTS):
        return UserError("checkpoint looks like an EfficientViT checkpoint (blocks1/patchmerge/conv1 keys), "
                         "not a Swin/SparseViT one; pass it with an efficientvit_m* model")
    return UserError(f"checkpoint has no recognised Swin keys (expected timm 'layers.*'/'patch_embed.proj.*' "
                     f"or mmdet 'stages.*.attn.w_msa.*'; first keys: {keys[:3]}); check the file")


def _merge_to_mmdet(v: Tensor) -> Tensor:
    """timm patch-merging weight (.., 4C) -> mmdet unfold order, as mmdet's swin_converter."""
    if v.dim() == 2:
        o, i = v.shape
        return v.reshape(o, 4, i // 4)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(o, i)
    (i,) = v.shape
    return v.reshape(4, i // 4)[[0, 2, 1, 3]].transpose(0, 1).reshape(i)


def _merge_from_mmdet(v: Tensor) -> Tensor:
    """Inverse of ``_merge_to_mmdet`` (the [0,2,1,3] permutation is its own inverse)."""
    if v.dim() == 2:
        o, i = v.shape
        return v.reshape(o, i // 4, 4).transpose(1, 2)[:, [0, 2, 1, 3], :].reshape(o, i)
    (i,) = v.shape
    return v.reshape(i // 4, 4).transpose(0, 1)[[0, 2, 1, 3]].reshape(i)


_MMDET_BLOCK = [("attn.w_msa.", "attn."), ("ffn.layers.0.0.", "mlp.fc1."), ("ffn.layers.1.", "mlp.fc2.")]


def _block_key(rest: str, to_mmdet: bool) -> str:
    """A block-relative key in the other layout (mmdet <-> ours); keys both share pass unchanged."""
    for mmdet, ours in _MMDET_BLOCK:
        src, dst = (ours, mmdet) if to_mmdet else (mmdet, ours)
        if rest.startswith(src):
            return dst + rest[len(src):]
    return rest


def _from_mmdet(sd) -> dict[str, Tensor]:
    if any(k.startswith("backbone.") for k in sd):  # a detector checkpoint: keep the backbone only
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    out = {}
    for k, v in sd.items():
        if k.startswith("patch_embed.projection."):
            out["patch_embed.proj." + k[len("patch_embed.projection."):]] = v
        elif m := re.match(r"stages\.(\d+)\.downsample\.(.*)$", k):
            out[f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"] = _merge_from_mmdet(v)
        elif m := re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)$", k):
            out[f"layers.{m.group(1)}.blocks.{m.group(2)}.{_block_key(m.group(3), to_mmdet=False)}"] = v
        else:
            out[k] = v
    return out


def _from_microsoft(sd) -> dict[str, Tensor]:
    out = {}
    for k, v in sd.items():
        if m := re.match(r"layers\.(\d+)\.downsample\.(.*)$", k):  # end of stage i -> start of i+1
            out[f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"] = v
        elif k.startswith("head.") and not k.startswith("head.fc."):
            out["head.fc." + k[len("head."):]] = v
        else:
            out[k] = v
    return out


def convert_checkpoint(state_dict, model: SwinTransformer) -> dict[str, Tensor]:
    """Any supported Swin layout -> our keys (= timm), ready for a strict ``load_state_dict``.

    Decisions for keys a layout does not have:
    * task=backbone from a classification checkpoint (timm/Microsoft/ours-classify): ``norm3`` is
      seeded from the final ``norm`` (so ``features.3`` equals timm's ``forward_features``) and
      ``norm0..2`` start as identity LayerNorms (weight 1, bias 0), what mmdet does when it starts a
      detector from an ImageNet Swin; ``head.*`` is dropped. A warning says so.
    * task=classify from a checkpoint without ``head``/``norm`` (mmdet detectors, backbone exports):
      UserError -- there is no classifier to load.
    ``relative_position_index`` and ``attn_mask`` are always dropped (recomputed, non-persistent).
    """
    fmt = detect_format(state_dict)
    if fmt is None:
        raise _not_swin(list(state_dict))
    guessed = guess_variant(state_dict)
    if guessed is not None and model.variant in CONFIGS and guessed != model.variant:
        raise UserError(f"checkpoint holds {guessed} weights but the model is {model.variant}; "
                        f"export with MODEL={guessed} or pass a {model.variant} checkpoint")
    if fmt == "mmdet":
        sd = _from_mmdet(state_dict)
    elif fmt == "microsoft":
        sd = _from_microsoft(state_dict)
    else:
        sd = dict(state_dict)
    sd = {k: v for k, v in sd.items() if not _DROP.search(k)}

    n = len(model.dims)
    has_stage_norms = all(f"norm{i}.weight" in sd for i in range(n))
    if model.task == "backbone":
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        if not has_stage_norms:
            if "norm.weight" not in sd:
                raise UserError("checkpoint has neither per-stage norm0..3 nor a final norm; cannot build "
                                "backbone outputs from it")
            sd[f"norm{n - 1}.weight"] = sd.pop("norm.weight")
            sd[f"norm{n - 1}.bias"] = sd.pop("norm.bias")
            for i in range(n - 1):
                sd[f"norm{i}.weight"] = torch.ones(model.dims[i])
                sd[f"norm{i}.bias"] = torch.zeros(model.dims[i])
            warnings.warn("classification checkpoint loaded as a backbone: norm3 seeded from the final "
                          "norm, norm0..2 initialised to identity LayerNorms", stacklevel=2)
        else:
            sd = {k: v for k, v in sd.items() if not k.startswith("norm.")}
    elif model.num_classes == 0:  # pooled features: the head is not used
        if "norm.weight" not in sd:
            raise UserError(f"checkpoint ({fmt} layout) has no final norm; export it with --task backbone")
        sd = {k: v for k, v in sd.items() if not k.startswith("head.") and not re.match(r"norm\d+\.", k)}
    else:
        if "head.fc.weight" not in sd or "norm.weight" not in sd:
            raise UserError(f"checkpoint ({fmt} layout) has no classification head (head.fc / norm); "
                            f"export it with --task backbone")
        if model.num_classes > 0 and sd["head.fc.weight"].shape[0] != model.num_classes:
            raise UserError(f"checkpoint head has {sd['head.fc.weight'].shape[0]} classes, model has "
                            f"{model.num_classes}; pass --num-classes {sd['head.fc.weight'].shape[0]}")
        sd = {k: v for k, v in sd.items() if not re.match(r"norm\d+\.", k)}

    own = model.state_dict()
    for k, v in sd.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise UserError(f"checkpoint key {k} has shape {tuple(v.shape)}, {model.variant} expects "
                            f"{tuple(own[k].shape)}; the checkpoint is for another model size")
    return sd


def to_mmdet_state_dict(model: SwinTransformer, prefix: str = "backbone.") -> dict[str, Tensor]:
    """Our weights in mmdet/SparseViT layout (backbone keys, optional prefix): the round-trip inverse."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("head.") or k.startswith("norm."):
            continue
        if k.startswith("patch_embed.proj."):
            nk = "patch_embed.projection." + k[len("patch_embed.proj."):]
        elif m := re.match(r"layers\.(\d+)\.downsample\.(.*)$", k):
            nk, v = f"stages.{int(m.group(1)) - 1}.downsample.{m.group(2)}", _merge_to_mmdet(v)
        elif m := re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.*)$", k):
            nk = f"stages.{m.group(1)}.blocks.{m.group(2)}.{_block_key(m.group(3), to_mmdet=True)}"
        else:
            nk = k
        out[prefix + nk] = v.clone()
    return out
