"""EfficientViT at H x W (issue 16): a 224-trained checkpoint (official format, random non-trivial
weights) exported at a rectangular size and at 448, classify and the new backbone task, folded ONNX
vs the unfolded PyTorch model; window attention on rectangular maps vs the independent reference."""

import json

import onnx
import pytest
import torch
from test_efficientvit_model import make, reference_window_attention

from vitdeploy import jobs
from vitdeploy.models import efficientvit as ev
from vitdeploy.models.registry import build_model, randomize_for_parity
from vitdeploy.models.size import ImageSize


@pytest.fixture(scope="module")
def m0_224_ckpt(tmp_path_factory):
    m = randomize_for_parity(ev.build_efficientvit("efficientvit_m0"), seed=5).eval()
    p = tmp_path_factory.mktemp("ckpt") / "m0_224.pth"
    torch.save({"model": ev.to_official_state_dict(m)}, p)
    return p


@pytest.mark.parametrize("hw,task", [((512, 672), "backbone"), ((512, 672), "classify"), ((448, 448), "classify")],
                         ids=["512x672-backbone", "512x672-classify", "448-classify"])
def test_224_checkpoint_exports_at_hxw(tmp_path, m0_224_ckpt, hw, task):
    size = ImageSize(*hw)
    m = build_model("efficientvit_m0", checkpoint=m0_224_ckpt, img_size=size, task=task)  # strict load
    assert m.windows == (7, 7, 4)  # read from the checkpoint's bias tables, not from the export size
    out = tmp_path / "m.onnx"
    report = jobs.export("efficientvit_m0", out, checkpoint=m0_224_ckpt, img_size=size, task=task, validate_batch=2)
    assert report["parity"]["passed"]
    errs = [o["max_rel_err"] for o in report["parity"]["outputs"]]
    print(f"{size} {task}: ORT vs unfolded PyTorch max rel err {['%.1e' % e for e in errs]}")
    assert max(errs) <= 1e-4
    assert report["op_histogram"].get("BatchNormalization", 0) == 0
    proto = onnx.load(str(out), load_external_data=False)
    meta = {p.key[len("vitdeploy."):]: p.value for p in proto.metadata_props}
    assert meta["img_size"] == str(size)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, size.h, size.w]
    outs = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    if task == "backbone":
        assert json.loads(meta["feature_strides"]) == [16, 32, 64] and meta["resize"] == "keep-ratio"
        assert outs == {"features.0": ["batch", 64, 32, 42], "features.1": ["batch", 128, 16, 21],
                        "features.2": ["batch", 192, 8, 11]}
    else:
        assert meta["resize"] == "crop" and list(outs) == ["logits"]


@pytest.mark.parametrize("stage,hw", [(0, (32, 42)), (2, (8, 11)), (2, (7, 7))],
                         ids=["s0-32x42-win7", "s2-8x11-win4", "s2-7x7-win4"])
def test_rect_window_attention_matches_reference(stage, hw):
    """Maps of a 224-trained model at 512x672 (stages 0 and 2) and at 448 (stage 2: 7x7 > window 4)."""
    m = make("efficientvit_m0", seed=2)
    lwa = m.stages[stage].blocks[0].mixer.m
    lwa.resolution = hw  # the same weights and window at another map size (what a build at H x W does)
    assert lwa.window_resolution == (7 if stage == 0 else 4)
    x = torch.randn(2, ev.VARIANTS["efficientvit_m0"].embed_dim[stage], *hw, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(lwa(x), reference_window_attention(lwa, x), rtol=1e-5, atol=1e-5)


def test_backbone_equals_classifier_stages_and_legality():
    cls = make("efficientvit_m0", seed=3, img_size=ImageSize(256, 320))
    bb = ev.build_efficientvit("efficientvit_m0", img_size=ImageSize(256, 320), task="backbone").eval()
    bb.load_state_dict({k: v for k, v in cls.state_dict().items() if not k.startswith("head.")}, strict=True)
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        for a, b in zip(bb(x), cls.forward_intermediates(x)):
            assert torch.equal(a, b)
    from vitdeploy.errors import UserError

    with pytest.raises(UserError, match=r"512x670 .*nearest legal: 512x656 or 512x672"):
        ev.build_efficientvit("efficientvit_m0", img_size=ImageSize(512, 670))
