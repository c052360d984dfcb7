"""The Runner base class checks feeds before a backend sees them (Polygraphy's checks), and the
backend factory refuses what it cannot run."""

import numpy as np
import pytest

from vitdeploy.engines.backends import make_artifact_runner
from vitdeploy.errors import UserError

from conftest import TINY_CLASSES, TINY_IMG, make_tiny_onnx


@pytest.fixture(scope="module")
def fixed_runner(tmp_path_factory):
    path = make_tiny_onnx(tmp_path_factory.mktemp("r") / "fixed.onnx", fixed_batch=2)
    with make_artifact_runner("ort", str(path)) as r:
        yield r


def _x(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def test_good_feed_runs(fixed_runner):
    out = fixed_runner.infer({"images": _x(2, 3, TINY_IMG, TINY_IMG)})
    assert out["logits"].shape == (2, TINY_CLASSES)


@pytest.mark.parametrize("feeds,match", [
    ({"pixels": _x(2, 3, TINY_IMG, TINY_IMG)}, "do not match the inputs"),
    ({"images": _x(2, 3, TINY_IMG, TINY_IMG, dtype=np.float64)}, "is float64, the model takes float32"),
    ({"images": _x(3, TINY_IMG, TINY_IMG)}, "has shape"),
    ({"images": _x(3, 3, TINY_IMG, TINY_IMG)}, "axis 0 must be 2"),
    ({"images": _x(2, 3, TINY_IMG + 1, TINY_IMG)}, "axis 2 must be 32"),
])
def test_bad_feed_is_one_user_error(fixed_runner, feeds, match):
    with pytest.raises(UserError, match=match):
        fixed_runner.infer(feeds)


def test_unknown_backend(tmp_path):
    with pytest.raises(UserError, match="choose one of ort, ort-cuda, ort-trt, trt"):
        make_artifact_runner("tvm", str(tmp_path / "m.onnx"))


def test_runners_module_does_not_import_the_tensorrt_runner():
    import subprocess
    import sys

    code = ("import sys, vitdeploy.engines.runners; "
            "assert 'vitdeploy.engines.trt_runner' not in sys.modules, 'runners imports trt_runner'")
    subprocess.run([sys.executable, "-c", code], check=True)
