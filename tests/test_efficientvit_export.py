"""All six EfficientViT variants: official- and timm-format checkpoints -> folded ONNX with zero BN
nodes and ORT parity <= 1e-4 against the unfolded PyTorch model (random non-trivial weights)."""


import onnx
import pytest
import torch

from vitdeploy import jobs
from vitdeploy.models.efficientvit import build_efficientvit, to_official_state_dict, to_timm_state_dict
from vitdeploy.models.registry import build_model, randomize_for_parity

VARIANTS = [f"efficientvit_m{i}" for i in range(6)]


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_variant_exports_from_both_checkpoint_formats(tmp_path, name):
    src = randomize_for_parity(build_efficientvit(name), seed=11).eval()
    official, timm = tmp_path / "official.pth", tmp_path / "timm.safetensors"
    torch.save({"model": to_official_state_dict(src)}, official)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in to_timm_state_dict(src).items()}, str(timm))

    # both formats load to the same model, bit for bit
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a = build_model(name, checkpoint=official)(x)
        b = build_model(name, checkpoint=timm)(x)
        ref = src(x)
    assert torch.equal(a, b) and torch.equal(a, ref)

    for fmt, ckpt in (("official", official), ("timm", timm)):
        out = tmp_path / f"{fmt}.onnx"
        report = jobs.export(name, out, checkpoint=ckpt, validate_batch=2)
        assert report["op_histogram"].get("BatchNormalization", 0) == 0
        assert report["parity"]["passed"]
        assert report["parity"]["outputs"][0]["max_rel_err"] <= 1e-4
        assert report["parity"]["outputs"][0]["top1_agreement"] == 1.0
        proto = onnx.load(str(out), load_external_data=False)
        assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["vitdeploy.model"] == name and meta["vitdeploy.checkpoint_sha256"] == report["checkpoint_sha256"]
