"""CLI at H x W (issue 16): bad sizes and a keep-0 sparsity on a rectangular grid exit 2 with one
line and write nothing; an H x W export records its size everywhere; validate re-runs it."""

import json

import pytest

from conftest import assert_user_error, run


@pytest.mark.parametrize("args,needle", [
    (["swin_t", "--task", "backbone", "--img-size", "800", "1340"], "nearest legal: 800x1312 or 800x1344"),
    (["swin_t", "--img-size", "0", "672"], "nearest legal: 32x672"),
    (["swin_t", "--img-size", "800", "1344", "3"], "one value (square) or two"),
    (["swin_t", "--img-size", "800x"], "expected N (square), H W or HxW"),
    (["efficientvit_m4", "--task", "backbone", "--img-size", "500", "672"], "nearest legal: 496x672 or 512x672"),
    (["swin_t", "--task", "backbone", "--img-size", "224", "448", "--sparsity", "0.6"],
     "stage 3 block 0 ratio 0.6 keeps int(2*(1-0.6))=0 of 2 windows (1x2 grid"),
], ids=["not-multiple", "zero", "three-values", "800x", "efficientvit-16", "keep0-rect-grid"])
def test_bad_sizes_exit_2_one_line_nothing_written(tmp_path, args, needle):
    out = tmp_path / "out"
    out.mkdir()
    res = run("export", *args, "-o", out / "m.onnx")
    assert_user_error(res, needle)
    assert list(out.iterdir()) == []


def test_hxw_export_info_validate(tmp_path):
    out = tmp_path / "m0.onnx"
    res = run("export", "efficientvit_m0", "--task", "backbone", "--img-size", "256x320", "-o", out, timeout=1800)
    assert res.returncode == 0, res.stderr[-2000:]
    info = run("info", out, "--json")
    assert info.returncode == 0, info.stderr[-2000:]
    d = json.loads(info.stdout)
    assert d["metadata"]["img_size"] == "256x320" and d["metadata"]["resize"] == "keep-ratio"
    assert d["inputs"]["images"]["shape"] == ["batch", 3, 256, 320]
    import numpy as np

    prov = json.loads(str(np.load(str(out).replace(".onnx", ".ref.npz"))["provenance"][0]))
    assert prov["img_size"] == "256x320" and prov["resize"] == "keep-ratio"
    v = run("validate", out)
    assert v.returncode == 0, v.stderr[-2000:]
    repo = tmp_path / "repo"
    t = run("triton-repo", out, "-o", repo, "--max-batch", "4")
    assert t.returncode == 0, t.stderr[-2000:]
    cfg = next(repo.rglob("config.pbtxt")).read_text()
    assert 'key: "vitdeploy.img_size"' in cfg and 'string_value: "256x320"' in cfg
    assert 'string_value: "keep-ratio"' in cfg and "dims: 256" in cfg and "dims: 320" in cfg
