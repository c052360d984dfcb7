"""`make gpu-check` on a machine without a GPU: one line and a nonzero exit; its pytest step counts
what ran from pytest's own junit report (tier 1: here every GPU test skips)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def test_gpu_check_without_a_gpu_says_so_in_one_line(tmp_path):
    if _has_gpu():
        import pytest

        pytest.skip("a GPU is visible: gpu-check would run for real")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: ") and "GPU" in lines[0]
    assert not (tmp_path / "o").exists()


def test_gpu_check_counts_tests_from_junit(tmp_path):
    gc = _gpu_check()
    res = gc._pytest("gpu and not tensorrt", "tier2", tmp_path, 300, paths=("tests/test_plugins_gpu.py",))
    assert res["rc"] == 0 and res["tests"] > 100, res
    assert res["tests"] == res["passed"] + res["skipped"] + res["failures"] + res["errors"]
    if not _has_gpu():
        assert res["skipped"] == res["tests"] and res["ok"]
    summary = {"ok": res["ok"], "device": "cpu", "seconds": 1.0,
               "steps": {"tier2": res, "tier3": {"not_run": "TensorRT is not installed", "ok": True},
                         "bandwidth": {"rc": 2, "log": "x.log", "ok": False}}}
    md = gc._markdown(summary)
    assert f"| {res['skipped']} |" in md and "not run: TensorRT is not installed" in md and "did not finish" in md


def test_bandwidth_target_is_judged_on_the_plugin_paths_at_batch_16():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from window_ops_gpu import TARGET_BATCH, format_table, target_verdict

    def row(form, batch, of_copy, op="gather", case="s0 tokens"):
        return {"dtype": "fp16", "case": case, "batch": batch, "op": op, "form": form, "of_copy": of_copy,
                "median_us": 1.0, "gbps": 1.0}

    rows = [row("vitdeploy", TARGET_BATCH, 0.9), row("vitdeploy map (plugin)", TARGET_BATCH, 0.84, op="scatter"),
            row("vitdeploy", 1, 0.2), row("onnx GatherElements", TARGET_BATCH, 0.1)]
    verdict = target_verdict(rows)
    assert verdict["checked"] == 2 and not verdict["met"]
    assert verdict["misses"] == ["fp16 s0 tokens scatter: 84%"]
    assert target_verdict(rows[:1])["met"] and not target_verdict([])["met"]
    table = format_table({"device": "X", "capability": "9.0", "iters": 3, "flush_l2": False, "rows": rows,
                          "target": verdict})
    assert table.count("\n| fp16 |") == len(rows) and "NOT met: fp16 s0 tokens scatter: 84%" in table
