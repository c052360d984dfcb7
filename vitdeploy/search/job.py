"""`vitdeploy search`: the whole job, from checkpoint to OUT.json / OUT.search.json / OUT.png.

1. the dense model (checkpoint, or the seeded random weights `vitdeploy export` also uses);
2. calibration inputs (export preprocessing), the dense outputs they are compared against;
3. the latency table on the backend, anchored on the dense model measured end to end;
4. the evolutionary search under the predicted constraint (or exact MACs);
5. the front's best configs, dense, uniform ratios and presets exported and measured end to end,
   side by side; the chosen config is the best-scoring one that meets the budget *as measured*.
   If none of the first ones does, the next are picked with the measured/predicted ratio applied,
   twice; then the job fails (exit 1) naming the lowest latency reached.
"""

from __future__ import annotations

import json
import os
import time
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
        from vitdeploy.models.preprocess import DETECTION_INTERPOLATION

        return preprocess_images(files, img_size, spec.mean, spec.std, crop_pct=spec.crop_pct,
                                 interpolation=spec.interpolation if resize == "crop" else DETECTION_INTERPOLATION,
                                 resize=resize)

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
    if images is not None:
        files = list_images(images)[:num_images]
        x = prep(files)
        return x, None, f"{len(x)} images from {images}"
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


def _budget(budget, budget_ms, macs_budget) -> Dict[str, float]:
    given = [(k, v) for k, v in (("budget", budget), ("budget_ms", budget_ms), ("macs_budget", macs_budget))
             if v is not None]
    if len(given) != 1:
        raise UserError("give exactly one of --budget FRACTION (of the dense latency), --budget-ms MS "
                        "or --macs-budget FRACTION (of the dense MACs)")
    kind, v = given[0]
    if not np.isfinite(v) or v <= 0:
        raise UserError(f"--{kind.replace('_', '-')} must be > 0, not {v}")
    if kind != "budget_ms" and v > 1:
        raise UserError(f"--{kind.replace('_', '-')} {v} is above 1 (the dense model); give a fraction in (0, 1]")
    return {"kind": kind, "value": float(v)}


# ----------------------------------------------------------------------------------- the job

def run_search(model_name: str, out: os.PathLike, *, checkpoint=None, img_size=None,
               task: str = "backbone", budget: Optional[float] = None, budget_ms: Optional[float] = None,
               macs_budget: Optional[float] = None, backend: str = "ort", threads: Optional[int] = None,
               batch: int = 1, images=None, labels=None, num_images: int = 8, seed: int = 0,
               time_limit: Optional[float] = None, generations: int = 6, population: int = 32, parents: int = 8,
               mutation_prob: float = 0.1, resume=None, top_k: int = 3, ratio_choices: Optional[Sequence[float]] = None,
               warmup: int = 3, iters: int = 10, cache_mb: float = 2048, plot: bool = True, model=None,
               table_from=None, resize: Optional[str] = None,
               progress: Progress = lambda m: None) -> Dict[str, object]:
    """Returns the dict written to OUT.json; raises UserError (exit 2) / CheckFailed (exit 1).

    ``model`` (tests, benchmarks): a ready dense SwinTransformer to search instead of building
    ``model_name``. ``table_from``: an OUT.search.json whose latency table (same settings) is
    reused instead of measured -- several budgets on one table; same seed + table = same search."""
    from vitdeploy.engines.runners import set_threads
    from vitdeploy.models.registry import get_spec

    t_start = time.perf_counter()
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
    bud = _budget(budget, budget_ms, macs_budget)
    paths = _check_output(out)
    be = Backend(backend, threads=threads, batch=batch, warmup=warmup, iters=iters)
    be.check()
    if population < 2 or parents < 1 or generations < 0 or not 0 <= mutation_prob <= 1:
        raise UserError("need --population >= 2, --parents >= 1, --generations >= 0, 0 <= mutation prob <= 1")
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
    with temp_workdir() as tmp:
        work = Path(tmp)
        e2e = EndToEnd(model, space, be, work)
        # 3. latency table + dense end to end
        if prior is not None or reused is not None:
            table = LatencyTable.from_dict(prior["latency_table"] if prior else reused, space)
            progress(f"[2/5] latency table from {resume or table_from} ({table.seconds:.0f}s when measured)")
        else:
            progress(f"[2/5] latency table on {backend}" + (f" ({threads} threads)" if threads else "")
                     + f", batch {batch}")
            table = measure_table(model, space, be, work, e2e, progress)
        dense_ms, dense_macs = table.dense_ms, table.macs(space.dense())
        sparsest = space.sparsest()
        lo_ms, lo_macs = table.predict(sparsest), table.macs(sparsest)
        progress(f"dense {dense_ms:.2f} ms, {dense_macs / 1e9:.2f} G MACs; sparsest config predicted "
                 f"{lo_ms:.2f} ms, {lo_macs / 1e9:.2f} G MACs")
        if bud["kind"] == "macs_budget":
            limit = bud["value"] * dense_macs
            if limit < lo_macs:
                raise UserError(f"--macs-budget {bud['value']} ({limit / 1e9:.2f} G) is below what this space "
                                f"reaches: {lo_macs / dense_macs:.3f}..1 of the dense MACs")
            def feasible(g):
                return table.macs(g) <= limit
        else:
            limit = bud["value"] * dense_ms if bud["kind"] == "budget" else bud["value"]
            if limit < lo_ms:
                rng_txt = (f"{lo_ms / dense_ms:.3f}..1 of dense ({lo_ms:.2f}..{dense_ms:.2f} ms"
                           f" on {backend})")
                what = f"--budget {bud['value']}" if bud["kind"] == "budget" else f"--budget-ms {bud['value']}"
                raise UserError(f"{what} is below what the sparsest config reaches: {rng_txt}")
            def feasible(g):
                return table.predict(g) <= limit

        # 4. search
        evaluator = FidelityEvaluator(model, space, x, labels=y, cache_mb=cache_mb)

        def score(g: Genes) -> Candidate:
            return Candidate(g, table.predict(g), table.macs(g), evaluator(g), "", 0)

        refs = {"dense": space.dense(), **space.uniform(), **space.presets()}
        evo = Evolution(space, feasible, score, seed=seed, population_size=population, parents=parents,
                        mutation_prob=mutation_prob)
        if prior is not None:
            st = prior["state"]
            evo.history = {tuple(c["genes"]): Candidate.from_dict(c) for c in prior["candidates"]}
            evo.population = [tuple(g) for g in st["population"]]
            evo.generation = st["generation"]
            if st.get("rng_state"):
                evo.rng.bit_generator.state = st["rng_state"]
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
        measured: Dict[Genes, float] = {}
        macs_kind = bud["kind"] == "macs_budget"
        # references near the budget (the rest stay at their predicted latency in the plot)
        cost = table.macs if macs_kind else table.predict
        near = [g for g in dict.fromkeys(refs.values())
                if g != space.dense() and 0.6 * limit <= cost(g) <= 1.25 * limit]
        chosen, final_limit, dense_final = None, limit, dense_ms
        ranked = sorted(evo.history.values(), key=lambda c: c.key(), reverse=True)
        # The table was timed minutes earlier, possibly under another load: predictions are
        # brought to the verification's scale (dense measured beside the candidates), then
        # corrected by the measured/predicted ratio of the searched configs already measured.
        correction = 1.0
        dense_of: Dict[Genes, float] = {}  # each config's dense, timed in the same round
        for attempt in range(3):
            def fits(c: Candidate) -> bool:
                if macs_kind:
                    return c.macs <= limit
                if bud["kind"] == "budget":  # fractions of dense: the table's vs the round's
                    return c.predicted_ms / dense_ms * correction <= bud["value"]
                return c.predicted_ms * correction <= limit

            better = [c for c in ranked if c.genes not in measured and fits(c)
                      and (chosen is None or c.key() > chosen.key())]
            picks = [c.genes for c in better][:top_k]
            if attempt and not picks:
                break
            todo = list(dict.fromkeys([space.dense()] + picks + ([] if attempt else near)))
            times = e2e.time(todo)
            round_dense = times[0]  # the budget fraction is of the dense model timed beside them
            for g, t in zip(todo, times):
                if g not in measured or g == space.dense():
                    measured[g] = t
                    dense_of[g] = round_dense
                    evo.history[g].measured_ms = t
            ok = [evo.history[g] for g in measured if g != space.dense() or bud["value"] >= 1
                  if (table.macs(g) <= limit if macs_kind else
                      measured[g] <= (bud["value"] * dense_of[g] if bud["kind"] == "budget" else limit))]
            if ok:
                chosen = max(ok, key=lambda c: (c.key(), -c.measured_ms))
                dense_final = dense_of[chosen.genes]
            else:
                dense_final = round_dense
            final_limit = bud["value"] * dense_final if bud["kind"] == "budget" else limit
            if macs_kind:
                break
            if bud["kind"] == "budget":
                ratios = [(measured[g] / dense_of[g]) / (evo.history[g].predicted_ms / dense_ms) for g in picks]
            else:
                ratios = [measured[g] / evo.history[g].predicted_ms for g in picks]
            if ratios:
                correction = max(1.0, float(np.median(ratios)))
            progress(f"verification round {attempt + 1}: "
                     + (f"best within {final_limit:.2f} ms: {chosen.measured_ms:.2f} ms, fidelity "
                        f"{chosen.fidelity.score:.5f}" if chosen else f"none within {final_limit:.2f} ms")
                     + f"; searched configs measured/predicted {correction:.3f}")
        total_s = time.perf_counter() - t_start
        final = {"measured": {"".join(map(str, g)): ms for g, ms in measured.items()},
                 "dense_ms_same_round": {"".join(map(str, g)): ms for g, ms in dense_of.items()},
                 "dense_ms_final": dense_final,
                 "limit_final": final_limit, "search_s": search_s, "total_s": total_s,
                 "interrupted": evo.interrupted}
        save(evo, final)
        if chosen is None:
            low_g = min(measured, key=measured.get)
            raise CheckFailed(f"no config meets the budget of {final_limit:.2f} ms as measured on {backend}; the "
                              f"lowest latency reached was {measured[low_g]:.2f} ms ({space.ratios(low_g)}); "
                              f"raise the budget (see {paths['search']})")

        # 6. outputs
        result = _result(chosen, space, bud, final_limit, dense_final, dense_macs, settings, evo, measured,
                         search_s, total_s, table, dense_of)
        from vitdeploy.fileio import atomic_write_json

        atomic_write_json(paths["json"], result)
        if plot:
            from vitdeploy.search.plot import plot_search

            plot_search(paths["png"], evo.history, refs, chosen.genes, space, final_limit, dense_final,
                        title=f"{model_name} {img_size.label()} {task} on {backend}")
        progress(f"[5/5] wrote {paths['json']}, {paths['search']}" + (f", {paths['png']}" if plot else ""))
        result["_front_table"] = front_table(evo.history, refs, chosen.genes, space, final_limit)
        return result


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
        "format": SEARCH_FORMAT, "vitdeploy_version": __version__, "settings": settings, "budget": bud,
        "limit": limit, "space": space.describe(), "latency_table": table.to_dict(), "state": evo.state(),
        "references": {n: list(g) for n, g in refs.items()},
        "candidates": [c.to_dict(space) | {"reference": ref_names.get(c.genes)} for c in cands],
        "front_predicted": [list(c.genes) for c in front], "front_measured": [list(c.genes) for c in mfront],
        "final": final})


def _result(chosen: Candidate, space, bud, limit, dense_ms, dense_macs, settings, evo, measured, search_s,
            total_s, table, dense_of) -> Dict[str, object]:
    # Errors of the predicted fraction of dense (what --budget constrains; robust to the machine
    # getting slower or faster between the table and the verification) and of the absolute ms.
    pd = table.dense_ms
    others = [g for g in measured if g != space.dense()] or list(measured)
    errs = [abs(evo.history[g].predicted_ms / pd - measured[g] / dense_of[g]) / (measured[g] / dense_of[g])
            for g in others]
    abs_errs = [abs(evo.history[g].predicted_ms - measured[g]) / measured[g] for g in others]
    return {"ratios": space.ratios(chosen.genes), "search": {
        "budget": {bud["kind"]: bud["value"], "limit_ms" if bud["kind"] != "macs_budget" else "limit_macs": limit},
        "dense_ms_measured": dense_ms, "chosen_ms_measured": chosen.measured_ms,
        "chosen_ms_predicted": chosen.predicted_ms, "speedup_measured": dense_ms / chosen.measured_ms,
        "macs": chosen.macs, "dense_macs": dense_macs, "fidelity": chosen.fidelity.to_dict(),
        "origin": chosen.origin, "backend": settings["backend"], "threads": settings["threads"],
        "batch": settings["batch"], "seed": settings["seed"], "model": settings["model"], "task": settings["task"],
        "img_size": settings["img_size"], "checkpoint_sha256": settings["checkpoint_sha256"],
        "calibration": settings["calibration"], "evaluated": len(evo.history), "generations": evo.generation,
        "interrupted": evo.interrupted, "latency_prediction_error": {
            "configs_measured": len(errs), "mean_abs_rel": float(np.mean(errs)), "max_abs_rel": float(np.max(errs)),
            "of": "fraction of dense", "ms_mean_abs_rel": float(np.mean(abs_errs)),
            "ms_max_abs_rel": float(np.max(abs_errs)), "table_dense_ms": pd},
        "search_s": search_s, "table_s": table.seconds, "total_s": total_s, "vitdeploy_version": __version__}}


def front_table(history: Dict[Genes, Candidate], refs: Dict[str, Genes], chosen: Genes, space: SearchSpace,
                limit: float) -> str:
    """The measured front, the references and the choice, for stdout."""
    names = {g: n for n, g in refs.items()}
    meas = [c for c in history.values() if c.measured_ms is not None]
    front = {meas[i].genes for i in pareto_front([(c.measured_ms, c.fidelity.score) for c in meas])}
    rows = sorted(meas, key=lambda c: c.measured_ms)
    lines = [f"{'':2}{'config':<14}{'measured ms':>12}{'predicted':>10}{'G MACs':>8}{'fidelity':>10}  ratios",]
    for c in rows:
        mark = "*" if c.genes == chosen else ("f" if c.genes in front else " ")
        ok = "" if limit >= 1e6 or c.measured_ms <= limit else " (over budget)"
        lines.append(f"{mark:<2}{names.get(c.genes, 'searched'):<14}{c.measured_ms:>12.2f}{c.predicted_ms:>10.2f}"
                     f"{c.macs / 1e9:>8.2f}{c.fidelity.score:>10.5f}  {space.ratios(c.genes)}{ok}")
    lines.append("* chosen, f on the measured latency-fidelity front; budget "
                 + (f"{limit:.2f} ms" if limit < 1e6 else f"{limit / 1e9:.2f} G MACs"))
    return "\n".join(lines)
