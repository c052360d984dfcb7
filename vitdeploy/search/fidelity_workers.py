"""The search's fidelity forwards on worker processes, one PyTorch thread each.

Why processes: a Swin-T forward on 8 images at 448 took 2.33 s per config on 2 PyTorch threads,
3.77 s on one, and two one-thread processes side by side 3.84 s each (1.92 s per config): on this
kind of host the threads leave a fifth of the cores idle, two processes do not. Each worker holds
the dense model, the images and its own ``FidelityEvaluator`` (prefix cache: ``cache_mb`` split
between them). A batch of configs is sorted and cut into contiguous runs, one per worker, so
configs sharing a stage prefix meet the same cache.

``workers=1`` scores in this process on the caller's PyTorch threads: no start-up cost, and what
tests on small models use. Scores from one and from several workers agree to float rounding
(one thread vs several reorder sums), not bit for bit.
"""

from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from vitdeploy.search.fidelity import Fidelity, FidelityEvaluator
from vitdeploy.search.space import Genes, SearchSpace

_EVAL: Optional[FidelityEvaluator] = None  # in a worker


def _init_worker(model, space, images, labels, cache_mb) -> None:
    import signal

    import torch

    global _EVAL
    # Ctrl-C is the parent's to handle (it stops the search and verifies what was found);
    # a worker dying of it mid-job would only turn that into a broken pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    _EVAL = FidelityEvaluator(model, space, images, labels=labels, cache_mb=cache_mb)


def _score_in_worker(genes: Genes) -> Fidelity:
    return _EVAL(genes)


def split_contiguous(genes_list: Sequence[Genes], workers: int) -> List[int]:
    """Worker index of each config: the configs sorted, cut into ``workers`` runs of near-equal
    length (neighbours in sorted order share the longest stage prefixes)."""
    order = sorted(range(len(genes_list)), key=lambda i: genes_list[i])
    out = [0] * len(genes_list)
    for rank, i in enumerate(order):
        out[i] = rank * workers // max(1, len(genes_list))
    return out


class FidelityWorkers:
    """Scores configs of ``space`` for a dense ``model`` on ``workers`` processes (started on first use)."""

    def __init__(self, model, space: SearchSpace, images: np.ndarray, labels: Optional[np.ndarray] = None,
                 cache_mb: float = 2048, workers: Optional[int] = None):
        from vitdeploy.search.export_workers import default_workers

        self.model, self.space, self.images, self.labels = model, space, images, labels
        self.cache_mb = cache_mb
        self.workers = max(1, int(workers or default_workers()))
        self._local: Optional[FidelityEvaluator] = None
        self._pools: List[ProcessPoolExecutor] = []

    def score(self, genes_list: Sequence[Genes]) -> Iterator[Fidelity]:
        """Each config's Fidelity, in the given order. Closing the iterator early (a time limit,
        Ctrl-C) cancels what no worker has started."""
        if self.workers == 1:
            if self._local is None:
                self._local = FidelityEvaluator(self.model, self.space, self.images, labels=self.labels,
                                                cache_mb=self.cache_mb)
            yield from (self._local(g) for g in genes_list)
            return
        from concurrent.futures.process import BrokenProcessPool

        pools = self._start()
        unique = list(dict.fromkeys(genes_list))
        futures: List[Tuple[Genes, Future]] = []
        for g, w in sorted(zip(unique, split_contiguous(unique, len(pools))), key=lambda t: t[0]):
            futures.append((g, pools[w].submit(_score_in_worker, g)))  # each worker's run in sorted order
        of = dict(futures)
        try:
            for g in genes_list:
                yield of[g].result()
        except BrokenProcessPool:
            self.close()
            raise RuntimeError("a fidelity worker process died (out of memory?); rerun with --fidelity-workers 1")
        finally:
            for _, f in futures:
                f.cancel()

    def _start(self) -> List[ProcessPoolExecutor]:
        if not self._pools:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # not fork: the parent's torch thread pools
            args = (self.model, self.space, self.images, self.labels, self.cache_mb / self.workers)
            # one single-process pool per worker: a job goes to the worker whose cache it shares
            self._pools = [ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker, initargs=args)
                           for _ in range(self.workers)]
        return self._pools

    def close(self) -> None:
        for p in self._pools:
            p.shutdown(wait=True, cancel_futures=True)
        self._pools = []

    def __enter__(self) -> "FidelityWorkers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
