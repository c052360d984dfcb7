"""Atomic writes: readable by the user's other processes (0666 & ~umask, as open() would give),
a replaced file keeps its mode, and a failed write leaves neither a partial file nor a temp file."""

from __future__ import annotations

import os
import stat

import pytest

from vitdeploy.fileio import atomic_write_bytes, atomic_write_json


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_new_files_get_0666_minus_umask(tmp_path, umask, mask, expected):
    umask(mask)
    p = tmp_path / "model.plan"
    atomic_write_bytes(p, b"engine")
    assert _mode(p) == expected and p.read_bytes() == b"engine"


def test_replaced_file_keeps_its_mode(tmp_path, umask):
    p = tmp_path / "report.json"
    p.write_text("{}")
    os.chmod(p, 0o600)
    atomic_write_json(p, {"a": 1})
    assert _mode(p) == 0o600 and '"a": 1' in p.read_text()


def test_failed_write_leaves_nothing(tmp_path, umask):
    p = tmp_path / "m.onnx"
    with pytest.raises(TypeError):
        atomic_write_bytes(p, object())  # not bytes: the write raises after the temp file exists
    assert list(tmp_path.iterdir()) == []


def test_export_artifacts_are_readable_by_others(tmp_path, umask):
    """The real export path (ONNX, report, reference) under umask 022: 0644, as a Triton container
    running as another user needs."""
    from conftest import run

    out = tmp_path / "m0.onnx"
    res = run("export", "efficientvit_m0", "-o", out, "--img-size", "128", "--no-validate")
    assert res.returncode == 0, res.stderr[-2000:]
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["m0.onnx", "m0.ref.npz", "m0.report.json"]
    assert all(_mode(f) == 0o644 for f in files), [(f.name, oct(_mode(f))) for f in files]
