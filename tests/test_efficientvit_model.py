"""EfficientViT-M: structure, checkpoint formats, attention-bias freshness, reference attention."""

import copy
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitdeploy.errors import UserError
from vitdeploy.models import efficientvit as ev

# Official parameter counts (Cream README / build.py models; identical in timm).
OFFICIAL_PARAMS = {
    "efficientvit_m0": 2_349_436,
    "efficientvit_m1": 2_980_560,
    "efficientvit_m2": 4_187_554,
    "efficientvit_m3": 6_900_722,
    "efficientvit_m4": 8_804_228,
    "efficientvit_m5": 12_473_772,
}


def randomize(model, seed):
    """Perturb every parameter and BN statistic: default init zeroes many residual branches
    (bn_weight_init=0) and the attention biases, which would hide mapping mistakes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim <= 1:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


def make(name="efficientvit_m0", seed=0, **kw):
    return randomize(ev.build_efficientvit(name, **kw), seed).eval()


@pytest.fixture(scope="module")
def x224():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(123))


# ------------------------------------------------------------------------------------------ structure


@pytest.mark.parametrize("name", list(OFFICIAL_PARAMS))
def test_parameter_count_matches_official(name):
    with torch.device("meta"):
        m = ev.build_efficientvit(name)
    assert sum(p.numel() for p in m.parameters()) == OFFICIAL_PARAMS[name]


def test_names_and_table():
    assert ev.MODEL_NAMES == tuple(f"efficientvit_m{i}" for i in range(6))
    assert set(ev.VARIANTS) == set(ev.MODEL_NAMES)
    assert ev.VARIANTS["efficientvit_m5"].embed_dim == (192, 288, 384)


def test_stage_resolutions_and_forward_shapes():
    m = ev.build_efficientvit("efficientvit_m0").eval()
    assert m.stage_resolutions == [(14, 14), (7, 7), (4, 4)]
    outs = m.forward_intermediates(torch.randn(1, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 14, 14), (1, 128, 7, 7), (1, 192, 4, 4)]
    # Stage-3 bias table is (heads, 4*4) at 224, stage 1 (heads, 7*7).
    assert m.stages[2].blocks[0].mixer.m.attn.attention_biases.shape == (4, 16)
    assert m.stages[0].blocks[0].mixer.m.attn.attention_biases.shape == (4, 49)


def test_foldable_layout():
    """Every BN sits in a Sequential right after the plain layer it folds into (export/fold.py)."""
    m = ev.build_efficientvit("efficientvit_m1")
    n_bn = 0
    for parent in m.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm2d):
                n_bn += 1
                assert isinstance(parent, nn.Sequential) and name == "bn"
                assert type(parent.conv) is nn.Conv2d and list(parent._modules) == ["conv", "bn"]
    assert n_bn == sum(k.endswith(".bn.running_var") and not k.startswith("head.") for k in m.state_dict())
    assert n_bn > 90
    assert isinstance(m.head, nn.Sequential) and list(m.head._modules) == ["bn", "drop", "linear"]
    assert type(m.head.bn) is nn.BatchNorm1d and type(m.head.linear) is nn.Linear


def test_fold_batchnorm_keeps_outputs(x224):
    from vitdeploy.export import fold
    m = make("efficientvit_m0", seed=3)
    f = fold.folded_copy(m)
    assert fold.count_batchnorm(f) == 0
    with torch.no_grad():
        torch.testing.assert_close(f(x224), m(x224), rtol=1e-5, atol=2e-5)


def test_attention_bias_idxs_not_in_state_dict():
    m = ev.build_efficientvit("efficientvit_m0")
    assert not any("attention_bias_idxs" in k for k in m.state_dict())
    assert sum("attention_bias_idxs" in k for k, _ in m.named_buffers()) == 6


# ------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize("bad", [200, 48, 0, 224.0, "224"])
def test_invalid_img_size_is_user_error(bad):
    with pytest.raises(UserError, match=r"multiples? of 16|must be positive"):
        ev.build_efficientvit("efficientvit_m2", img_size=bad)


def test_unknown_variant_is_user_error():
    with pytest.raises(UserError, match="efficientvit_m0"):
        ev.build_efficientvit("efficientvit_m9")


def test_other_img_size_runs_and_wrong_input_is_user_error():
    m = ev.build_efficientvit("efficientvit_m0", img_size=256, num_classes=10).eval()
    assert m.stage_resolutions == [(16, 16), (8, 8), (4, 4)]  # 16 -> windows with padding to 21
    with torch.no_grad():
        assert m(torch.randn(1, 3, 256, 256)).shape == (1, 10)
        with pytest.raises(UserError, match="256"):
            m(torch.randn(1, 3, 224, 224))


# ------------------------------------------------------------------------------------------ reference attention


def official_bias_index(res):
    """The official insertion-order construction (independent of the closed form)."""
    points = list(itertools.product(range(res), range(res)))
    offsets, idxs = {}, []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            if off not in offsets:
                offsets[off] = len(offsets)
            idxs.append(offsets[off])
    return torch.tensor(idxs).view(len(points), len(points)), len(offsets)


@pytest.mark.parametrize("res", [1, 2, 4, 7, 8])
def test_bias_index_closed_form_equals_official(res):
    idx, n_off = official_bias_index(res)
    assert n_off == res * res
    assert torch.equal(ev.attention_bias_index(res), idx)


def conv_bn(seq, x):
    return seq.bn(seq.conv(x))


def reference_cga(attn, x):
    """Slow per-head cascaded group attention in the official order: (q^T k) * scale + bias."""
    B, C, H, W = x.shape
    nh, kd, d = len(attn.qkvs), attn.key_dim, C // len(attn.qkvs)
    idx, _ = official_bias_index(H)
    outs = []
    prev = None
    for i in range(nh):
        feat = x[:, i * d:(i + 1) * d]
        if prev is not None:
            feat = feat + prev
        qkv = conv_bn(attn.qkvs[i], feat)
        q, k, v = qkv[:, :kd], qkv[:, kd:2 * kd], qkv[:, 2 * kd:]
        q = conv_bn(attn.dws[i], q)
        q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
        a = (q.transpose(-2, -1) @ k) * kd ** -0.5 + attn.attention_biases[i][idx]
        a = a.softmax(-1)
        prev = (v @ a.transpose(-2, -1)).view(B, d, H, W)
        outs.append(prev)
    return conv_bn(attn.proj[1], torch.relu(torch.cat(outs, 1)))


def reference_window_attention(lwa, x):
    """Official BHWC pad / partition / reverse / crop around the reference attention."""
    B, C, H, W = x.shape
    ws = lwa.window_resolution
    if H <= ws and W <= ws:
        return reference_cga(lwa.attn, x)
    x = x.permute(0, 2, 3, 1)
    pb, pr = (ws - H % ws) % ws, (ws - W % ws) % ws
    x = F.pad(x, (0, 0, 0, pr, 0, pb))
    pH, pW = H + pb, W + pr
    nH, nW = pH // ws, pW // ws
    x = x.view(B, nH, ws, nW, ws, C).transpose(2, 3).reshape(B * nH * nW, ws, ws, C).permute(0, 3, 1, 2)
    x = reference_cga(lwa.attn, x)
    x = x.permute(0, 2, 3, 1).view(B, nH, nW, ws, ws, C).transpose(2, 3).reshape(B, pH, pW, C)
    return x[:, :H, :W].permute(0, 3, 1, 2)


@pytest.mark.parametrize("name,img_size,stage", [
    ("efficientvit_m1", 224, 0),  # 14x14: 4 windows of 7, heads 2, kernels 7/5
    ("efficientvit_m0", 256, 0),  # 16x16: padded to 21, 9 windows
    ("efficientvit_m2", 224, 2),  # 4x4: whole map, heads 2, kernels 7/5
    ("efficientvit_m5", 224, 1),  # 7x7: single window, heads 3
])
def test_window_attention_matches_reference(name, img_size, stage):
    m = make(name, seed=5, img_size=img_size)
    lwa = m.stages[stage].blocks[0].mixer.m
    res = m.stage_resolutions[stage]
    x = torch.randn(2, ev.VARIANTS[name].embed_dim[stage], *res, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        torch.testing.assert_close(lwa(x), reference_window_attention(lwa, x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ bias freshness


def test_bias_not_stale_after_load_state_dict_and_to(x224):
    a = make("efficientvit_m0", seed=1)
    with torch.no_grad():
        y_a = a(x224)
    # Weights that differ from a's ONLY in the attention biases: a stale cached bias would keep y_a.
    sd = {k: v.clone() for k, v in a.state_dict().items()}
    g = torch.Generator().manual_seed(7)
    for k in sd:
        if k.endswith("attention_biases"):
            sd[k] = torch.randn(sd[k].shape, generator=g)
    a.load_state_dict(sd)
    fresh = ev.build_efficientvit("efficientvit_m0").eval()
    fresh.load_state_dict(sd)
    with torch.no_grad():
        y_b = a(x224)
        assert not torch.allclose(y_a, y_b, atol=1e-3)
        assert torch.equal(y_b, fresh(x224))
        a64 = a.to(torch.float64)
        y64 = a64(x224.double())
        assert y64.dtype == torch.float64
        assert torch.equal(y64, fresh.to(torch.float64)(x224.double()))
        torch.testing.assert_close(y64.float(), y_b, rtol=1e-4, atol=1e-4)
    # Index buffers follow .to() in device terms; they stay integer.
    assert a64.stages[0].blocks[0].mixer.m.attn.attention_bias_idxs.dtype == torch.int64


# ------------------------------------------------------------------------------------------ checkpoints


def test_official_key_layout_matches_published_files():
    m0 = ev.build_efficientvit("efficientvit_m0")
    off = ev.to_official_state_dict(m0)
    assert len(off) == 699 and len(ev.to_timm_state_dict(m0)) == 693
    for k in [
        "patch_embed.0.c.weight", "patch_embed.6.bn.running_var",
        "blocks1.0.dw0.m.c.weight", "blocks1.0.ffn0.m.pw1.c.weight",
        "blocks1.0.mixer.m.attn.qkvs.3.c.weight", "blocks1.0.mixer.m.attn.dws.0.c.weight",
        "blocks1.0.mixer.m.attn.proj.1.c.weight", "blocks1.0.mixer.m.attn.attention_biases",
        "blocks1.0.mixer.m.attn.attention_bias_idxs",
        "blocks2.0.0.m.c.weight", "blocks2.0.1.m.pw1.c.weight", "blocks2.1.conv1.c.weight",
        "blocks2.1.conv3.bn.bias", "blocks2.1.se.fc1.weight", "blocks2.1.se.fc2.bias",
        "blocks2.2.0.m.c.weight", "blocks2.2.1.m.pw2.bn.weight", "blocks2.3.dw0.m.c.weight",
        "blocks2.4.mixer.m.attn.attention_biases", "blocks3.5.ffn1.m.pw2.c.weight",
        "head.bn.running_mean", "head.l.weight", "head.l.bias",
    ]:
        assert k in off, k
    m5 = ev.build_efficientvit("efficientvit_m5")
    assert len(ev.to_official_state_dict(m5)) == 835 and len(ev.to_timm_state_dict(m5)) == 827


def test_official_to_ours_key_map_is_the_documented_one():
    pairs = {
        "patch_embed.4.c.weight": "patch_embed.conv3.conv.weight",
        "blocks1.0.mixer.m.attn.qkvs.1.bn.weight": "stages.0.blocks.0.mixer.m.attn.qkvs.1.bn.weight",
        "blocks2.0.1.m.pw1.c.weight": "stages.1.downsample.res1.1.m.pw1.conv.weight",
        "blocks3.1.se.fc1.bias": "stages.2.downsample.patchmerge.se.fc1.bias",
        "blocks3.2.0.m.bn.running_mean": "stages.2.downsample.res2.0.m.bn.running_mean",
        "blocks3.5.dw1.m.c.weight": "stages.2.blocks.2.dw1.m.conv.weight",
        "head.l.weight": "head.linear.weight",
    }
    sd = {k: torch.zeros(1) for k in pairs}
    assert ev.detect_format(sd) == "official"
    assert ev._rename_to_ours(sd) == {v: sd[k] for k, v in pairs.items()}


@pytest.mark.parametrize("name", ["efficientvit_m0", "efficientvit_m1"])
@pytest.mark.parametrize("fmt", ["official", "timm"])
def test_checkpoint_roundtrip_bit_exact(name, fmt, x224):
    src = make(name, seed=11)
    sd = ev.to_official_state_dict(src) if fmt == "official" else ev.to_timm_state_dict(src)
    assert ev.detect_format(sd) == fmt
    dst = ev.build_efficientvit(name)
    dst.load_state_dict(ev.convert_checkpoint(sd, dst), strict=True)
    dst.eval()
    with torch.no_grad():
        assert torch.equal(dst(x224), src(x224))


def test_2d_one_by_one_weights_are_reshaped(x224):
    src = make("efficientvit_m0", seed=2)
    sd = ev.to_official_state_dict(src)
    n = 0
    for k, v in list(sd.items()):
        if v.dim() == 4 and v.shape[2:] == (1, 1):
            sd[k] = v[:, :, 0, 0].clone()
            n += 1
    assert n > 50
    dst = ev.build_efficientvit("efficientvit_m0")
    dst.load_state_dict(ev.convert_checkpoint(sd, dst), strict=True)
    with torch.no_grad():
        assert torch.equal(dst.eval()(x224), src(x224))


def test_missing_num_batches_tracked_is_filled():
    src = ev.build_efficientvit("efficientvit_m0")
    sd = {k: v for k, v in ev.to_official_state_dict(src).items() if not k.endswith("num_batches_tracked")}
    dst = ev.build_efficientvit("efficientvit_m0")
    dst.load_state_dict(ev.convert_checkpoint(sd, dst), strict=True)


def test_bias_tables_for_another_img_size_is_user_error():
    sd = ev.to_official_state_dict(ev.build_efficientvit("efficientvit_m0"))
    m = ev.build_efficientvit("efficientvit_m0", img_size=384)  # last stage 6x6: (4, 36) tables
    with pytest.raises(UserError, match=r"windows \(7, 7, 6\).*another input size"):
        ev.convert_checkpoint(sd, m)
    # build() reads the windows from the file instead: the 224 tables run at 384 (issue 16).
    m384 = ev.build("efficientvit_m0", num_classes=1000, img_size=384, state_dict=sd)
    assert m384.windows == (7, 7, 4)
    m384.load_state_dict(ev.convert_checkpoint(sd, m384), strict=True)
    # 256 has the same tables as 224 (stages 16->8->4 use windows 7, 7, 4): loads fine.
    m256 = ev.build_efficientvit("efficientvit_m0", img_size=256)
    m256.load_state_dict(ev.convert_checkpoint(sd, m256), strict=True)


def test_guess_variant():
    m0 = ev.build_efficientvit("efficientvit_m0")
    assert ev.guess_variant(ev.to_official_state_dict(m0)) == "efficientvit_m0"
    assert ev.guess_variant(ev.to_timm_state_dict(m0)) == "efficientvit_m0"
    # Head width and input size do not change the variant.
    other = ev.build_efficientvit("efficientvit_m4", num_classes=10, img_size=384)
    assert ev.guess_variant(other.state_dict()) == "efficientvit_m4"
    assert ev.guess_variant({"layers.0.blocks.0.attn.qkv.weight": torch.zeros(1)}) is None
    # M0 weights given to M4: conversion works, the strict load refuses, guess names the right one.
    m4 = ev.build_efficientvit("efficientvit_m4")
    with pytest.raises(RuntimeError):
        m4.load_state_dict(ev.convert_checkpoint(ev.to_official_state_dict(m0), m4), strict=True)


@pytest.mark.parametrize("keys,pattern", [
    (["layers.0.blocks.0.attn.relative_position_bias_table", "layers.0.blocks.0.attn.qkv.weight", "norm.weight"],
     "Swin"),
    (["backbone.stages.0.blocks.0.attn.w_msa.qkv.weight", "backbone.stages.0.blocks.0.ffn.layers.0.0.weight"],
     "Swin/SparseViT"),
    (["backbone.input_stem.op_list.0.conv.weight", "head.op_list.0.weight"], "MIT-HAN"),
    (["foo.weight", "bar.bias"], "neither"),
])
def test_foreign_checkpoint_is_user_error(keys, pattern):
    m = ev.build_efficientvit("efficientvit_m0")
    with pytest.raises(UserError, match=pattern):
        ev.convert_checkpoint({k: torch.zeros(1) for k in keys}, m)


# ------------------------------------------------------------------------------------------ distillation


def test_distillation_head(x224):
    m = make("efficientvit_m0", seed=4, distillation=True)
    feats = F.adaptive_avg_pool2d(m.forward_features(x224), 1).flatten(1)
    with torch.no_grad():
        y = m(x224)
        torch.testing.assert_close(y, (m.head(feats) + m.head_dist(feats)) / 2)
        # Training returns both heads (on a copy: train-mode BN would update m's statistics).
        out = copy.deepcopy(m).train()(x224)
        assert isinstance(out, tuple) and len(out) == 2
    sd = ev.to_official_state_dict(m)
    assert ev.has_distillation_head(sd) and "head_dist.l.weight" in sd
    d = ev.build_efficientvit("efficientvit_m0", distillation=True)
    d.load_state_dict(ev.convert_checkpoint(sd, d), strict=True)
    with torch.no_grad():
        assert torch.equal(d.eval()(x224), y)
    plain = ev.build_efficientvit("efficientvit_m0")
    with pytest.warns(UserWarning, match="distillation"):
        conv = ev.convert_checkpoint(sd, plain)
    plain.load_state_dict(conv, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x224), m.head(feats))


# ------------------------------------------------------------------------------------------ tracing


def test_trace_is_static_and_batch_free():
    m = make("efficientvit_m0", seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(m, torch.randn(1, 3, 224, 224), check_trace=False)
    x = torch.randn(2, 3, 224, 224)  # another batch size than the trace: nothing baked in
    with torch.no_grad():
        torch.testing.assert_close(traced(x), m(x), rtol=0, atol=0)
