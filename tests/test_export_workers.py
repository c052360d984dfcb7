"""The search's export workers: what spawned processes write is what this process writes, and a
failing export in a worker surfaces as the same error, with nothing half-written."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from vitdeploy.models.registry import randomize_for_parity
from vitdeploy.models.swin import SwinTransformer
from vitdeploy.search.export_workers import ExportWorkers, default_workers
from vitdeploy.search.latency import _stage_input


@pytest.fixture(scope="module")
def dense():
    m = SwinTransformer(32, (2, 2, 4, 2), (1, 2, 4, 8), num_classes=10, img_size=224, task="backbone",
                        variant="tiny")
    return randomize_for_parity(m.eval(), seed=0)


def _jobs(model, d):
    x = _stage_input(model, 1, 1)
    img = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ratios = [[0.3, 0.3], [0, 0], [0.3, 0.3, 0.7, 0.7], [0, 0]]
    return [ExportWorkers.stage_job(1, [0.3, 0.3], x, d / "stage.onnx"),
            ExportWorkers.stage_job(2, [0.0] * 4, _stage_input(model, 2, 1), d / "stage_dense.onnx"),
            ExportWorkers.model_job(ratios, img, d / "model.onnx", ["feat0", "feat1", "feat2", "feat3"])]


def test_workers_write_what_this_process_writes(dense, tmp_path):
    (tmp_path / "here").mkdir()
    (tmp_path / "spawned").mkdir()
    ExportWorkers(dense, 1).run(_jobs(dense, tmp_path / "here"))
    done = []
    with ExportWorkers(dense, 2) as w:
        w.run(_jobs(dense, tmp_path / "spawned"), lambda i, n: done.append((i, n)))
    assert done == [(1, 3), (2, 3), (3, 3)]
    for name in ("stage.onnx", "stage_dense.onnx", "model.onnx"):
        a = onnx.load(str(tmp_path / "here" / name))
        b = onnx.load(str(tmp_path / "spawned" / name))
        assert a.graph.SerializeToString() == b.graph.SerializeToString(), name


def test_failing_export_in_a_worker_raises_its_error(dense, tmp_path):
    x = _stage_input(dense, 3, 1)
    # stage 3 at 224 is one window: a pruned block keeps 0 windows and the trace fails
    bad = ExportWorkers.stage_job(3, [0.5, 0.5], x, tmp_path / "bad.onnx")
    good = ExportWorkers.stage_job(1, [0.0, 0.0], _stage_input(dense, 1, 1), tmp_path / "good.onnx")
    with pytest.raises(RuntimeError, match="torch.onnx.export failed") as here:
        ExportWorkers(dense, 1).run([bad])
    with ExportWorkers(dense, 2) as w, pytest.raises(RuntimeError) as there:
        w.run([good, bad])
    assert str(there.value).splitlines()[0] == str(here.value).splitlines()[0]
    assert not (tmp_path / "bad.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name != "good.onnx"]


def test_default_workers_is_one_per_core_up_to_four():
    assert 1 <= default_workers() <= 4
