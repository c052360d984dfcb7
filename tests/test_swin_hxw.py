"""SparseViT / Swin at H x W (issue 16): rectangular sizes against the independent slow reference
of test_swin_model (its own per-axis geometry, not ``stage_geometry``), both pad/LN orders, ONNX
Runtime parity of the custom-node and portable exports, and the geometry/legality rules."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_swin_model import _export, ref_forward, tiny

from vitdeploy.errors import UserError
from vitdeploy.models.size import ImageSize
from vitdeploy.models.sparsity import SparsityConfig, stage_geometry
from vitdeploy.models.swin import build_swin

from conftest import rel_err

DEPTHS = (2, 2, 4, 2)  # stage 2 has two pairs: a dense pair then a pruned pair (mixed stage)
MIXED = [[0.3, 0.3], [0, 0], [0, 0, 0.4, 0.4], [0, 0]]
UNIFORM = [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5, 0.5, 0.5], [0.5, 0.5]]
DENSE = [[0, 0], [0, 0], [0, 0, 0, 0], [0, 0]]

SLOW = pytest.mark.slow  # the literal reference loops over ~1400 windows per block at these sizes
CASES = [  # (H, W, ratios, norm order); padding per stage noted
    (448, 672, MIXED, None),                             # maps 112x168 .. 14x21: no stage pads
    pytest.param(800, 1344, MIXED, None, marks=SLOW),    # 200x336, 100x168, 50x84, 25x42: all pad
    pytest.param(800, 1344, UNIFORM, None, marks=SLOW),
    pytest.param(384, 1280, UNIFORM, None, marks=SLOW),  # 96x320, 48x160, 24x80, 12x40: all pad
    pytest.param(1344, 800, MIXED, None, marks=SLOW),    # portrait
    pytest.param(800, 1344, DENSE, "timm", marks=SLOW),  # dense, timm/mmdet order: LN1 before padding
    (384, 1280, DENSE, "sparsevit"),                     # dense, SparseViT order
]


def _case_id(c):
    h, w, r, o = c.values if hasattr(c, "values") else c
    return f"{h}x{w}-{'mixed' if r is MIXED else 'uniform' if r is UNIFORM else 'dense'}-{o or 'default'}"


def _model(h, w, ratios, order, task="backbone"):
    cfg = None if all(r == 0 for s in ratios for r in s) else ratios
    return tiny(ImageSize(h, w), cfg, task=task, depths=DEPTHS, seed=h + w, norm_order=order)


@pytest.mark.parametrize("h,w,ratios,order", CASES, ids=[_case_id(c) for c in CASES])
def test_hxw_matches_slow_reference(h, w, ratios, order):
    m = _model(h, w, ratios, order)
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        ys = m(x)
    refs = ref_forward(m, x, ratios)
    errs = [rel_err(r, y) for y, r in zip(ys, refs)]
    print(f"{h}x{w} {m.norm_order}: rel err per stage {['%.1e' % e for e in errs]}")
    for y, r in zip(ys, refs):
        assert tuple(y.shape) == tuple(r.shape)
    assert max(errs) <= 1e-4
    # the other family's order gives other numbers where a computed window holds padding (with every
    # block pruned, the padded windows score lowest and pass through untouched, so the orders agree)
    if any(g.padded for g in m.geometry) and any(r == 0 for st in ratios for r in st):
        other = ref_forward(m, x, ratios, order="timm" if m.norm_order == "sparsevit" else "sparsevit")
        assert max(rel_err(r, y) for y, r in zip(ys, other)) > 1e-3


@pytest.fixture(scope="module", params=[(800, 1344), (1344, 800)], ids=["800x1344", "1344x800"])
def rect_pruned(request):
    h, w = request.param
    return _model(h, w, MIXED, None)


@pytest.mark.parametrize("portable", [False, True], ids=["custom", "portable"])
def test_hxw_onnx_runtime_parity(rect_pruned, portable):
    m = rect_pruned
    proto = _export(m, portable)
    inp = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in inp[2:]] == [m.img_size.h, m.img_size.w]
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, m.img_size.h, m.img_size.w)
    with torch.no_grad():
        refs = m(x)
    outs = sess.run(None, {"images": x.numpy()})
    errs = [float(np.abs(o - r.numpy()).max() / np.abs(r.numpy()).max()) for o, r in zip(outs, refs)]
    print(f"{m.img_size} {'portable' if portable else 'custom'}: ORT rel err {['%.1e' % e for e in errs]}")
    assert max(errs) <= 1e-4


def test_stage_geometry_per_axis():
    g = stage_geometry(ImageSize(800, 1344))
    assert [(s.h, s.w, s.hp, s.wp, s.nwh, s.nww) for s in g] == [
        (200, 336, 203, 336, 29, 48), (100, 168, 105, 168, 15, 24), (50, 84, 56, 84, 8, 12),
        (25, 42, 28, 42, 4, 6)]
    assert all((s.wh, s.ww, s.sh, s.sw) == (7, 7, 3, 3) for s in g)
    # one axis no larger than the window: that axis is one window of the map's size and not shifted
    small = stage_geometry(ImageSize(224, 672))[3]
    assert (small.h, small.w, small.wh, small.ww, small.sh, small.sw, small.nwh, small.nww) == \
        (7, 21, 7, 7, 0, 3, 1, 3)
    tall = stage_geometry(ImageSize(640, 192))[3]
    assert (tall.h, tall.w, tall.wh, tall.ww, tall.sh, tall.sw, tall.nwh, tall.nww) == (20, 6, 7, 6, 3, 0, 3, 1)


def test_one_axis_smaller_than_window_matches_reference():
    m = tiny(ImageSize(640, 192), [[0.3, 0.3], [0, 0], [0.2, 0.2], [0.5, 0.5]], task="backbone", seed=7)
    assert m.layers[3].blocks[1].shift_hw == (3, 0)
    x = torch.randn(1, 3, 640, 192)
    with torch.no_grad():
        ys = m(x)
    for y, r in zip(ys, ref_forward(m, x, [[0.3, 0.3], [0, 0], [0.2, 0.2], [0.5, 0.5]])):
        assert rel_err(r, y) <= 1e-4


def test_keep_counts_use_the_padded_rectangular_grid():
    cfg = SparsityConfig([[0.6, 0.6], [0, 0], [0.2, 0.2, 0.4, 0.4, 0.5, 0.5], [0, 0]])
    # 800x1344: 29*48=1392, 15*24=360, 8*12=96 windows
    m = build_swin("swin_t", img_size=ImageSize(800, 1344), sparsity=cfg)
    assert [lay.keep for lay in m.layers] == [[556, 556], [None, None], [76, 76, 57, 57, 48, 48], [None, None]]
    with pytest.raises(UserError, match=r"stage 3 block 0 ratio 0\.6 .*=0 of 2 windows \(1x2 grid"):
        SparsityConfig([[0.6, 0.6]] * 4).validate_for(ImageSize(224, 448))


@pytest.mark.parametrize("text,hw", [("800x1344", (800, 1344)), ("800 1344", (800, 1344)), ("672", (672, 672)),
                                     (["800", "1344"], (800, 1344)), ([224], (224, 224))])
def test_image_size_parse_and_print(text, hw):
    s = ImageSize.parse(text)
    assert s.hw == hw and ImageSize.parse(str(s)) == s
    assert str(ImageSize(672, 672)) == "672" and str(ImageSize(800, 1344)) == "800x1344"


@pytest.mark.parametrize("bad", ["800x", "0 672", ["800", "1344", "3"], "x", ["0", "672"], "-5"])
def test_image_size_parse_errors(bad):
    with pytest.raises(UserError):
        ImageSize.parse(bad)


def test_swin_legality_names_nearest_sizes():
    with pytest.raises(UserError, match=r"800x1340 .*nearest legal: 800x1312 or 800x1344"):
        tiny(ImageSize(800, 1340))
    with pytest.raises(UserError, match=r"pruned .*SparseViT's pad -> roll -> LN1"):
        tiny(ImageSize(800, 1344), MIXED, depths=DEPTHS, norm_order="timm")


@pytest.mark.parametrize("order,ratios", [("timm", DENSE), ("sparsevit", DENSE), (None, MIXED)],
                         ids=["dense-timm", "dense-sparsevit", "mixed-pruned"])
def test_pad_ln_order_small_rect(order, ratios):
    """320x448 (maps 80x112 ... 10x14, all padded): cheap guard of both orders and of a pruned model
    whose dense blocks sit in padded stages (they must use SparseViT's order too)."""
    m = _model(320, 448, ratios, order)
    assert m.norm_order == (order or "sparsevit")
    x = torch.randn(1, 3, 320, 448)
    with torch.no_grad():
        ys = m(x)
    assert max(rel_err(r, y) for y, r in zip(ys, ref_forward(m, x, ratios))) <= 1e-4
    other = "timm" if m.norm_order == "sparsevit" else "sparsevit"
    assert max(rel_err(r, y) for y, r in zip(ys, ref_forward(m, x, ratios, order=other))) > 1e-3
