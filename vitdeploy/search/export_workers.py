"""The search's ONNX exports (latency-table stage modules, end-to-end candidates) in worker processes.

An export is torch.export tracing plus decompositions plus ONNX translation: Python on one core
(measured: a Swin-T 448 stage module 7-10 s, the whole model 20 s, and the search's process at
142 % of 2 cores while it exported). Independent exports therefore run side by side in spawned
workers, each holding the dense model once (sent when it starts) and building the stage module or
pruned copy itself, so a job is a few numbers, not a model. Nothing is timed while they run.

``workers=1`` exports in this process: no start-up cost, and what tests on small models use.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

_MODEL = None  # in a worker: the dense model every job is built from


def default_workers() -> int:
    """One per core, at most 4: each worker holds a model copy and an export's peak memory."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _init_worker(model) -> None:
    import torch

    global _MODEL
    torch.set_num_threads(1)  # tracing is single-threaded; no worker may steal a core from another
    _MODEL = model


def export_onnx(module, example, path: Path, out_names: Sequence[str], window_ops: bool) -> Path:
    """The module as `vitdeploy export` would write it (dynamic batch, window ops as custom nodes)."""
    import torch

    from vitdeploy.export.onnx import export_module, save_model

    proto = export_module(module, torch.as_tensor(example), out_names, dynamic_batch=True,
                          uses_window_ops=window_ops)
    save_model(proto, path)
    return path


def _export_job(model, job: Tuple) -> str:
    from vitdeploy.search.fidelity import pruned_copy, stage_module

    kind, arg, example, path, out_names = job
    if kind == "stage":
        s, ratios = arg
        module, window_ops = stage_module(model, s, ratios), any(ratios)
    else:
        module, window_ops = pruned_copy(model, arg), any(any(r) for r in arg)
    export_onnx(module, example, Path(path), out_names, window_ops)
    return path


def _run_in_worker(job: Tuple) -> str:
    return _export_job(_MODEL, job)


class ExportWorkers:
    """Exports jobs of one dense ``model`` on ``workers`` processes (started on first use)."""

    def __init__(self, model, workers: Optional[int] = None):
        self.model = model
        self.workers = max(1, int(workers or default_workers()))
        self._pool: Optional[ProcessPoolExecutor] = None

    @staticmethod
    def stage_job(s: int, ratios: Sequence[float], example: np.ndarray, path: Path) -> Tuple:
        return ("stage", (s, list(ratios)), example, str(path), ["y"])

    @staticmethod
    def model_job(ratios: List[List[float]], example: np.ndarray, path: Path, out_names: Sequence[str]) -> Tuple:
        return ("model", ratios, example, str(path), list(out_names))

    def run(self, jobs: Sequence[Tuple], progress: Callable[[int, int], None] = lambda done, n: None) -> None:
        """Export every job (its file appears when it is complete); the first failure is raised."""
        if not jobs:
            return
        if self.workers == 1 or len(jobs) == 1:
            for i, job in enumerate(jobs):
                _export_job(self.model, job)
                progress(i + 1, len(jobs))
            return
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        pool = self._start()
        futures: List[Future] = [pool.submit(_run_in_worker, job) for job in jobs]
        try:
            for i, f in enumerate(as_completed(futures)):
                f.result()
                progress(i + 1, len(jobs))
        except BrokenProcessPool:
            self.close()
            raise RuntimeError("an export worker process died (out of memory?); rerun with --export-workers 1")
        finally:
            for f in futures:
                f.cancel()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            # spawn, not fork: the parent already runs torch's thread pools, which fork does not copy safely
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.model,))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "ExportWorkers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
