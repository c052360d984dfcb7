"""TensorRT engine behind the common Runner interface, on Polygraphy's TrtRunner.

Order matters: the manifest is checked *before* deserializing (a plan from another TensorRT
version or GPU fails deep inside TensorRT with "Version tag does not match", or a stale plugin
library crashes), then the plugin library is registered (deserialization looks plugins up in the
registry), then Polygraphy's `EngineFromPath` + `TrtRunner` deserialize and run it (I/O by tensor
name, dynamic batch through `set_input_shape`, output allocation by an IOutputAllocator).
TensorRT and Polygraphy's CUDA wrapper are imported only here, when a runner is created.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from vitdeploy import optional, plugins
from vitdeploy.engines.manifest import assert_compatible
from vitdeploy.engines.runners import Runner, TensorSpec
from vitdeploy.errors import UserError


class TrtRunner(Runner):
    name = "trt"

    def __init__(self, engine_path, plugin_lib: Optional[str] = None, name: str = "trt"):
        self.name = name
        self.engine_path = str(engine_path)
        # The engine's flavour is chosen here (install hint when absent); a host that cannot run it at all
        # (no GPU, a compute capability it was not built for) is told so before CUDA is touched.
        self.manifest = assert_compatible(engine_path, plugin_lib=plugin_lib)
        trt = optional.tensorrt(self.manifest.flavour)
        # Only an engine with vitdeploy plugin layers needs (and gets) the library.
        self.plugin_lib = plugins.load(plugin_lib) if self.manifest.get("plugin_lib_sha256") is not None else None
        self.inputs = [TensorSpec(n, shape, dtype) for n, dtype, shape in self.manifest.tensors("inputs")]
        self.outputs = [TensorSpec(n, shape, dtype) for n, dtype, shape in self.manifest.tensors("outputs")]
        self.profile = self.manifest.get("profile", {})

        poly = trt.polygraphy()
        try:
            self._runner = poly.TrtRunner(poly.EngineFromPath(self.engine_path), name=f"vitdeploy-{name}")
            self._runner.activate()
        except poly.PolygraphyException as e:
            raise UserError(f"{engine_path}: TensorRT could not load this engine "
                            f"({str(e).strip().splitlines()[-1]}); rebuild it with vitdeploy build")

    @property
    def device(self) -> str:
        return "cuda"

    def _check_batch(self, name: str, arr: np.ndarray) -> None:
        prof = self.profile.get(name)
        if not prof:
            return
        lo, hi = prof["min"], prof["max"]
        if list(arr.shape[1:]) != list(lo[1:]):
            raise UserError(f"input {name!r} has shape {list(arr.shape)}; the engine takes "
                            f"[batch, {', '.join(map(str, lo[1:]))}]")
        if not lo[0] <= arr.shape[0] <= hi[0]:
            raise UserError(f"batch {arr.shape[0]} is outside the engine's profile {lo[0]}..{hi[0]}; rebuild "
                            f"with --min-batch/--max-batch covering it")

    def check_feeds(self, feeds: Dict[str, np.ndarray]) -> None:
        """The base class's checks (names, dtype, rank, static dims), then the engine's batch profile."""
        super().check_feeds(feeds)
        for spec in self.inputs:
            self._check_batch(spec.name, feeds[spec.name])

    def infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        feed = {spec.name: np.ascontiguousarray(feeds[spec.name]) for spec in self.inputs}
        out = self._runner.infer(feed_dict=feed)
        # Polygraphy returns views of host buffers it reuses on the next call: copy.
        return {spec.name: np.array(out[spec.name], copy=True) for spec in self.outputs}

    def synchronize(self) -> None:
        # Polygraphy's infer already synchronizes its stream before returning outputs.
        stream = getattr(self._runner, "stream", None)
        if stream is not None:
            stream.synchronize()

    def close(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None and getattr(runner, "is_active", False):
            runner.deactivate()
        self._runner = None
