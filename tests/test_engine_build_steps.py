"""Tier 1: `engines/build.py`'s named steps one at a time (issue 17): the request checks with no
TensorRT at all, and parse -> build -> manifest with the real TensorRT for RTX builder in a child
process (so this pytest process never binds a TensorRT flavour)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import ROOT, make_tiny_onnx


def test_check_request_resolves_the_profile_and_refuses_bad_options_before_tensorrt(tmp_path):
    from vitdeploy.engines.build import check_request
    from vitdeploy.errors import UserError

    onnx_path = make_tiny_onnx(tmp_path / "t.onnx")
    req = check_request(onnx_path, tmp_path / "out" / "t.engine", max_batch=4)
    assert req.batches == (1, 1, 4)
    assert req.shapes["max"][0] == 4 and req.shapes["min"][1:] == req.shapes["max"][1:]
    assert req.input_name == "images" and (tmp_path / "out").is_dir()
    for kwargs, needle in (({"opt_level": 7}, "optimization level"), ({"workspace_gib": 0}, "workspace"),
                           ({"timing_cache": str(tmp_path)}, "timing cache must be a file")):
        with pytest.raises(UserError, match=needle):
            check_request(onnx_path, tmp_path / "t.engine", **kwargs)
    with pytest.raises(UserError, match="is a directory"):
        check_request(onnx_path, tmp_path)
    with pytest.raises(UserError, match="expected .onnx"):
        check_request(tmp_path / "t.ref.npz", tmp_path / "t.engine")
    assert not list(tmp_path.rglob("*.engine"))


STEPS = r"""
import json, sys
from vitdeploy.engines.build import (check_request, choose_tensorrt, parse_network, parse_plan,
                                     build_serialized, engine_manifest)
from vitdeploy.engines.manifest import current_environment
from vitdeploy.errors import UserError
onnx_path, engine = sys.argv[1], sys.argv[2]
req = check_request(onnx_path, engine, max_batch=2, timing_cache=engine + ".cache")
try:
    choose_tensorrt("rtx", req, None)
    refused = None
except UserError as e:
    refused = str(e)
req = check_request(onnx_path, engine, max_batch=2)
trt, targets = choose_tensorrt("rtx", req, ["8.6"])
msgs = []
parsed = parse_network(trt, req.onnx_path, parse_plan(req.art.onnx, plugin_available=False), "fp32", msgs.append)
data, seconds, recorded = build_serialized(trt, req, parsed, targets, "8.6", msgs.append)
man = engine_manifest(trt, req, parsed, data, seconds, recorded, current_environment(trt.flavour), None)
print(json.dumps({"refused": refused, "layers": parsed.summary["layers"], "plugin_layers": parsed.plugin_layers,
                  "bytes": len(data), "targets": recorded, "man": man, "msgs": msgs}))
"""


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="tensorrt_rtx is not installed")
def test_parse_build_and_manifest_steps_with_the_rtx_builder(tmp_path):
    onnx_path = make_tiny_onnx(tmp_path / "t.onnx")
    res = subprocess.run([sys.executable, "-c", STEPS, str(onnx_path), str(tmp_path / "t.engine")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "--runtime-cache" in out["refused"]
    assert out["layers"] > 0 and out["plugin_layers"] == 0 and out["bytes"] > 1000
    assert out["targets"] == ["8.6"] or [tuple(t) for t in out["targets"]] == [(8, 6)]
    man = out["man"]
    assert man["engine_bytes"] == out["bytes"] and man["tensorrt_flavour"] == "rtx"
    assert man["profile"]["images"]["max"][0] == 2 and man["inputs"][0]["name"] == "images"
    assert man["builder_options"]["window_ops_inlined"] is False
    assert any(m.startswith("parsing") for m in out["msgs"]) and any("building engine" in m for m in out["msgs"])
    assert not (tmp_path / "t.engine").exists()  # the steps write nothing; build_engine writes, atomically
