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
        self._runtime_cache = None
        cache_path = (self.manifest.get("builder_options") or {}).get("runtime_cache")
        try:
            engine_or_context = poly.EngineFromPath(self.engine_path)
            if self.manifest.flavour == "rtx" and cache_path:
                engine_or_context = self._context_with_runtime_cache(engine_or_context(), cache_path)
            self._runner = poly.TrtRunner(engine_or_context, name=f"vitdeploy-{name}")
            self._runner.activate()
        except poly.PolygraphyException as e:
            raise UserError(f"{engine_path}: TensorRT could not load this engine "
                            f"({str(e).strip().splitlines()[-1]}); rebuild it with vitdeploy build")

    def _context_with_runtime_cache(self, engine, cache_path: str):
        """RTX: an execution context whose runtime (JIT) cache is loaded from `cache_path` when it exists and
        saved back on close (`--runtime-cache`, recorded by `vitdeploy build`). Polygraphy has no hook for it."""
        from pathlib import Path

        config = engine.create_runtime_config()
        cache = config.create_runtime_cache()
        if Path(cache_path).is_file():
            cache.deserialize(Path(cache_path).read_bytes())
        config.set_runtime_cache(cache)
        self._runtime_cache = (cache, cache_path, engine)  # the engine outlives its context
        return engine.create_execution_context(config)

    def _save_runtime_cache(self) -> None:
        if self._runtime_cache is None:
            return
        from vitdeploy.fileio import atomic_write_bytes

        cache, path, _ = self._runtime_cache
        data = cache.serialize()
        if data is not None:
            atomic_write_bytes(path, bytes(memoryview(data)))
        self._runtime_cache = None

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
        self._save_runtime_cache()
