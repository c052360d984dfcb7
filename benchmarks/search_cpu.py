"""`vitdeploy search` on CPU: the searched config vs the best uniform ratio and the presets that
meet the same measured budget, at several budgets.

Protocol (defaults = the issue's: Swin-T backbone at 672, ORT CPU, 2 threads, batch 1, 8 images,
budgets 0.6 / 0.7 / 0.8 of dense, <= 30 min per budget):
1. one latency table (measured by the first budget's search, reused by the others: same backend,
   same machine, so the budgets differ only in the constraint);
2. per budget a full search (`vitdeploy.search.run.run_search`, the CLI's code path), its own
   end-to-end verification and its own OUT.json;
3. then one side-by-side pool: dense, every uniform ratio, the presets and the three chosen
   configs exported and timed interleaved (round-robin, `vitdeploy bench` protocol), so the
   comparison at each budget uses latencies measured together. MACs are counted from the ops
   PyTorch runs; fidelity is the search's score on the same calibration inputs.

    .venv/bin/python benchmarks/search_cpu.py [--img-size 672] [--budgets 0.6 0.7 0.8]
        [--threads 2] [--images DIR] [--checkpoint PATH] [--generations 6] [--population 32]
        [--time-limit 1800]

Without --checkpoint/--images the weights are vitdeploy's seeded random ones and the inputs
random: the fidelity numbers then rank configs for *this* network, not for a trained detector.
Writes benchmarks/results/search_cpu.json (and the per-budget search files beside it).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitdeploy.engines.runners import set_threads  # noqa: E402
from vitdeploy.errors import CheckFailed  # noqa: E402
from vitdeploy.fileio import atomic_write_json  # noqa: E402
from vitdeploy.jobs import build_reference  # noqa: E402
from vitdeploy.models.registry import get_spec  # noqa: E402
from vitdeploy.search.fidelity import FidelityEvaluator  # noqa: E402
from vitdeploy.search.latency import Backend, EndToEnd, temp_workdir  # noqa: E402
from vitdeploy.search.run import calibration_inputs, run_search, search_paths  # noqa: E402
from vitdeploy.search.space import SearchSpace  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="swin_t")
    ap.add_argument("--img-size", type=int, default=672)
    ap.add_argument("--task", default="backbone", choices=("backbone", "classify"))
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.6, 0.7, 0.8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-images", type=int, default=8)
    ap.add_argument("--images")
    ap.add_argument("--checkpoint")
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--population", type=int, default=32)
    ap.add_argument("--parents", type=int, default=8)
    ap.add_argument("--time-limit", type=float, default=1800, help="seconds of evolution per budget")
    ap.add_argument("--iters", type=int, default=15, help="timed iterations per model in the final pool")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search_cpu.json"))
    args = ap.parse_args()

    set_threads(args.threads)
    t0 = time.perf_counter()
    out = Path(args.out)
    work = out.parent / "search_cpu"
    work.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(f"[{time.perf_counter() - t0:7.1f}s] {m}", file=sys.stderr, flush=True)  # noqa: E731
    model = build_reference(args.model, checkpoint=args.checkpoint, img_size=args.img_size, task=args.task, warn=log)

    runs, failed, table_from = [], [], None
    for b in args.budgets:
        t = time.perf_counter()
        o = work / f"budget_{b:.2f}.json"
        try:
            res = run_search(args.model, o, checkpoint=args.checkpoint, img_size=args.img_size, task=args.task,
                             budget=b, threads=args.threads, images=args.images, num_images=args.num_images,
                             generations=args.generations, population=args.population, parents=args.parents,
                             time_limit=args.time_limit, model=model, table_from=table_from, progress=log)
        except CheckFailed as e:  # recorded, and the other budgets still run
            log(f"budget {b}: {e}")
            failed.append({"budget": b, "check_failed": str(e)})
            table_from = table_from or search_paths(o)["search"]
            continue
        res.pop("_front_table")
        runs.append({"budget": b, "wall_s": time.perf_counter() - t, "result": res})
        table_from = table_from or search_paths(o)["search"]

    # side-by-side pool
    space = SearchSpace.for_model(model.depths, args.img_size)
    refs = {"dense": space.dense(), **space.uniform(), **space.presets()}
    chosen = {f"searched @{r['budget']}": space.from_ratios(r["result"]["ratios"]) for r in runs}
    pool = {**refs, **chosen}
    x, y, calib = calibration_inputs(args.img_size, get_spec("swin_t"), images=args.images,
                                     num_images=args.num_images, warn=log)
    ev = FidelityEvaluator(model, space, x, labels=y)
    be = Backend("ort", threads=args.threads, iters=args.iters)
    with temp_workdir() as tmp, contextlib.closing(EndToEnd(model, space, be, Path(tmp))) as e2e:
        genes = list(dict.fromkeys(pool.values()))
        log(f"final pool: {len(genes)} models exported and timed side by side")
        ms = dict(zip(genes, e2e.time(genes, rounds=3)))
        macs = {g: e2e.macs(g) for g in genes}
    fid = {g: ev(g).score for g in genes}
    dense_ms = ms[space.dense()]
    rows = {name: {"ratios": space.ratios(g), "ms": ms[g], "fraction_of_dense": ms[g] / dense_ms,
                   "gmacs": macs[g] / 1e9, "fidelity": fid[g]} for name, g in pool.items()}
    comparison = []
    for r in runs:
        b = r["budget"]
        limit = b * dense_ms
        within = {n: v for n, v in rows.items() if v["ms"] <= limit and not n.startswith("searched")}
        best_uni = max((n for n in within if n.startswith("uniform")), key=lambda n: within[n]["fidelity"],
                       default=None)
        presets = [n for n in within if n.startswith("cfg")]
        s = r["result"]["search"]
        comparison.append({
            "budget": b, "limit_ms": limit, "searched": rows[f"searched @{b}"],
            "searched_meets_budget_in_pool": rows[f"searched @{b}"]["ms"] <= limit,
            "best_uniform": best_uni and {"name": best_uni, **rows[best_uni]},
            "presets_within": {n: rows[n] for n in presets},
            "search_wall_s": r["wall_s"], "evaluated": s["evaluated"],
            "prediction_error": s["latency_prediction_error"], "in_run": {
                "dense_ms": s["dense_ms_measured"], "chosen_ms": s["chosen_ms_measured"],
                "chosen_ms_predicted": s["chosen_ms_predicted"]}})
    result = {"model": args.model, "img_size": args.img_size, "task": args.task, "threads": args.threads,
              "backend": "ort (CPU)", "calibration": calib, "checkpoint": args.checkpoint,
              "settings": {"generations": args.generations, "population": args.population, "parents": args.parents,
                           "time_limit_s": args.time_limit, "num_images": args.num_images},
              "table_s": runs[0]["result"]["search"]["table_s"] if runs else None, "pool": rows,
              "comparison": comparison, "failed": failed,
              "total_s": time.perf_counter() - t0}
    atomic_write_json(out, result)

    print(f"{args.model} {args.img_size}px {args.task}, ORT CPU {args.threads} threads; {calib}; "
          f"dense {dense_ms:.1f} ms, {macs[space.dense()] / 1e9:.2f} G MACs")
    print(f"{'budget':>7} {'config':<16}{'ms':>9}{'x dense':>9}{'G MACs':>8}{'fidelity':>10}  ratios")
    for c in comparison:
        items = [("searched", c["searched"])]
        if c["best_uniform"]:
            items.append((c["best_uniform"]["name"], c["best_uniform"]))
        items += list(c["presets_within"].items())
        for name, v in items:
            print(f"{c['budget']:>7.2f} {name:<16}{v['ms']:>9.1f}{v['fraction_of_dense']:>9.3f}{v['gmacs']:>8.2f}"
                  f"{v['fidelity']:>10.5f}  {v['ratios']}")
        err = c["prediction_error"]
        print(f"{'':>7} search {c['search_wall_s']:.0f}s, {c['evaluated']} configs evaluated, predicted vs measured "
              f"fraction of dense: mean {100 * err['mean_abs_rel']:.1f}% max {100 * err['max_abs_rel']:.1f}%")
    print(f"wrote {out} ({result['total_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
