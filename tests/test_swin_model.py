"""Swin / SparseViT model: semantics vs an independent slow reference, keep counts, ONNX export
structure and ONNX Runtime parity, checkpoint layouts."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from vitdeploy.errors import UserError
from vitdeploy.models import swin
from vitdeploy.models.sparsity import SparsityConfig, parse_sparsity
from vitdeploy.models.swin import build_swin, convert_checkpoint, guess_variant, to_mmdet_state_dict

from conftest import rel_err

TINY = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


def tiny(img_size=224, ratios=None, task="classify", num_classes=10, depths=None, seed=0, norm_order=None):
    """A small Swin (same code paths as Swin-T) with non-trivial random weights."""
    torch.manual_seed(seed)
    depths = depths or TINY["depths"]
    cfg = SparsityConfig(ratios) if ratios is not None else None
    m = swin._build(TINY["embed_dim"], depths, TINY["num_heads"], "tiny", num_classes, img_size, task, cfg,
                    norm_order)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
            elif "relative_position_bias_table" in name:
                p.normal_(0, 0.5)  # large enough that a wrong bias index shows
    return m.eval()


# ------------------------------------------------------------------ independent slow reference
# models.md §2.3 step by step, token layout, Python loops over windows; shares only the weights.

def _ref_bias(table, wh, ww=None):
    """(heads, N, N) from the 13x13 table, token i = (i // ww, i % ww) inside a wh x ww window."""
    ww = wh if ww is None else ww
    N = wh * ww
    bias = torch.empty(table.shape[1], N, N)
    for i in range(N):
        for j in range(N):
            dy = i // ww - j // ww
            dx = i % ww - j % ww
            bias[:, i, j] = table[(dy + 6) * 13 + (dx + 6)]
    return bias


def _ref_attn(x, attn_mod, ws, mask, bias):
    N, C = x.shape
    h = attn_mod.num_heads
    d = C // h
    qkv = F.linear(x, attn_mod.qkv.weight, attn_mod.qkv.bias).reshape(N, 3, h, d)
    heads = []
    for hh in range(h):
        q, k, v = qkv[:, 0, hh], qkv[:, 1, hh], qkv[:, 2, hh]
        a = (q * d ** -0.5) @ k.T + bias[hh]
        if mask is not None:
            a = a + mask
        heads.append(a.softmax(-1) @ v)
    return F.linear(torch.cat(heads, -1), attn_mod.proj.weight, attn_mod.proj.bias)


def _ln(x, m):
    return F.layer_norm(x, m.normalized_shape, m.weight, m.bias, m.eps)


def _ref_block_window(x, blk, ws, mask, bias, normed=None):
    """normed: LN1 already applied (timm order: LN1 before padding, pad tokens 0); else LN1 here."""
    y = x + _ref_attn(_ln(x, blk.norm1) if normed is None else normed, blk.attn, ws, mask, bias)
    h = F.linear(_ln(y, blk.norm2), blk.mlp.fc1.weight, blk.mlp.fc1.bias)
    return y + F.linear(F.gelu(h), blk.mlp.fc2.weight, blk.mlp.fc2.bias)


def _ref_stage(t, layer, ratios, record=None, order="sparsevit"):
    """models.md §2.3 literally, per axis: window min(7, side) and shift 3 only along an axis longer
    than 7; pad bottom/right; order "sparsevit" = pad -> roll -> LN1, "timm" = LN1 -> pad -> roll."""
    B, H, W, C = t.shape
    wh, ww = min(7, H), min(7, W)
    sh0, sw0 = (3 if H > 7 else 0), (3 if W > 7 else 0)
    nwh, nww = math.ceil(H / wh), math.ceil(W / ww)
    Hp, Wp = nwh * wh, nww * ww
    nW = nwh * nww
    act, sets = None, {}

    def pad_roll(v, sh, sw):
        vp = torch.zeros((B, Hp, Wp) + tuple(v.shape[3:]))
        vp[:, :H, :W] = v
        return torch.roll(vp, (-sh, -sw), (1, 2))

    for j, blk in enumerate(layer.blocks):
        sh, sw = (sh0, sw0) if j % 2 else (0, 0)
        xp = pad_roll(t, sh, sw)
        np_ = pad_roll(_ln(t, blk.norm1), sh, sw) if order == "timm" else None
        r = ratios[j]
        if r > 0:
            if act is None:
                act = t.abs().mean(-1)
            if j % 2 not in sets:
                ap = pad_roll(act, sh, sw)
                score = torch.zeros(B, nW)
                for w in range(nW):
                    a, c = divmod(w, nww)
                    score[:, w] = ap[:, a * wh:(a + 1) * wh, c * ww:(c + 1) * ww].reshape(B, -1).pow(2).sum(1).sqrt()
                sets[j % 2] = torch.topk(score, int(nW * (1 - r)), dim=1).indices
            idx = sets[j % 2][:, :int(nW * (1 - r))]
        else:
            idx = torch.arange(nW).expand(B, nW)
        if record is not None:
            record.append(idx)
        bias = _ref_bias(blk.attn.relative_position_bias_table, wh, ww)
        out = xp.clone()
        for b in range(B):
            for w in idx[b].tolist():
                a, c = divmod(w, nww)
                rs, cs = slice(a * wh, (a + 1) * wh), slice(c * ww, (c + 1) * ww)
                win = xp[b, rs, cs].reshape(wh * ww, C)
                nwin = None if np_ is None else np_[b, rs, cs].reshape(wh * ww, C)
                mask = None
                if sh or sw:  # Swin's 3x3 regions of the padded map, per axis (one region if not shifted)
                    n = torch.arange(wh * ww)
                    r, q = a * wh + n // ww, c * ww + n % ww
                    lab = ((r >= Hp - wh).long() + (r >= Hp - sh).long()) * (sh > 0) * 3 \
                        + ((q >= Wp - ww).long() + (q >= Wp - sw).long()) * (sw > 0)
                    mask = torch.where(lab[:, None] == lab[None, :], 0.0, -100.0)
                out[b, rs, cs] = _ref_block_window(win, blk, None, mask, bias, nwin).reshape(wh, ww, C)
        t = torch.roll(out, (sh, sw), (1, 2))[:, :H, :W]
    return t


def ref_forward(m, x, ratios, record=None, order=None):
    order = order or getattr(m, "norm_order", "sparsevit")
    with torch.no_grad():
        t = F.conv2d(x, m.patch_embed.proj.weight, m.patch_embed.proj.bias, stride=4).permute(0, 2, 3, 1)
        t = _ln(t, m.patch_embed.norm)
        feats = []
        for i, layer in enumerate(m.layers):
            if i:
                ds = layer.downsample  # original Swin order: (h0w0, h1w0, h0w1, h1w1)
                t = torch.cat([t[:, 0::2, 0::2], t[:, 1::2, 0::2], t[:, 0::2, 1::2], t[:, 1::2, 1::2]], -1)
                t = F.linear(_ln(t, ds.norm), ds.reduction.weight)
            t = _ref_stage(t, layer, ratios[i], record, order)
            feats.append(t)
        if m.task == "classify":
            return F.linear(_ln(t, m.norm).mean((1, 2)), m.head.fc.weight, m.head.fc.bias)
        return tuple(_ln(f, getattr(m, f"norm{i}")).permute(0, 3, 1, 2) for i, f in enumerate(feats))


# ------------------------------------------------------------------------------------ semantics

def test_dense_matches_reference_at_224():
    m = tiny(224)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        y = m(x)
    assert rel_err(ref_forward(m, x, [[0, 0]] * 4), y) < 1e-5


@pytest.mark.parametrize("img,ratios", [
    (224, [[0.3, 0.3], [0.2, 0.2], [0.5, 0.5], [0, 0]]),
    (320, [[0.6, 0.6], [0, 0], [0.4, 0.4], [0.5, 0.5]]),  # every stage padded (80, 40, 20, 10)
])
def test_pruned_matches_slow_reference(img, ratios):
    m = tiny(img, ratios, task="backbone")
    assert m.uses_window_ops
    x = torch.randn(2, 3, img, img)
    with torch.no_grad():
        ys = m(x)
    refs = ref_forward(m, x, ratios)
    for y, r in zip(ys, refs):
        assert y.shape == r.shape
        assert rel_err(r, y) < 1e-5
    dense = tiny(img, task="backbone")
    with torch.no_grad():
        assert rel_err(ys[0], dense(x)[0]) > 1e-3  # pruning really changed something


@pytest.mark.parametrize("img", [224, 320])
def test_mixed_stage_window_rows_path_matches_slow_reference(img):
    """A stage with dense and pruned blocks stays on window rows and relayouts between blocks
    (all-pruned stages take the token-map path instead); both must be the reference, padded too."""
    ratios = [[0, 0.3], [0.2, 0.2], [0, 0.4], [0, 0]]
    m = tiny(img, ratios, task="backbone", seed=3)
    assert m.layers[1].keep[0] is not None and m.layers[0].keep[0] is None  # both paths in one model
    x = torch.randn(2, 3, img, img)
    with torch.no_grad():
        ys = m(x)
    for y, r in zip(ys, ref_forward(m, x, ratios)):
        assert rel_err(r, y) < 1e-5


def test_prefix_nesting_and_separate_shifted_sets():
    depths = (2, 2, 4, 2)
    ratios = [[0.2, 0.2], [0, 0], [0.1, 0.1, 0.5, 0.5], [0, 0]]
    m = tiny(448, ratios, depths=depths)  # stage 2: 28x28 map, 16 windows
    assert m.layers[2].keep == [14, 14, 8, 8]
    seen = {}
    for j, blk in enumerate(m.layers[2].blocks):  # record the kept-window indices each block runs on
        def record(x, idx, *rest, j=j, run=blk.forward_kept_tokens):
            seen[j] = idx
            return run(x, idx, *rest)
        blk.forward_kept_tokens = record
    x = torch.randn(2, 3, 448, 448)
    rec = []
    with torch.no_grad():
        y = m(x)
    assert torch.equal(seen[2], seen[0][:, :8]) and torch.equal(seen[3], seen[1][:, :8])
    assert not torch.equal(seen[0], seen[1])  # shifted blocks rank the rolled map
    ref = ref_forward(m, x, ratios, record=rec)
    assert rel_err(ref, y) < 1e-5
    for j in range(4):  # same windows as the literal reference (stage 2 records are 4..7)
        assert torch.equal(seen[j], rec[4 + j])


def test_sparsity_zero_equals_dense_and_full_gather_path_is_exact():
    x = torch.randn(2, 3, 224, 224)
    dense = tiny(224)
    zero = tiny(224, [[0, 0]] * 4)
    assert not zero.uses_window_ops
    with torch.no_grad():
        yd = dense(x)
        assert torch.allclose(zero(x), yd, atol=1e-6, rtol=0)
        # Force gather/scatter of *every* window in score order: must still be the dense model.
        for layer in dense.layers:
            layer.keep = [layer.blocks[0].nW] * len(layer.blocks)
        assert torch.allclose(dense(x), yd, atol=1e-6, rtol=0)


def test_stage_no_larger_than_window_does_not_shift():
    m = tiny(224)
    last = m.layers[3].blocks
    assert last[1].ws == 7 and last[1].shift == 0 and last[1].attn_mask is None
    assert m.layers[2].blocks[1].shift == 3
    small = tiny(192)  # stage 3 map 6x6: one 6x6 window
    assert small.layers[3].blocks[0].ws == 6 and small.layers[3].blocks[0].nW == 1
    x = torch.randn(1, 3, 192, 192)
    with torch.no_grad():
        assert rel_err(ref_forward(small, x, [[0, 0]] * 4), small(x)) < 1e-5


def test_keep_counts_swin_t_cfg1_672():
    m = build_swin("swin_t", img_size=672, sparsity=parse_sparsity("cfg1", [2, 2, 6, 2]))
    assert [lay.blocks[0].nW for lay in m.layers] == [576, 144, 36, 9]
    assert m.layers[0].keep == [403, 403]
    assert m.layers[1].keep == [None, None] and m.layers[3].keep == [None, None]
    assert m.layers[2].keep == [32, 32, 28, 28, 28, 28]
    assert m.uses_window_ops


def test_swin_variants_and_key_names():
    m = build_swin("swin_t")
    sd = m.state_dict()
    assert len(sd) == 173 and sum(p.numel() for p in m.parameters()) == 28_288_354  # = timm
    for k in ("patch_embed.proj.weight", "layers.1.downsample.reduction.weight",
              "layers.3.blocks.1.attn.relative_position_bias_table", "layers.2.blocks.5.mlp.fc2.bias",
              "norm.weight", "head.fc.bias"):
        assert k in sd
    assert "layers.0.downsample.norm.weight" not in sd
    assert not any("relative_position_index" in k or "attn_mask" in k for k in sd)
    bb = build_swin("swin_t", task="backbone")
    assert {f"norm{i}.weight" for i in range(4)} <= set(bb.state_dict()) and "head.fc.weight" not in bb.state_dict()
    assert swin.CONFIGS["swin_b"]["embed_dim"] == 128 and swin.CONFIGS["swin_s"]["depths"] == (2, 2, 18, 2)


@pytest.mark.parametrize("kw,match", [
    (dict(img_size=200), "multiple of 32"),
    (dict(task="segment"), "classify or backbone"),
    (dict(sparsity=SparsityConfig([[0.1, 0.1]] * 4)), r"stage 0 has 2|depths"),
    (dict(sparsity=SparsityConfig([[0, 0], [0, 0], [0] * 6, [0.1, 0.1]])), r"stage 3 block 0 .*=0 of 1"),
])
def test_build_errors(kw, match):
    with pytest.raises(UserError, match=match):
        build_swin("swin_t", **kw)
    with pytest.raises(UserError, match="unknown Swin variant"):
        build_swin("swin_x")


# ------------------------------------------------------------------------------------ ONNX

def _export(model, portable):
    from vitdeploy.export.onnx import check_model, export_module, output_names_for

    proto = export_module(model, torch.randn(2, 3, *model.img_size),
                          output_names_for(model.task), dynamic_batch=True, portable=portable,
                          uses_window_ops=model.uses_window_ops)
    check_model(proto)
    return proto


RATIOS_224 = [[0.3, 0.3], [0.2, 0.2], [0.5, 0.5], [0, 0]]


@pytest.fixture(scope="module")
def pruned():
    return tiny(224, RATIOS_224)


@pytest.fixture(scope="module", params=[False, True], ids=["custom", "portable"])
def exported(request, pruned):
    return request.param, _export(pruned, request.param)


def _all_nodes(proto):
    yield from proto.graph.node
    for f in proto.functions:
        yield from f.node


def _constant_values(proto):
    vals = {t.name for t in proto.graph.initializer}
    vals |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return vals


def test_onnx_structure(exported):
    portable, proto = exported
    ops = [(n.domain, n.op_type) for n in proto.graph.node]
    assert not {n.op_type for n in _all_nodes(proto)} & {"GatherElements", "ScatterElements"}
    topk = [n for n in proto.graph.node if n.op_type == "TopK"]
    assert len(topk) == 6  # regular + shifted set in each of the 3 pruned stages
    consts = _constant_values(proto)
    assert all(n.input[1] in consts for n in topk), "TopK K must be a constant (TensorRT)"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    if portable:
        assert not any(d == "vitdeploy" for d, _ in ops)
        assert not proto.functions and all(o.domain != "vitdeploy" for o in proto.opset_import)
        assert ops.count(("", "ScatterND")) == 6
    else:
        custom = [n for n in proto.graph.node if n.domain == "vitdeploy"]
        assert sorted({n.op_type for n in custom}) == ["WindowGather", "WindowScatter"] and len(custom) == 12
        for n in custom:
            assert {a.name: a.s for a in n.attribute} == {"plugin_namespace": b"vitdeploy", "plugin_version": b"1"}
        assert {(f.domain, f.name) for f in proto.functions} == {("vitdeploy", "WindowGather"),
                                                                 ("vitdeploy", "WindowScatter")}
        default = [o.version for o in proto.opset_import if o.domain == ""][0]
        assert all(f.opset_import[0].version == default for f in proto.functions)
        assert ("", "ScatterND") not in ops


def test_onnx_runtime_parity(exported, pruned):
    portable, proto = exported
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for B in (1, 3):
        x = torch.randn(B, 3, 224, 224)
        with torch.no_grad():
            ref = pruned(x).numpy()
        out = sess.run(None, {"images": x.numpy()})[0]
        err = np.abs(out - ref).max() / np.abs(ref).max()
        assert err <= 1e-4, f"{'portable' if portable else 'custom'} B={B}: rel err {err:.2e}"


def test_dense_model_has_no_window_ops():
    ep = torch.export.export(tiny(224), (torch.randn(1, 3, 224, 224),))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not any("vitdeploy" in t or "topk" in t for t in targets)


@pytest.mark.slow
def test_swin_t_cfg1_672_backbone_onnx_parity():
    m = build_swin("swin_t", img_size=672, task="backbone", sparsity=parse_sparsity("cfg1", [2, 2, 6, 2]))
    proto = _export(m, portable=False)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 672, 672)
    with torch.no_grad():
        refs = m(x)
    outs = sess.run(None, {"images": x.numpy()})
    for o, r in zip(outs, refs):
        assert np.abs(o - r.numpy()).max() / np.abs(r.numpy()).max() <= 1e-4


# ------------------------------------------------------------------------------------ checkpoints

def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_timm_layout_round_trip_is_bit_exact():
    src = tiny(224, seed=1)
    sd = dict(src.state_dict())
    # timm/old Swin files also carry these buffers; they must be dropped, not loaded
    sd["layers.0.blocks.1.attn.relative_position_index"] = torch.zeros(49 * 49, dtype=torch.long)
    sd["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    dst = tiny(224, seed=2)
    dst.load_state_dict(convert_checkpoint(sd, dst), strict=True)
    _assert_same_weights(src, dst)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_microsoft_layout_round_trip():
    src = tiny(224, seed=1)
    sd = {}
    for k, v in src.state_dict().items():
        if k.startswith("layers.") and ".downsample." in k:
            i = int(k.split(".")[1])
            k = f"layers.{i - 1}." + k.split(".", 2)[2]
        sd[k.replace("head.fc.", "head.")] = v
    assert swin.detect_format(sd) == "microsoft"
    dst = tiny(224, seed=2)
    dst.load_state_dict(convert_checkpoint(sd, dst), strict=True)
    _assert_same_weights(src, dst)


def test_mmdet_layout_round_trip_is_bit_exact():
    src = tiny(224, RATIOS_224, task="backbone", seed=1)
    sd = to_mmdet_state_dict(src)
    assert "backbone.stages.0.downsample.reduction.weight" in sd  # mmdet: merging at the END of stage 0
    assert "backbone.stages.1.blocks.0.attn.w_msa.qkv.weight" in sd
    assert "backbone.stages.1.blocks.0.ffn.layers.0.0.weight" in sd and "backbone.patch_embed.projection.bias" in sd
    sd["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)  # detector checkpoints hold more than the backbone
    sd["backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    dst = tiny(224, RATIOS_224, task="backbone", seed=2)
    dst.load_state_dict(convert_checkpoint(sd, dst), strict=True)
    _assert_same_weights(src, dst)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(src(x), dst(x)):
            assert torch.equal(a, b)
    nobb = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    dst2 = tiny(224, task="backbone", seed=3)
    dst2.load_state_dict(convert_checkpoint(nobb, dst2), strict=True)  # "backbone." prefix is optional
    _assert_same_weights(src, dst2)


def test_mmdet_patch_merging_reorder_matches_unfold_merging():
    """mmdet merges with nn.Unfold (channel-major, 2x2 row-major); the converted weights must give
    the same result as our timm-order merging (reference/models.md §2.10)."""
    src = tiny(224, task="backbone", seed=4)
    sd = to_mmdet_state_dict(src, prefix="")
    ds = src.layers[1].downsample
    x = torch.randn(2, 56, 56, 32)
    with torch.no_grad():
        u = F.unfold(x.permute(0, 3, 1, 2), kernel_size=2, stride=2).transpose(1, 2)  # (B, L, 4C)
        u = F.layer_norm(u, (128,), sd["stages.0.downsample.norm.weight"], sd["stages.0.downsample.norm.bias"])
        mm = F.linear(u, sd["stages.0.downsample.reduction.weight"]).reshape(2, 28, 28, 64)
        assert torch.allclose(ds(x), mm, atol=1e-5)


def test_classification_checkpoint_as_backbone_seeds_norm3():
    src = tiny(224, seed=1)
    dst = tiny(224, task="backbone", seed=2)
    with pytest.warns(UserWarning, match="norm3 seeded"):
        sd = convert_checkpoint(src.state_dict(), dst)
    dst.load_state_dict(sd, strict=True)
    assert torch.equal(dst.norm3.weight, src.norm.weight)
    assert torch.equal(dst.norm0.weight, torch.ones(32)) and torch.equal(dst.norm0.bias, torch.zeros(32))


def test_checkpoint_errors():
    t = build_swin("swin_t")
    sd_t = t.state_dict()
    assert guess_variant(sd_t) == "swin_t"
    sd_s = dict(sd_t)
    for j in range(6, 18):  # Swin-S: stage 2 has 18 blocks
        for k, v in list(sd_t.items()):
            if k.startswith("layers.2.blocks.5."):
                sd_s[k.replace("blocks.5.", f"blocks.{j}.")] = v
    assert guess_variant(sd_s) == "swin_s"
    with pytest.raises(UserError, match="swin_s weights but the model is swin_t"):
        convert_checkpoint(sd_s, t)
    assert guess_variant(to_mmdet_state_dict(build_swin("swin_t", task="backbone"))) == "swin_t"
    with pytest.raises(UserError, match="looks like an EfficientViT checkpoint"):
        convert_checkpoint({"patch_embed.conv1.conv.weight": torch.zeros(1),
                            "stages.1.downsample.patchmerge.conv1.conv.weight": torch.zeros(1)}, t)
    with pytest.raises(UserError, match="looks like an EfficientViT checkpoint"):
        convert_checkpoint({"blocks1.0.m.c.weight": torch.zeros(1)}, t)
    with pytest.raises(UserError, match="no recognised Swin keys"):
        convert_checkpoint({"foo.weight": torch.zeros(1)}, t)
    with pytest.raises(UserError, match="no classification head.*--task backbone"):
        convert_checkpoint(to_mmdet_state_dict(tiny(224, task="backbone")), tiny(224))
    with pytest.raises(UserError, match="10 classes, model has 5"):
        convert_checkpoint(tiny(224).state_dict(), tiny(224, num_classes=5))
    other = swin._build(48, TINY["depths"], TINY["num_heads"], "tiny48", 10, 224, "classify", None)
    with pytest.raises(UserError, match=r"patch_embed.proj.weight has shape \(48"):
        convert_checkpoint(other.state_dict(), tiny(224))


def test_timm_forward_api_composes_to_forward():
    """forward = forward_head(forward_features) for a classifier; the backbone's outputs are
    forward_intermediates; a classifier's intermediates are the raw stage maps at strides 4..32."""
    x = torch.randn(2, 3, 224, 224)
    cls = tiny(224, [[0.5, 0.5], [0, 0], [0, 0], [0, 0]])
    bb = tiny(224, task="backbone")
    with torch.no_grad():
        assert torch.equal(cls(x), cls.forward_head(cls.forward_features(x)))
        feats = cls.forward_intermediates(x)
        assert [tuple(f.shape) for f in feats] == [(2, 32 * 2 ** i, 56 // 2 ** i, 56 // 2 ** i) for i in range(4)]
        assert torch.equal(cls.norm(feats[3].permute(0, 2, 3, 1)), cls.forward_features(x))
        for a, b in zip(bb(x), bb.forward_intermediates(x)):
            assert torch.equal(a, b)
