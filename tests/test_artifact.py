"""vitdeploy.artifact: one reader of .onnx and engine files for every verb."""

import pytest

from vitdeploy.artifact import ENGINE_SUFFIXES, BatchProfile, TensorInfo, artifact_kind, open_artifact, strip_prefix
from vitdeploy.errors import UserError

from conftest import TINY_IMG, TINY_MODEL, make_tiny_onnx, run


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("a")
    return make_tiny_onnx(d / "dyn.onnx"), make_tiny_onnx(d / "fixed.onnx", fixed_batch=4)


def test_onnx(onnx_files):
    dyn, fixed = onnx_files
    a = open_artifact(dyn)
    assert a.kind == "onnx" and a.metadata["model"] == TINY_MODEL and a.metadata["img_size"] == str(TINY_IMG)
    assert not any(k.startswith("vitdeploy.") for k in a.metadata)
    assert a.inputs == [TensorInfo("images", "float32", ["batch", 3, TINY_IMG, TINY_IMG])]
    assert [t.name for t in a.outputs] == ["logits"] and a.batch is None and a.fixed_batch is None
    b = open_artifact(fixed)
    assert b.batch == BatchProfile(4, 4, 4) and b.fixed_batch == 4


def test_strip_prefix_keeps_only_ours():
    assert strip_prefix({"vitdeploy.model": "m", "other": "x", "vitdeploy.n": 3}) == {"model": "m", "n": "3"}


@pytest.mark.parametrize("name", ["m.engine", "m.plan", "m.trt", "M.PLAN"])
def test_every_engine_suffix_is_an_engine(name):
    assert artifact_kind(name) == "engine"


def test_unknown_and_missing(tmp_path):
    with pytest.raises(UserError, match="unknown artifact type '.pt'"):
        open_artifact(tmp_path / "m.pt")
    with pytest.raises(UserError, match="not found"):
        open_artifact(tmp_path / "m.onnx")
    eng = tmp_path / "m.trt"
    eng.write_bytes(b"plan")
    with pytest.raises(UserError, match="no manifest"):
        open_artifact(eng)


def test_info_reads_a_trt_suffixed_engine(tmp_path):
    """cli.py used to miss .trt: every verb goes through ENGINE_SUFFIXES now."""
    assert ".trt" in ENGINE_SUFFIXES
    eng = tmp_path / "m.trt"
    eng.write_bytes(b"plan")
    res = run("info", eng, "--json")
    assert res.returncode == 2 and "no manifest" in res.stderr  # read as an engine, not "unknown type"
