"""Parity that travels with the artifact: OUT.ref.npz written by export, checked by
`validate --reference` in a process where `import torch` fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from vitdeploy import jobs
from vitdeploy.artifact import open_artifact
from vitdeploy.validation.reference_outputs import FORMAT, find_reference, load_reference, reference_path_for

from conftest import (
    TRT_ERR,
    assert_user_error,
    make_tiny_onnx,
    rel_err,
    requires_builder,
    requires_trt,
    run,
    scale_largest_initializer,
)

MODEL = "efficientvit_m0"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    for i, size in enumerate([(300, 260), (240, 400)]):
        Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(d / f"{i}.png")
    return d


@pytest.fixture(scope="module")
def exported(tmp_path_factory, images):
    out = tmp_path_factory.mktemp("export") / "m0.onnx"
    report = jobs.export(MODEL, out, images=images, validate=True)
    return out, report


@pytest.fixture
def no_torch(tmp_path):
    """A PYTHONPATH entry whose `torch` package raises ImportError and leaves a marker if imported."""
    marker = tmp_path / "torch-was-imported"
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('torch is blocked in this test')\n")
    yield [tmp_path]
    assert not marker.exists(), "validate --reference imported torch"


def test_export_writes_reference_with_real_and_random_inputs(exported, images):
    out, report = exported
    ref_path = reference_path_for(out)
    assert report["reference"] == str(ref_path) and report["parity"]["passed"]
    with np.load(ref_path, allow_pickle=False) as z:  # no pickle anywhere in the file
        names = set(z.files)
        prov = json.loads(str(z["provenance"][0]))
        x, y = z["input.images"], z["output.logits"]
    assert names == {"input.images", "output.logits", "provenance"}
    assert x.shape == (4, 3, 224, 224) and y.shape == (4, 1000) and x.dtype == y.dtype == np.float32
    meta = open_artifact(out).metadata
    assert prov["format"] == FORMAT and prov["model"] == MODEL
    for k in ("checkpoint_sha256", "sparsity", "precision", "task", "img_size"):
        assert prov[k] == meta[k], k
    assert prov["vitdeploy_version"] and prov["created"].endswith("+00:00")
    assert f"2 images from {images}" in prov["inputs"]
    # the stored outputs are the unfolded PyTorch model's, on exactly the stored inputs
    import torch

    model = jobs.build_reference(MODEL)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert rel_err(expected, y) < 1e-6
    # the real images are the preprocessed ones, with the crop and interpolation the metadata records
    assert meta["crop_pct"] == "0.875" and meta["interpolation"] == "bicubic"
    np.testing.assert_array_equal(x[2:], jobs.preprocess_for(meta, images))


def test_validate_without_torch_passes_on_the_export(exported, no_torch):
    out, _ = exported
    for extra in ([], ["--reference", reference_path_for(out)]):  # found beside it, or named
        res = run("validate", out, *extra, pythonpath=no_torch)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "verdict: PASS" in res.stdout and f"reference: {MODEL}" in res.stdout
        assert "top1 100.0%" in res.stdout


def test_validate_without_torch_fails_a_tampered_onnx(exported, no_torch, tmp_path):
    out, _ = exported
    bad = scale_largest_initializer(out, tmp_path / "bad.onnx")
    res = run("validate", bad, "--reference", reference_path_for(out), pythonpath=no_torch)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "verdict: FAIL" in res.stdout and "Traceback" not in res.stderr


def test_reference_for_other_weights_is_refused(exported, no_torch, tmp_path):
    out, _ = exported
    proto = onnx.load(str(out))
    for p in proto.metadata_props:
        if p.key == "vitdeploy.checkpoint_sha256":
            p.value = "0" * 64
    other = tmp_path / "other.onnx"
    onnx.save(proto, str(other))
    res = run("validate", other, "--reference", reference_path_for(out), pythonpath=no_torch)
    assert_user_error(res, "made for another export")
    assert len(res.stderr.strip().splitlines()) == 1


def test_without_reference_and_without_torch_one_line(exported, no_torch, tmp_path):
    out, _ = exported
    alone = tmp_path / "m0.onnx"
    alone.write_bytes(out.read_bytes())
    res = run("validate", alone, pythonpath=no_torch)
    assert_user_error(res, "--reference")
    assert len(res.stderr.strip().splitlines()) == 1
    (no_torch[0] / "torch-was-imported").unlink()  # here trying torch is right: nothing else can compare


def test_reference_with_checkpoint_or_images_is_a_user_error(exported, images):
    out, _ = exported
    assert_user_error(run("validate", out, "--reference", reference_path_for(out), "--images", images),
                      "--reference compares")


def test_not_a_reference_file(tmp_path):
    from vitdeploy.errors import UserError

    junk = tmp_path / "x.ref.npz"
    np.savez(junk, a=np.zeros(3))
    with pytest.raises(UserError, match="no provenance"):
        load_reference(junk)
    junk.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable"):
        load_reference(junk)


def test_engine_finds_the_reference_beside_its_onnx(tmp_path):
    """An engine's manifest names its ONNX; the reference beside that ONNX is the engine's."""
    from vitdeploy.engines.manifest import make_manifest
    from vitdeploy.engines.profiles import profile_from_batches

    (tmp_path / "src").mkdir()
    onnx_path = make_tiny_onnx(tmp_path / "src" / "t.onnx")
    np.savez(reference_path_for(onnx_path), a=np.zeros(1))
    eng = tmp_path / "deploy" / "t.plan"
    eng.parent.mkdir()
    eng.write_bytes(b"plan")
    shape = ["batch", 3, 32, 32]
    man = make_manifest(engine_path=eng, onnx_path=onnx_path, onnx_sha256="0" * 64,
                        onnx_metadata={"vitdeploy.model": "tiny"}, precision="fp32",
                        profile={"images": profile_from_batches(shape, 1, 2, 8)},
                        inputs=[{"name": "images", "shape": shape, "dtype": "float32"}],
                        outputs=[{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}],
                        tensorrt_version="10.13", gpu_name="x", compute_capability="9.0", plugin_lib=None,
                        plugin_lib_sha256=None, engine_sha256="1" * 64, build_time_s=1.0, builder_options={})
    (tmp_path / "deploy" / "t.plan.json").write_text(json.dumps(man))
    art = open_artifact(eng)
    assert art.kind == "engine" and art.source_onnx == onnx_path and art.metadata == {"model": "tiny"}
    assert find_reference(art.path, art.source_onnx) == reference_path_for(onnx_path)
    assert jobs.info(eng)["reference"] == str(reference_path_for(onnx_path))


def test_check_against_reference_for_build(exported, tmp_path):
    """What `build` calls on a fresh engine; shown here on the ONNX (same path, ORT backend)."""
    import shutil

    from vitdeploy.checks import check_against_reference
    from vitdeploy.errors import CheckFailed

    out, _ = exported
    lines = []
    report = check_against_reference(out, progress=lines.append)
    assert report.passed and "verdict: PASS" in lines[-1]
    bad = scale_largest_initializer(out, tmp_path / "bad.onnx")
    shutil.copyfile(reference_path_for(out), reference_path_for(bad))
    with pytest.raises(CheckFailed, match="reference outputs failed"):
        check_against_reference(bad)
    assert check_against_reference(make_tiny_onnx(tmp_path / "noref.onnx")) is None


@requires_builder
def test_cli_build_checks_the_fresh_engine_where_it_can_run(exported, tmp_path):
    """`vitdeploy build` runs the reference check after build_engine (the engines layer does not call up
    to it). With the real builder: on a host that cannot run the engine (the RTX builder on a CPU-only
    machine) the build succeeds and says where parity gets checked; where it can run, the table."""
    out, _ = exported
    engine = tmp_path / "m0.engine"
    res = run("build", out, "-o", engine)
    assert res.returncode == 0, res.stderr[-2000:]
    assert engine.is_file() and Path(f"{engine}.json").is_file()
    if TRT_ERR:
        assert "parity not checked on this host" in res.stderr and "vitdeploy validate" in res.stderr
    else:
        assert "verdict: PASS" in res.stderr


@requires_trt
def test_cli_build_fails_on_an_engine_off_its_reference(exported, tmp_path):
    """An engine built from a tampered ONNX beside the untampered export's reference: exit 1, the table."""
    import shutil

    out, _ = exported
    bad = scale_largest_initializer(out, tmp_path / "bad.onnx")
    shutil.copyfile(reference_path_for(out), reference_path_for(bad))
    res = run("build", bad, "-o", tmp_path / "bad.engine")
    assert res.returncode == 1 and "verdict: FAIL" in res.stderr, res.stderr[-2000:]


def test_static_batch_artifact_against_a_reference_of_another_size(tmp_path):
    """A --batch 2 graph checked on 3 stored inputs: chunks of exactly 2, the last one padded.
    The stored outputs come from the dynamic-batch export of the same weights."""
    from vitdeploy.checks import parity_from_reference
    from vitdeploy.engines.backends import make_artifact_runner
    from vitdeploy.validation.reference_outputs import ReferenceOutputs, make_provenance

    dyn = make_tiny_onnx(tmp_path / "dyn.onnx")
    fixed = make_tiny_onnx(tmp_path / "fixed.onnx", fixed_batch=2)
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with make_artifact_runner("ort", str(dyn)) as r:
        y = r.infer({"images": x})
    meta = open_artifact(fixed).metadata
    ref = ReferenceOutputs({"images": x}, y, make_provenance(metadata=meta, inputs="3 random", reference="ort"))
    report = parity_from_reference(fixed, ref.save(tmp_path / "ref.npz"))
    assert report.passed and report.batch == 3 and report.outputs[0].shape == [3, 10]
