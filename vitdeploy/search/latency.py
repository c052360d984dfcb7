"""Latency on the deployment backend: a per-stage table, the additive predictor, end-to-end timing.

Every number comes from an exported ONNX (the same exporter as `vitdeploy export`) timed with the
protocol of `vitdeploy bench` (validation.latency.bench_runner) on the target backend; ``trt`` builds an
engine from each ONNX first (engines.build.build_engine).

Table (per stage s, input = what stage s receives, batch = --batch):
* ``A[r]``: the stage's first block pair alone (its downsample included) with both blocks at r;
* stages with several pairs also ``B0`` (two pairs at 0), ``Bx`` (two pairs at r*) and ``Mx``
  (first pair at 0, second at r*), which separate the stage's fixed cost F (downsample, partition,
  stage-end reverse), the once-per-stage importance/top-k cost I, each pair's cost P(r) (gather,
  blocks, scatter included) and the extra relayouts of a stage mixing dense and pruned pairs:
      P(0) = B0 - A[0],  F = A[0] - P(0),  P(r*) = Bx - A[r*],  I = A[r*] - F - P(r*),
      P(r) = A[r] - F - I,  mixed = Mx - (F + I + P(0) + P(r*)).
  A stage's latency is F + I·[any pair pruned] + Σ P(r_pair) + mixed·[dense and pruned pairs].
The patch embedding, output norms/head and per-run overhead are one constant: the dense model's
end-to-end time minus its predicted stages, so the dense model is predicted exactly and every
other prediction is an extrapolation whose error the search reports.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from vitdeploy.errors import UserError
from vitdeploy.models.macs import count_macs
from vitdeploy.search.space import Genes, SearchSpace

BACKENDS = ("ort", "ort-cuda", "trt")


@dataclass
class Backend:
    """Where and how latency is measured (the `vitdeploy bench` protocol)."""

    name: str = "ort"
    threads: Optional[int] = None
    batch: int = 1
    warmup: int = 3
    iters: int = 10
    min_time_s: float = 0.25  # per round: short modules get enough iterations for a stable median
    plugin_lib: Optional[str] = None
    last_rounds: List[List[float]] = field(default_factory=list, repr=False)  # of the last time() call

    def check(self) -> None:
        if self.name not in BACKENDS:
            raise UserError(f"--backend {self.name!r}: choose one of {', '.join(BACKENDS)}")
        if self.batch < 1:
            raise UserError(f"--batch must be >= 1, not {self.batch}")
        if self.name == "ort-cuda":
            from vitdeploy import optional

            optional.onnxruntime_gpu()
        if self.name == "trt":
            from vitdeploy import optional
            from vitdeploy.engines.device import gpu_present

            trt = optional.tensorrt()
            if not gpu_present():  # the table times engines: say so now, not after the first build
                raise UserError(f"--backend trt measures latency on an NVIDIA GPU and this host has none "
                                f"({trt.label} can build engines here, not run them); use --backend ort")

    def to_dict(self) -> Dict[str, object]:
        return {"backend": self.name, "threads": self.threads, "batch": self.batch, "warmup": self.warmup,
                "iters": self.iters, "min_time_s": self.min_time_s}

    def runner(self, onnx_path: Path):
        from vitdeploy.engines.backends import make_artifact_runner

        if self.name == "trt":
            from vitdeploy.engines.build import build_engine

            engine = onnx_path.with_suffix(".engine")
            if not engine.exists():
                build_engine(str(onnx_path), str(engine), plugin_lib=self.plugin_lib, min_batch=self.batch,
                             opt_batch=self.batch, max_batch=self.batch)
            return make_artifact_runner("trt", str(engine), plugin_lib=self.plugin_lib)
        return make_artifact_runner(self.name, str(onnx_path), threads=self.threads)

    def time(self, onnx_paths: Sequence[Path], example: np.ndarray, rounds: int = 3) -> List[float]:
        """Latency (ms) of each ONNX, timed round-robin: ``rounds`` passes over all models, each
        pass ``iters / rounds`` iterations (at least ``min_time_s``) per model, so a slow phase of
        a shared machine hits every model alike instead of the ones timed during it.

        One session exists at a time: an idle ORT session's intra-op threads keep spinning after
        a run and would steal cores from the next model timed (measured: 28 % prediction error
        with 2 threads and all sessions open, 3-8 % this way on the same machine)."""
        from vitdeploy.validation.latency import bench_runner

        samples: List[List[float]] = [[] for _ in onnx_paths]
        per_round = max(1, -(-self.iters // rounds))
        for r in range(rounds):
            # a new order each round: whatever a model's position costs (the model timed before it,
            # a load spike) lands on different models, and the fastest round filters it out
            order = range(len(onnx_paths)) if r == 0 else np.random.default_rng(r).permutation(len(onnx_paths))
            for i in order:
                p = onnx_paths[i]
                runner = self.runner(Path(p))
                try:
                    st = bench_runner(runner, example[i] if isinstance(example, list) else example,
                                      warmup=self.warmup if r == 0 else min(2, self.warmup), iters=per_round,
                                      threads=self.threads, min_time_s=self.min_time_s)
                finally:
                    runner.close()
                    del runner  # OrtRunner.close() keeps the session: drop it before the next one
                samples[i].append(st["median_ms"])
        # Contention from other processes only ever adds time: the fastest round's median is
        # the most repeatable estimate on a shared machine (and equals the median on a quiet one).
        self.last_rounds = [[float(v) for v in s] for s in samples]  # per model, each round's median
        return [float(np.min(s)) for s in samples]


# ------------------------------------------------------------------------------------ the table

@dataclass
class StageEntry:
    pairs: int
    nW: int
    A: Dict[int, float]  # tenths -> ms
    B0: Optional[float] = None
    Bx: Optional[float] = None
    Mx: Optional[float] = None
    x: Optional[int] = None  # r* in tenths
    macs_fixed: int = 0  # downsample etc.
    macs_per_window_block: float = 0.0

    # derived terms (module docstring)
    def terms(self) -> Dict[str, object]:
        if self.pairs == 1:
            return {}
        P0 = self.B0 - self.A[0]
        F = self.A[0] - P0
        out = {"F": F, "P": {0: P0}, "I": 0.0, "mixed": 0.0}
        if self.x is not None:
            Px = self.Bx - self.A[self.x]
            imp = self.A[self.x] - F - Px
            out["I"] = imp
            for t, a in self.A.items():
                if t:
                    out["P"][t] = a - F - imp
            out["mixed"] = self.Mx - (F + imp + P0 + Px)
        return out

    def predict(self, genes: Sequence[int]) -> float:
        if self.pairs == 1:
            return self.A[genes[0]]
        t = self.terms()
        pruned = [g for g in genes if g]
        ms = t["F"] + sum(t["P"][g] for g in genes)
        if pruned:
            ms += t["I"]
            if len(pruned) < len(genes):
                ms += t["mixed"]
        return ms

    def macs(self, genes: Sequence[int]) -> float:
        from vitdeploy.models.sparsity import ALLOWED_RATIOS, keep_count

        k = sum(2 * (keep_count(self.nW, ALLOWED_RATIOS[g]) if g else self.nW) for g in genes)
        return self.macs_fixed + k * self.macs_per_window_block


@dataclass
class LatencyTable:
    space: SearchSpace
    backend: Dict[str, object]
    stages: List[StageEntry]
    overhead_ms: float = 0.0
    dense_ms: Optional[float] = None  # end to end, measured
    macs_other: int = 0  # patch embed, norms, head
    seconds: float = 0.0
    extra: Dict[str, object] = field(default_factory=dict)

    def predict(self, genes: Genes) -> float:
        return self.overhead_ms + sum(st.predict(genes[sl]) for st, sl in zip(self.stages, self.space.slices))

    def predict_stages(self, genes: Genes) -> float:
        return sum(st.predict(genes[sl]) for st, sl in zip(self.stages, self.space.slices))

    def macs(self, genes: Genes) -> int:
        return int(round(self.macs_other + sum(st.macs(genes[sl]) for st, sl in zip(self.stages, self.space.slices))))

    def to_dict(self) -> Dict[str, object]:
        return {"backend": self.backend, "overhead_ms": self.overhead_ms, "dense_ms": self.dense_ms,
                "macs_other": self.macs_other, "seconds": self.seconds,
                "stages": [{"pairs": s.pairs, "nW": s.nW, "A": {str(k): v for k, v in s.A.items()}, "B0": s.B0,
                            "Bx": s.Bx, "Mx": s.Mx, "x": s.x, "macs_fixed": s.macs_fixed,
                            "macs_per_window_block": s.macs_per_window_block} for s in self.stages],
                **self.extra}

    @classmethod
    def from_dict(cls, d: Dict[str, object], space: SearchSpace) -> "LatencyTable":
        stages = [StageEntry(pairs=s["pairs"], nW=s["nW"], A={int(k): v for k, v in s["A"].items()}, B0=s["B0"],
                             Bx=s["Bx"], Mx=s["Mx"], x=s["x"], macs_fixed=s["macs_fixed"],
                             macs_per_window_block=s["macs_per_window_block"]) for s in d["stages"]]
        return cls(space, d["backend"], stages, d["overhead_ms"], d["dense_ms"], d["macs_other"], d["seconds"])


def _stage_input(model, s: int, batch: int) -> np.ndarray:
    layer = model.layers[s]
    f = 2 if s else 1  # stages 1-3 take the previous stage's map (before their patch merging)
    dim = model.dims[s - 1] if s else model.dims[0]
    return np.random.default_rng(s).standard_normal((batch, layer.H * f, layer.W * f, dim)).astype(np.float32)


def measure_table(model, space: SearchSpace, backend: Backend, workdir: Path, e2e: "EndToEnd",
                  progress: Callable[[str], None] = lambda m: None) -> LatencyTable:
    """Export every stage module of the table (module docstring) and the dense model, time them
    all in one interleaved pool (so they see the same machine), count MACs, anchor the constants."""
    import time

    from vitdeploy.models.sparsity import ALLOWED_RATIOS
    from vitdeploy.search.fidelity import stage_module

    t0 = time.perf_counter()
    plan = []  # (stage, name, path, input)
    jobs = []
    xs_of: Dict[int, Optional[int]] = {}
    for s, (n, ch) in enumerate(zip(space.pairs, space.choices)):
        x = _stage_input(model, s, backend.batch)
        pruned = [t for t in ch if t]
        xs_of[s] = xs = pruned[(len(pruned) - 1) // 2] if pruned and n > 1 else None
        mods: Dict[str, List[float]] = {f"A{t}": [ALLOWED_RATIOS[t]] * 2 for t in ch}
        if n > 1:
            mods["B0"] = [0.0] * 4
            if xs is not None:
                mods["Bx"] = [ALLOWED_RATIOS[xs]] * 4
                mods["Mx"] = [0.0, 0.0] + [ALLOWED_RATIOS[xs]] * 2
        for name, ratios in mods.items():
            p = workdir / f"stage{s}_{name}.onnx"
            jobs.append(e2e.workers.stage_job(s, ratios, x, p))
            plan.append((s, name, p, x))
    dense = space.dense()
    nw = e2e.workers.workers
    progress(f"latency table: exporting {len(plan)} stage modules of {len(space.pairs)} stages and the dense "
             f"model ({nw} export worker{'s' if nw > 1 else ''})")
    step = max(1, (len(jobs) + 1) // 4)
    dense_path = e2e.export_all([dense], extra_jobs=jobs, progress=lambda i, n: progress(
        f"latency table: {i}/{n} modules exported") if i % step == 0 or i == n else None)[0]
    progress(f"latency table: timing {len(plan)} stage modules and the dense model on {backend.name}, interleaved")
    ms = backend.time([p for *_, p, _ in plan] + [dense_path], [x for *_, x in plan] + [e2e.example])
    stages: List[StageEntry] = []
    for s, n in enumerate(space.pairs):
        got = {name: t for (si, name, _, _), t in zip(plan, ms) if si == s}
        x1 = _stage_input(model, s, 1)
        c0 = count_macs(stage_module(model, s, [0.0, 0.0]), x1)
        per_pair = count_macs(stage_module(model, s, [0.0] * 4), x1) - c0
        nW = model.layers[s].nW
        stages.append(StageEntry(pairs=n, nW=nW, A={int(k[1:]): v for k, v in got.items() if k.startswith("A")},
                                 B0=got.get("B0"), Bx=got.get("Bx"), Mx=got.get("Mx"), x=xs_of[s],
                                 macs_fixed=int(c0 - per_pair), macs_per_window_block=per_pair / (2 * nW)))
    table = LatencyTable(space, backend.to_dict(), stages)
    finish_table(table, ms[-1], e2e.macs(space.dense()))
    table.seconds = time.perf_counter() - t0
    return table


def finish_table(table: LatencyTable, dense_ms: float, dense_macs: int) -> None:
    """Anchor the constant terms on the dense model measured end to end."""
    dense = table.space.dense()
    table.dense_ms = dense_ms
    table.overhead_ms = dense_ms - table.predict_stages(dense)
    table.macs_other = 0
    table.macs_other = int(dense_macs - table.macs(dense))


# ------------------------------------------------------------------------------------ end to end

class EndToEnd:
    """Full candidate models exported once (kept in ``workdir``) and timed side by side."""

    def __init__(self, model, space: SearchSpace, backend: Backend, workdir: Path, workers=None):
        from vitdeploy.export.onnx import output_names_for
        from vitdeploy.models.preprocess import random_images
        from vitdeploy.search.export_workers import ExportWorkers

        self.model, self.space, self.backend, self.workdir = model, space, backend, Path(workdir)
        self.out_names = output_names_for(model.task)
        self.example = random_images(backend.batch, model.img_size, seed=0)
        self.paths: Dict[Genes, Path] = {}
        self.workers = workers if isinstance(workers, ExportWorkers) else ExportWorkers(model, workers)

    def path(self, genes: Genes) -> Path:
        return self.workdir / ("e2e_" + "".join(map(str, genes)) + ".onnx")

    def export_all(self, genes_list: Sequence[Genes], extra_jobs: Sequence = (),
                   progress: Callable[[int, int], None] = lambda i, n: None) -> List[Path]:
        """Export the configs not exported yet (and ``extra_jobs``) on the export workers."""
        todo = [g for g in dict.fromkeys(genes_list) if g not in self.paths]
        jobs = list(extra_jobs) + [self.workers.model_job(self.space.ratios(g), self.example, self.path(g),
                                                          self.out_names) for g in todo]
        self.workers.run(jobs, progress)
        self.paths.update({g: self.path(g) for g in todo})
        return [self.paths[g] for g in genes_list]

    def macs(self, genes: Genes) -> int:
        from vitdeploy.search.fidelity import pruned_copy

        return count_macs(pruned_copy(self.model, self.space.ratios(genes)), self.example[:1])

    def time(self, genes_list: Sequence[Genes], rounds: int = 3) -> List[float]:
        paths = self.export_all(genes_list)
        return self.backend.time(paths, self.example, rounds=rounds)

    def close(self) -> None:
        self.workers.close()


def temp_workdir(prefix: str = "vitdeploy-search-"):
    return tempfile.TemporaryDirectory(prefix=prefix)
