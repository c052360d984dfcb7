"""`vitdeploy search`: the whole job, from checkpoint to OUT.json / OUT.search.json / OUT.png.

1. the dense model (checkpoint, or the seeded random weights `vitdeploy export` also uses);
2. calibration inputs (export preprocessing), the dense outputs they are compared against;
3. the latency table on the backend, anchored on the dense model measured end to end;
4. the evolutionary search under the predicted constraint (or exact MACs);
5. the front's best configs, dense and the references the report compares with exported and
   measured end to end, side by side (``verify``); the chosen config is the best-scoring one that
   meets the budget *as measured*, a close call (within MIN_MARGIN or the round's noise) only
   after a second measurement. If none of the first ones does, the next are picked with the
   measured/predicted ratio applied, twice; then the job fails (exit 1) naming the lowest
   latency reached.

``run_search`` only sequences these steps: ``_check_args``, ``Budget.from_args``,
``calibration_inputs``, ``_table``, ``_limit``, ``Evolution.run`` (``Evolution.restore`` for
``--resume``), ``verify``, ``_result`` / ``_write_outputs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from vitdeploy import __version__
from vitdeploy.errors import CheckFailed, UserError
from vitdeploy.search.evolution import Candidate, Evolution, pareto_front
from vitdeploy.search.fidelity import FidelityEvaluator
from vitdeploy.search.latency import Backend, EndToEnd, LatencyTable, measure_table, temp_workdir
from vitdeploy.search.space import Genes, SearchSpace

Progress = Callable[[str], None]
SEARCH_FORMAT = "vitdeploy.search/1"


def search_paths(out: os.PathLike) -> Dict[str, Path]:
    out = Path(out)
    stem = out.with_suffix("")
    return {"json": out, "search": Path(f"{stem}.search.json"), "png": Path(f"{stem}.png")}


# ----------------------------------------------------------------------------------- inputs

def calibration_inputs(img_size, spec, *, images=None, labels=None, num_images: int = 8,
                       warn: Progress = lambda m: None, resize: str = "crop"):
    """(images [N,3,H,W], labels or None, description), preprocessed as `spec` (the model's ModelSpec)
    says the export does. ``labels`` is an ImageFolder directory."""
    from vitdeploy.models.preprocess import list_images, preprocess_images, random_images

    def prep(files):
        return preprocess_images(files, img_size, spec.mean, spec.std, crop_pct=spec.crop_pct,
                                 interpolation=spec.interpolation_for(resize), resize=resize)

    if num_images < 1:
        raise UserError(f"--num-images must be >= 1, not {num_images}")
    if labels is not None:
        root = Path(labels)
        if not root.is_dir():
            raise UserError(f"--labels: {root} is not a directory (expected one sub-folder per class)")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not classes:
            raise UserError(f"--labels: {root} has no class sub-folders (ImageFolder layout: DIR/CLASS/IMAGE)")
        per_class = []
        for ci, c in enumerate(classes):
            try:
                files = list_images(root / c)
            except UserError:
                files = []
            per_class.append([(f, ci) for f in files])
        chosen: List[tuple] = []
        depth = 0
        while len(chosen) < num_images and any(depth < len(p) for p in per_class):  # round robin over classes
            chosen.extend(p[depth] for p in per_class if depth < len(p))
            depth += 1
        chosen = chosen[:num_images]
        if not chosen:
            raise UserError(f"--labels: no images in the class folders of {root}")
        x = prep([f for f, _ in chosen])
        return x, np.array([c for _, c in chosen]), f"{len(x)} labelled images from {root} ({len(classes)} classes)"
    if images is not None:  # the export's calibration inputs, named by this verb's flag
        from vitdeploy.export.quantize import calibration_inputs as export_calibration_inputs

        x, source = export_calibration_inputs(images, num_images, img_size, spec.mean, spec.std, spec.crop_pct,
                                              spec.interpolation_for(resize), resize=resize, flag="--images")
        return x, None, source
    warn("warning: no --images: fidelity is scored on random inputs, a weak proxy for real images "
         "(pass --images DIR with a few calibration images)")
    return random_images(num_images, img_size, seed=0), None, f"{num_images} random inputs (weak proxy)"


def _check_output(out: os.PathLike) -> Dict[str, Path]:
    from vitdeploy.export.onnx import check_writable

    out = Path(out)
    if out.suffix != ".json":
        raise UserError(f"output {out} should end in .json (a sparsity file for `export --sparsity`)")
    paths = search_paths(out)
    for p in paths.values():
        check_writable(p)
    return paths


@dataclass(frozen=True)
class Budget:
    """The constraint of one search, knowing its kind (the flag it came from):

    * ``budget``: a fraction of the dense model's latency (ms, measured on the backend);
    * ``budget_ms``: an absolute latency in ms;
    * ``macs_budget``: a fraction of the dense model's MACs (exact, counted; never timed)."""

    kind: str  # "budget" | "budget_ms" | "macs_budget" (the flag's name, as OUT.search.json records it)
    value: float

    KINDS = ("budget", "budget_ms", "macs_budget")

    @classmethod
    def from_args(cls, budget=None, budget_ms=None, macs_budget=None) -> "Budget":
        given = [(k, v) for k, v in zip(cls.KINDS, (budget, budget_ms, macs_budget)) if v is not None]
        if len(given) != 1:
            raise UserError("give exactly one of --budget FRACTION (of the dense latency), --budget-ms MS "
                            "or --macs-budget FRACTION (of the dense MACs)")
        b = cls(given[0][0], given[0][1])
        if not np.isfinite(b.value) or b.value <= 0:
            raise UserError(f"{b.flag} must be > 0, not {b.value}")
        if b.kind != "budget_ms" and b.value > 1:
            raise UserError(f"{b.flag} {b.value} is above 1 (the dense model); give a fraction in (0, 1]")
        return cls(b.kind, float(b.value))

    @property
    def flag(self) -> str:
        return "--" + self.kind.replace("_", "-")

    @property
    def on_macs(self) -> bool:
        return self.kind == "macs_budget"

    @property
    def of_dense(self) -> bool:
        """A fraction of the dense latency: judged against dense timed beside the candidate."""
        return self.kind == "budget"

    @property
    def unit(self) -> str:
        return "MACs" if self.on_macs else "ms"

    def limit(self, dense_ms: float, dense_macs: float) -> float:
        """The budget in its unit (ms or MACs) for a dense model of ``dense_ms`` / ``dense_macs``."""
        if self.on_macs:
            return self.value * dense_macs
        return self.value * dense_ms if self.of_dense else self.value

    def cost(self, table: LatencyTable) -> Callable[[Genes], float]:
        """What the search constrains: exact MACs, or the predicted latency."""
        return table.macs if self.on_macs else table.predict

    def fmt(self, limit: float) -> str:
        return f"{limit / 1e9:.2f} G MACs" if self.on_macs else f"{limit:.2f} ms"

    def to_dict(self) -> Dict[str, object]:
        return {"kind": self.kind, "value": self.value}


def _check_args(model_name: str, task: str, labels, images, population: int, parents: int, generations: int,
                mutation_prob: float):
    from vitdeploy.models.registry import get_spec

    spec = get_spec(model_name)
    if spec.family != "swin":
        raise UserError(f"search picks SparseViT window-pruning ratios; {model_name} is not a Swin model "
                        f"(use swin_t, swin_s or swin_b)")
    if task not in ("classify", "backbone"):
        raise UserError(f"--task must be classify or backbone, not {task!r}")
    if labels is not None and task != "classify":
        raise UserError("--labels scores classification accuracy; use it with --task classify")
    if labels is not None and images is not None:
        raise UserError("give --images (label-free fidelity) or --labels (accuracy), not both")
    if population < 2 or parents < 1 or generations < 0 or not 0 <= mutation_prob <= 1:
        raise UserError("need --population >= 2, --parents >= 1, --generations >= 0, 0 <= mutation prob <= 1")
    return spec


def _limit(budget: Budget, table: LatencyTable, space: SearchSpace, backend: str, progress: Progress) -> float:
    """The budget in the table's terms; a UserError when even the sparsest config cannot meet it."""
    dense_ms, dense_macs = table.dense_ms, table.macs(space.dense())
    sparsest = space.sparsest()
    lo_ms, lo_macs = table.predict(sparsest), table.macs(sparsest)
    progress(f"dense {dense_ms:.2f} ms, {dense_macs / 1e9:.2f} G MACs; sparsest config predicted "
             f"{lo_ms:.2f} ms, {lo_macs / 1e9:.2f} G MACs")
    limit = budget.limit(dense_ms, dense_macs)
    if budget.on_macs and limit < lo_macs:
        raise UserError(f"--macs-budget {budget.value} ({limit / 1e9:.2f} G) is below what this space "
                        f"reaches: {lo_macs / dense_macs:.3f}..1 of the dense MACs")
    if not budget.on_macs and limit < lo_ms:
        raise UserError(f"{budget.flag} {budget.value} is below what the sparsest config reaches: "
                        f"{lo_ms / dense_ms:.3f}..1 of dense ({lo_ms:.2f}..{dense_ms:.2f} ms on {backend})")
    return limit


def _table(model, space, be: Backend, work: Path, e2e: EndToEnd, prior, reused, source, progress) -> LatencyTable:
    if prior is not None or reused is not None:
        table = LatencyTable.from_dict(prior["latency_table"] if prior else reused, space)
        progress(f"[2/5] latency table from {source} ({table.seconds:.0f}s when measured)")
        return table
    progress(f"[2/5] latency table on {be.name}" + (f" ({be.threads} threads)" if be.threads else "")
             + f", batch {be.batch}")
    return measure_table(model, space, be, work, e2e, progress)


# ----------------------------------------------------------------------------------- the job

def run_search(model_name: str, out: os.PathLike, *, checkpoint=None, img_size=None,
               task: str = "backbone", budget: Optional[float] = None, budget_ms: Optional[float] = None,
               macs_budget: Optional[float] = None, backend: str = "ort", threads: Optional[int] = None,
               batch: int = 1, images=None, labels=None, num_images: int = 8, seed: int = 0,
               time_limit: Optional[float] = None, generations: int = 6, population: int = 32, parents: int = 8,
               mutation_prob: float = 0.1, resume=None, top_k: int = 3, ratio_choices: Optional[Sequence[float]] = None,
               warmup: int = 3, iters: int = 10, cache_mb: float = 2048, plot: bool = True, model=None,
               table_from=None, resize: Optional[str] = None, export_workers: Optional[int] = None,
               progress: Progress = lambda m: None) -> Dict[str, object]:
    """Returns the dict written to OUT.json; raises UserError (exit 2) / CheckFailed (exit 1).

    ``model`` (tests, benchmarks): a ready dense SwinTransformer to search instead of building
    ``model_name``. ``table_from``: an OUT.search.json whose latency table (same settings) is
    reused instead of measured -- several budgets on one table; same seed + table = same search."""
    from vitdeploy.engines.runners import set_threads

    t_start = time.perf_counter()
    spec = _check_args(model_name, task, labels, images, population, parents, generations, mutation_prob)
    bud = Budget.from_args(budget, budget_ms, macs_budget)
    paths = _check_output(out)
    be = Backend(backend, threads=threads, batch=batch, warmup=warmup, iters=iters)
    be.check()
    set_threads(threads)
    from vitdeploy.models.preprocess import check_resize
    from vitdeploy.models.registry import check_size

    img_size = check_size(model_name, img_size or (model.img_size if model is not None else spec.default_img_size))
    resize = check_resize(resize) if resize is not None else spec.default_resize(task)
    # JSON: an int when square, so search files written before H x W resume and compare unchanged
    size_json = img_size.h if img_size.is_square else str(img_size)

    # 1-2. dense model, calibration inputs
    if model is None:
        from vitdeploy.jobs import build_reference

        progress(f"[1/5] building {model_name} ({task}) at {img_size.label()}"
                 + (f" from {checkpoint}" if checkpoint else ""))
        model = build_reference(model_name, checkpoint=checkpoint, img_size=img_size, task=task, warn=progress)
    x, y, calib = calibration_inputs(img_size, spec, images=images, labels=labels,
                                     num_images=num_images, warn=progress, resize=resize)
    space = SearchSpace.for_model(model.depths, img_size, *(() if ratio_choices is None else (ratio_choices,)))
    progress(f"search space: {space.describe()}; fidelity on {calib}")
    settings = {"model": model_name, "task": task, "img_size": size_json,
                "checkpoint": str(checkpoint) if checkpoint else None,
                "checkpoint_sha256": _sha(checkpoint), **be.to_dict(), "seed": seed, "calibration": calib,
                "num_images": int(len(x)), "choices": [list(c) for c in space.choices]}

    prior = _load_resume(resume, settings) if resume else None
    reused = _load_resume(table_from, settings)["latency_table"] if table_from and not resume else None
    with temp_workdir() as tmp, contextlib.closing(EndToEnd(model, space, be, Path(tmp), export_workers)) as e2e:
        # 3. latency table (dense anchored end to end), the budget in its terms
        table = _table(model, space, be, Path(tmp), e2e, prior, reused, resume or table_from, progress)
        limit = _limit(bud, table, space, backend, progress)
        cost = bud.cost(table)

        # 4. search
        evaluator = FidelityEvaluator(model, space, x, labels=y, cache_mb=cache_mb)

        def score(g: Genes) -> Candidate:
            return Candidate(g, table.predict(g), table.macs(g), evaluator(g), "", 0)

        refs = {"dense": space.dense(), **space.uniform(), **space.presets()}
        evo = Evolution(space, lambda g: cost(g) <= limit, score, seed=seed, population_size=population,
                        parents=parents, mutation_prob=mutation_prob)
        if prior is not None:
            evo.restore(prior)
            progress(f"resuming at generation {evo.generation} with {len(evo.history)} evaluated configs")

        def save(e: Evolution, final: Optional[dict] = None) -> None:
            _write_search_json(paths["search"], settings, bud, limit, table, space, e, refs, final)

        progress(f"[3/5] evolutionary search: population {population}, parents {parents}, mutation p "
                 f"{mutation_prob}, generations {generations}"
                 + (f", time limit {time_limit:.0f}s" if time_limit else "") + f", seed {seed}")
        t_search = time.perf_counter()
        evo.run({k: v for k, v in refs.items() if k != "dense"}, generations, time_limit, progress, save)
        search_s = time.perf_counter() - t_search
        for name, g in refs.items():  # every reference gets a score for the report and the plot
            evo.evaluate(g, f"reference: {name}")
        save(evo)

        # 5. end-to-end verification
        progress("[4/5] exporting and timing the best configs end to end, with dense, uniform and presets")
        ver = verify(evo.history, table, bud, limit, e2e, refs, top_k, progress)
        total_s = time.perf_counter() - t_start
        save(evo, ver.to_dict() | {"search_s": search_s, "total_s": total_s, "interrupted": evo.interrupted})
        if ver.chosen is None:
            low_g = min(ver.measured, key=ver.measured.get)
            raise CheckFailed(f"no config meets the budget of {ver.limit:.2f} ms as measured on {backend}; the "
                              f"lowest latency reached was {ver.measured[low_g]:.2f} ms ({space.ratios(low_g)}); "
                              f"raise the budget (see {paths['search']})")

        # 6. outputs
        result = _result(ver, space, bud, settings, evo, search_s, total_s, table)
        _write_outputs(paths, result, plot, evo.history, refs, ver, space, bud,
                       title=f"{model_name} {img_size.label()} {task} on {backend}")
        progress(f"[5/5] wrote {paths['json']}, {paths['search']}" + (f", {paths['png']}" if plot else ""))
        result["_front_table"] = front_table(evo.history, refs, ver.chosen.genes, space, ver.limit, bud)
        return result


# ----------------------------------------------------------------------------------- verification

# A config is accepted on a single end-to-end measurement only when it is at least this far under
# the budget (or further, when dense's rounds in that measurement spread more: the round's own
# noise). Closer than that, timing noise could put it over: it is re-timed beside dense in the
# next round and accepted only if every measurement meets the budget.
MIN_MARGIN = 0.02


@dataclass
class Verification:
    """The end-to-end check of the search's picks: what was timed and what was chosen."""

    chosen: Optional[Candidate]
    limit: float  # the budget in ms (MACs for --macs-budget), as measured: of the dense timed beside the choice
    dense_ms: float  # dense, timed in the chosen config's round
    measured: Dict[Genes, float] = field(default_factory=dict)  # ms (the worst measurement of each config)
    dense_of: Dict[Genes, float] = field(default_factory=dict)  # the dense timed in that same round
    samples: Dict[Genes, List[tuple]] = field(default_factory=dict)  # every (ms, dense ms, margin) of a config
    rounds: int = 0

    def to_dict(self) -> Dict[str, object]:
        key = "".join
        return {"measured": {key(map(str, g)): ms for g, ms in self.measured.items()},
                "dense_ms_same_round": {key(map(str, g)): ms for g, ms in self.dense_of.items()},
                "measurements": {key(map(str, g)): [list(v) for v in s] for g, s in self.samples.items()},
                "dense_ms_final": self.dense_ms, "limit_final": self.limit, "verification_rounds": self.rounds}


def references_to_time(refs: Dict[str, Genes], cost: Callable[[Genes], float], limit: float) -> List[Genes]:
    """The references the report compares the choice with, timed beside it: the presets predicted
    near or within the budget, and the two least-pruned uniform ratios predicted within 1.1x of it
    (fidelity falls as the uniform ratio rises, so the best uniform within the budget is one of
    them). Every other reference keeps its predicted latency in the plot."""
    uni = sorted((g for n, g in refs.items() if n.startswith("uniform") and cost(g) <= 1.1 * limit),
                 key=cost, reverse=True)[:2]
    presets = [g for n, g in refs.items() if n.startswith("cfg") and 0.6 * limit <= cost(g) <= 1.1 * limit]
    return list(dict.fromkeys(uni + presets))


def verify(history: Dict[Genes, Candidate], table: LatencyTable, bud: Budget, limit: float, e2e: EndToEnd,
           refs: Dict[str, Genes], top_k: int = 3, progress: Progress = lambda m: None) -> Verification:
    """Export and time the best-scoring configs end to end beside dense (and, in the first round,
    the references of ``references_to_time``); the chosen config is the best-scoring one that
    meets the budget *as measured* (MIN_MARGIN: one measurement close to the budget is re-timed,
    not accepted). If none of the first ones does, the next are picked with the
    measured/predicted ratio applied, twice. Every round times dense and at most ``top_k``
    searched configs: the best-scoring of the close calls and the new picks together. Sets
    ``measured_ms`` on the candidates it times."""
    space = e2e.space
    dense = space.dense()
    ver = Verification(None, limit, table.dense_ms)
    ranked = sorted(history.values(), key=lambda c: c.key(), reverse=True)
    # The table was timed minutes earlier, possibly under another load: predictions are
    # brought to the verification's scale (dense measured beside the candidates), then
    # corrected by the measured/predicted ratio of the searched configs already measured.
    correction = 1.0

    def fits(c: Candidate) -> bool:  # predicted
        if bud.on_macs:
            return c.macs <= limit
        if bud.of_dense:  # fractions of dense: the table's vs the round's
            return c.predicted_ms / table.dense_ms * correction <= bud.value
        return c.predicted_ms * correction <= limit

    def over(ms: float, dense_ms: float, margin: float = 0.0) -> bool:  # measured
        return ms > bud.limit(dense_ms, 0) * (1 - margin)

    def status(g: Genes) -> str:  # "ok" | "recheck" | "over"
        if bud.on_macs:
            return "ok" if table.macs(g) <= limit else "over"
        s = ver.samples[g]
        if any(over(ms, d) for ms, d, _ in s):
            return "over"
        return "ok" if len(s) >= 2 or not over(*s[0]) else "recheck"

    # dense answers an absolute budget it meets; a fraction of dense (latency or MACs) below 1 asks for pruning
    dense_allowed = bud.kind == "budget_ms" or bud.value >= 1

    def better(g: Genes) -> bool:
        return ver.chosen is None or history[g].key() > ver.chosen.key()

    for attempt in range(4):  # up to 3 rounds of new picks, and a last one to re-time close calls
        fresh = [] if attempt == 3 else [c.genes for c in ranked if c.genes not in ver.samples and fits(c)
                                         and better(c.genes)][:top_k]
        recheck = [g for g in ver.samples if g != dense and status(g) == "recheck" and better(g)]
        # close calls and new picks compete for the same top_k slots, best-scoring first: a round
        # times at most top_k searched configs, and a close call scoring below top_k others that
        # may still pass is not worth a measurement yet
        picks = sorted(recheck + fresh, key=lambda g: history[g].key(), reverse=True)[:top_k]
        if attempt and not picks:
            break
        near = references_to_time(refs, bud.cost(table), limit) if attempt == 0 else []
        todo = list(dict.fromkeys([dense] + picks + near))
        times = e2e.time(todo)
        ver.rounds += 1
        dense_rounds = e2e.backend.last_rounds[0] if e2e.backend.last_rounds else [times[0]]
        margin = max(MIN_MARGIN, (max(dense_rounds) - min(dense_rounds)) / min(dense_rounds))
        round_dense = times[0]  # the budget fraction is of the dense model timed beside them
        for g, t in zip(todo, times):
            ver.samples.setdefault(g, []).append((t, round_dense, margin))
            # each config's worst measurement (as a fraction of its round's dense) is what it is held to
            ms, d, _ = max(ver.samples[g], key=lambda v: v[0] / v[1])
            ver.measured[g], ver.dense_of[g] = ms, d
            history[g].measured_ms = ms
        ok = [history[g] for g in ver.samples if (g != dense or dense_allowed) and status(g) == "ok"]
        if ok:
            ver.chosen = max(ok, key=lambda c: (c.key(), -c.measured_ms))
            ver.dense_ms = ver.dense_of[ver.chosen.genes]
        else:
            ver.dense_ms = round_dense
        ver.limit = limit if bud.on_macs else bud.limit(ver.dense_ms, 0)
        if bud.on_macs:
            break
        if bud.of_dense:
            ratios = [(ver.measured[g] / ver.dense_of[g]) / (history[g].predicted_ms / table.dense_ms) for g in picks]
        else:
            ratios = [ver.measured[g] / history[g].predicted_ms for g in picks]
        if ratios:
            correction = max(1.0, float(np.median(ratios)))
        close = [g for g in ver.samples if g != dense and status(g) == "recheck" and better(g)]
        progress(f"verification round {attempt + 1} ({len(todo)} models, margin {100 * margin:.1f} %): "
                 + (f"best within {ver.limit:.2f} ms: {ver.chosen.measured_ms:.2f} ms, fidelity "
                    f"{ver.chosen.fidelity.score:.5f}" if ver.chosen else f"none within {ver.limit:.2f} ms")
                 + (f"; {len(close)} within the margin (the best {top_k} of them and of new picks timed next)"
                    if close else "")
                 + f"; searched configs measured/predicted {correction:.3f}")
    return ver


def _write_outputs(paths, result, plot: bool, history, refs, ver: Verification, space, bud: Budget, title: str):
    from vitdeploy.fileio import atomic_write_json

    atomic_write_json(paths["json"], result)
    if plot:
        from vitdeploy.search.plot import plot_search

        plot_search(paths["png"], history, refs, ver.chosen.genes, space, None if bud.on_macs else ver.limit,
                    ver.dense_ms, title=title)


def _sha(checkpoint) -> Optional[str]:
    if checkpoint is None:
        return None
    from vitdeploy.fileio import file_sha256

    return file_sha256(checkpoint)


def _load_resume(path, settings) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--resume: {p} not found (it is the OUT.search.json a previous search wrote)")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--resume: cannot read {p}: {e}")
    if not isinstance(d, dict) or d.get("format") != SEARCH_FORMAT:
        raise UserError(f"--resume: {p} is not a vitdeploy search state ({SEARCH_FORMAT})")
    for k in ("model", "task", "img_size", "checkpoint_sha256", "backend", "threads", "batch", "seed",
              "num_images", "choices", "calibration"):
        if d["settings"].get(k) != settings.get(k):
            raise UserError(f"--resume: {p} was searched with {k}={d['settings'].get(k)!r}, this run has "
                            f"{settings.get(k)!r}; resume with the same settings")
    return d


def _write_search_json(path, settings, bud, limit, table, space, evo, refs, final) -> None:
    from vitdeploy.fileio import atomic_write_json

    cands = list(evo.history.values())
    pts = [(c.predicted_ms, c.fidelity.score) for c in cands]
    front = [cands[i] for i in pareto_front(pts)]
    meas = [c for c in cands if c.measured_ms is not None]
    mfront = [meas[i] for i in pareto_front([(c.measured_ms, c.fidelity.score) for c in meas])]
    ref_names = {g: n for n, g in refs.items()}
    atomic_write_json(path, {
        "format": SEARCH_FORMAT, "vitdeploy_version": __version__, "settings": settings, "budget": bud.to_dict(),
        "limit": limit, "space": space.describe(), "latency_table": table.to_dict(), "state": evo.state(),
        "references": {n: list(g) for n, g in refs.items()},
        "candidates": [c.to_dict(space) | {"reference": ref_names.get(c.genes)} for c in cands],
        "front_predicted": [list(c.genes) for c in front], "front_measured": [list(c.genes) for c in mfront],
        "final": final})


def _result(ver: Verification, space, bud: Budget, settings, evo, search_s, total_s, table) -> Dict[str, object]:
    # Errors of the predicted fraction of dense (what --budget constrains; robust to the machine
    # getting slower or faster between the table and the verification) and of the absolute ms.
    chosen, measured, dense_of = ver.chosen, ver.measured, ver.dense_of
    pd = table.dense_ms
    others = [g for g in measured if g != space.dense()] or list(measured)
    errs = [abs(evo.history[g].predicted_ms / pd - measured[g] / dense_of[g]) / (measured[g] / dense_of[g])
            for g in others]
    abs_errs = [abs(evo.history[g].predicted_ms - measured[g]) / measured[g] for g in others]
    return {"ratios": space.ratios(chosen.genes), "search": {
        "budget": {bud.kind: bud.value, "limit_macs" if bud.on_macs else "limit_ms": ver.limit},
        "dense_ms_measured": ver.dense_ms, "chosen_ms_measured": chosen.measured_ms,
        "chosen_ms_predicted": chosen.predicted_ms, "speedup_measured": ver.dense_ms / chosen.measured_ms,
        "macs": chosen.macs, "dense_macs": table.macs(space.dense()), "fidelity": chosen.fidelity.to_dict(),
        "origin": chosen.origin, "backend": settings["backend"], "threads": settings["threads"],
        "batch": settings["batch"], "seed": settings["seed"], "model": settings["model"], "task": settings["task"],
        "img_size": settings["img_size"], "checkpoint_sha256": settings["checkpoint_sha256"],
        "calibration": settings["calibration"], "evaluated": len(evo.history), "generations": evo.generation,
        "interrupted": evo.interrupted, "latency_prediction_error": {
            "configs_measured": len(errs), "mean_abs_rel": float(np.mean(errs)), "max_abs_rel": float(np.max(errs)),
            "of": "fraction of dense", "ms_mean_abs_rel": float(np.mean(abs_errs)),
            "ms_max_abs_rel": float(np.max(abs_errs)), "table_dense_ms": pd},
        "search_s": search_s, "table_s": table.seconds, "total_s": total_s, "verification_rounds": ver.rounds,
        "vitdeploy_version": __version__}}


def front_table(history: Dict[Genes, Candidate], refs: Dict[str, Genes], chosen: Genes, space: SearchSpace,
                limit: float, bud: Budget) -> str:
    """The measured front, the references and the choice, for stdout."""
    names = {g: n for n, g in refs.items()}
    meas = [c for c in history.values() if c.measured_ms is not None]
    front = {meas[i].genes for i in pareto_front([(c.measured_ms, c.fidelity.score) for c in meas])}
    rows = sorted(meas, key=lambda c: c.measured_ms)
    lines = [f"{'':2}{'config':<14}{'measured ms':>12}{'predicted':>10}{'G MACs':>8}{'fidelity':>10}  ratios",]
    for c in rows:
        mark = "*" if c.genes == chosen else ("f" if c.genes in front else " ")
        ok = "" if bud.on_macs or c.measured_ms <= limit else " (over budget)"
        lines.append(f"{mark:<2}{names.get(c.genes, 'searched'):<14}{c.measured_ms:>12.2f}{c.predicted_ms:>10.2f}"
                     f"{c.macs / 1e9:>8.2f}{c.fidelity.score:>10.5f}  {space.ratios(c.genes)}{ok}")
    lines.append("* chosen, f on the measured latency-fidelity front; budget " + bud.fmt(limit))
    return "\n".join(lines)
