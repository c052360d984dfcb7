"""The CLI end to end through subprocesses, as a user runs it: exit codes, one-line errors,
nothing half-written left behind."""

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import assert_user_error, run, scale_largest_initializer


@pytest.fixture(scope="module")
def m0_official_ckpt(tmp_path_factory):
    """An official-Microsoft-format EfficientViT-M0 checkpoint made from our own random model."""
    from vitdeploy.models.efficientvit import build_efficientvit, to_official_state_dict
    from vitdeploy.models.registry import randomize_for_parity

    m = randomize_for_parity(build_efficientvit("efficientvit_m0"), seed=3).eval()
    p = tmp_path_factory.mktemp("ckpt") / "efficientvit_m0.pth"
    torch.save({"model": to_official_state_dict(m), "epoch": 299}, p)
    return p


@pytest.fixture(scope="module")
def m0_export(tmp_path_factory, m0_official_ckpt):
    out = tmp_path_factory.mktemp("export") / "m0.onnx"
    res = run("export", "efficientvit_m0", "--checkpoint", m0_official_ckpt, "-o", out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_models_lists_all_variants():
    res = run("models", "--json")
    assert res.returncode == 0
    names = [m["name"] for m in json.loads(res.stdout)]
    assert names == [f"efficientvit_m{i}" for i in range(6)] + ["swin_t", "swin_s", "swin_b"]


def test_export_writes_validated_onnx_and_report(m0_export, m0_official_ckpt):
    out, res = m0_export
    assert "PASS" in res.stdout
    assert "[1/5]" in res.stderr and "[5/5]" in res.stderr  # progress shown
    report = json.loads(out.with_name("m0.report.json").read_text())
    assert report["parity"]["passed"] and report["parity"]["outputs"][0]["max_rel_err"] <= 1e-4
    assert report["op_histogram"].get("BatchNormalization", 0) == 0
    assert report["batchnorm_modules"]["after_fold"] == 0 and report["batchnorm_modules"]["before_fold"] > 100
    assert report["parameters"] == 2_349_436
    assert 78e6 < report["macs"] < 81e6  # official FLOPs column for M0 = 79 M fused MACs
    from vitdeploy.fileio import file_sha256

    assert report["checkpoint_sha256"] == file_sha256(m0_official_ckpt)
    # no temp files left next to the outputs
    assert sorted(p.name for p in out.parent.iterdir()) == ["m0.onnx", "m0.ref.npz", "m0.report.json"]


def test_onnx_metadata_and_dynamic_batch(m0_export):
    import onnxruntime as ort

    out, _ = m0_export
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    for k in ("version", "model", "task", "img_size", "sparsity", "precision", "mean", "std", "checkpoint_sha256"):
        assert f"vitdeploy.{k}" in meta
    assert meta["vitdeploy.model"] == "efficientvit_m0" and meta["vitdeploy.img_size"] == "224"
    assert [n.op_type for n in proto.graph.node].count("BatchNormalization") == 0
    assert proto.graph.input[0].name == "images" and proto.graph.output[0].name == "logits"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        y = s.run(None, {"images": np.random.rand(b, 3, 224, 224).astype(np.float32)})[0]
        assert y.shape == (b, 1000) and np.isfinite(y).all()


def test_validate_info_bench(m0_export, m0_official_ckpt, tmp_path):
    out, _ = m0_export
    res = run("validate", out, "--checkpoint", m0_official_ckpt, "--batch", "4")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "verdict: PASS" in res.stdout and "top1 100.0%" in res.stdout

    # real images through the official preprocessing
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(300, 260), (240, 400), (512, 512)]):
        Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(imgs / f"{i}.jpg")
    res = run("validate", out, "--checkpoint", m0_official_ckpt, "--images", imgs)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 images" in res.stdout

    # without the checkpoint and without the OUT.ref.npz beside it: a clear error, not a bogus parity failure
    alone = tmp_path / "alone" / "m0.onnx"
    alone.parent.mkdir()
    alone.write_bytes(out.read_bytes())
    assert_user_error(run("validate", alone), "--checkpoint")

    res = run("info", out)
    assert res.returncode == 0 and "efficientvit_m0" in res.stdout and "images" in res.stdout

    js = tmp_path / "bench.json"
    res = run("bench", out, "--backend", "torch", "ort", "--batch", "2", "--threads", "1", "--iters", "3",
              "--warmup", "1", "--checkpoint", m0_official_ckpt, "--json", js)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(js.read_text())
    assert [r["backend"] for r in rows] == ["torch", "ort"]
    for r in rows:
        assert r["iters"] == 3 and r["batch"] == 2 and r["threads"] == 1
        assert 0 < r["median_ms"] <= r["p99_ms"] and r["throughput_ips"] > 0 and r["peak_rss_mb"] > 0

    # two ONNX files (an fp32 and an fp16 export, say): one row each, side by side, named in the table
    fp16 = tmp_path / "m0_fp16.onnx"
    res = run("export", "efficientvit_m0", "--checkpoint", m0_official_ckpt, "--precision", "fp16", "-o", fp16,
              "--no-validate")
    assert res.returncode == 0, res.stderr[-2000:]
    js2 = tmp_path / "bench2.json"
    res = run("bench", fp16, out, "--backend", "ort", "--batch", "1", "--threads", "1", "--iters", "2",
              "--warmup", "0", "--json", js2)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(js2.read_text())
    assert [(Path(r["artifact"]).name, r["precision"]) for r in rows] == [("m0_fp16.onnx", "fp16"),
                                                                           (out.name, "fp32")]
    assert "m0_fp16.onnx" in res.stdout and out.name in res.stdout and "speedup" in res.stdout


def test_gpu_backend_on_a_cpu_machine_is_refused_clearly(m0_export, m0_official_ckpt):
    """get_available_providers() lies with onnxruntime-gpu on CPU machines: the session is asked."""
    import onnxruntime as ort

    out, _ = m0_export
    s = ort.InferenceSession(str(out), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if s.get_providers()[0] == "CUDAExecutionProvider":
        pytest.skip("this machine has a working CUDA EP")
    res = run("validate", out, "--checkpoint", m0_official_ckpt, "--backend", "ort-cuda")
    assert_user_error(res, "CUDAExecutionProvider")
    assert "Warning" not in res.stderr


def test_tampered_onnx_fails_validation_with_exit_1(m0_export, m0_official_ckpt, tmp_path):
    """validate must be able to fail: perturb one weight in the ONNX and expect exit 1."""
    out, _ = m0_export
    bad = scale_largest_initializer(out, tmp_path / "bad.onnx")
    res = run("validate", bad, "--checkpoint", m0_official_ckpt, "--batch", "2")
    assert res.returncode == 1, res.stderr[-2000:]
    assert "FAIL" in res.stdout


# ----------------------------------------------------------------------------- bad inputs

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    full = d / "full.pth"
    torch.save({"model": {"w": torch.randn(4096)}}, full)
    data = full.read_bytes()
    (d / "trunc.pth").write_bytes(data[: len(data) // 2])
    (d / "rand.safetensors").write_bytes(os.urandom(4096))
    return d


def _no_outputs(d: Path):
    return [p.name for p in d.iterdir()] == []


@pytest.mark.parametrize("case", ["missing", "truncated", "random_safetensors", "unknown_model",
                                  "bad_img_size", "sparsity_on_efficientvit"])
def test_bad_inputs_exit_2_and_write_nothing(case, bad_files, tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "m.onnx"
    args, needle = {
        "missing": (["efficientvit_m0", "--checkpoint", bad_files / "nope.pth"], "not found"),
        "truncated": (["efficientvit_m0", "--checkpoint", bad_files / "trunc.pth"], "truncated"),
        "random_safetensors": (["efficientvit_m0", "--checkpoint", bad_files / "rand.safetensors"], "safetensors"),
        "unknown_model": (["efficientvit_m9"], "unknown model"),
        "bad_img_size": (["efficientvit_m0", "--img-size", "100"], "100"),
        "sparsity_on_efficientvit": (["efficientvit_m0", "--sparsity", "0.5"], "sparsity"),
    }[case]
    res = run("export", *args, "-o", out)
    assert_user_error(res, needle)
    assert _no_outputs(outdir)


def test_other_variant_checkpoint_names_the_right_model(m0_official_ckpt, tmp_path):
    res = run("export", "efficientvit_m4", "--checkpoint", m0_official_ckpt, "-o", tmp_path / "m4.onnx")
    assert_user_error(res, "efficientvit_m0")
    assert not (tmp_path / "m4.onnx").exists()


def test_swin_checkpoint_given_to_efficientvit(tmp_path):
    from vitdeploy.models.registry import build_model

    p = tmp_path / "swin_t.pth"
    torch.save(build_model("swin_t").state_dict(), p)
    res = run("export", "efficientvit_m0", "--checkpoint", p, "-o", tmp_path / "m.onnx", "--no-validate")
    assert_user_error(res, "swin")


def test_unwritable_output(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a regular file instead
            target = tmp_path / "afile"
            target.write_text("x")
            res = run("export", "efficientvit_m0", "-o", target / "m.onnx")
            assert_user_error(res, "afile")
        else:
            res = run("export", "efficientvit_m0", "-o", ro / "m.onnx")
            assert_user_error(res, "not writable")
    finally:
        ro.chmod(0o700)


def test_bad_flag_values_exit_2():
    res = run("export", "efficientvit_m0", "-o", "x.onnx", "--batch", "zero")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    res = run("bench", "nothing.onnx")
    assert_user_error(res, "not found")
