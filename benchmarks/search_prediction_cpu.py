"""How far the search's additive latency model is from end-to-end timings, and in which stage.

Takes the latency table of a finished search (OUT.search.json: same model, size, backend,
threads) and times, side by side with dense (round-robin, the `vitdeploy bench` protocol, more
rounds than the search uses), probe configs that prune one stage at a time (so an error can be
pinned on that stage's terms), uniform ratios, the presets and the search's own measured picks.
For each: the predicted fraction of dense (table) vs the measured one (this pool) and the error.

    .venv/bin/python benchmarks/search_prediction_cpu.py OUT.search.json [--rounds 5] [--iters 20]

Writes benchmarks/results/search_prediction_cpu.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitdeploy.engines.runners import set_threads  # noqa: E402
from vitdeploy.fileio import atomic_write_json  # noqa: E402
from vitdeploy.jobs import build_reference  # noqa: E402
from vitdeploy.search.latency import Backend, EndToEnd, LatencyTable, temp_workdir  # noqa: E402
from vitdeploy.search.space import SearchSpace  # noqa: E402


def probes(space: SearchSpace, ratio_tenths: int):
    """One stage pruned at a time (all its pairs at the ratio; a multi-pair stage also with only
    its last pair pruned), the rest dense."""
    out = {}
    for s, sl in enumerate(space.slices):
        if ratio_tenths not in space.choices[s]:
            continue
        g = list(space.dense())
        for i in range(sl.start, sl.stop):
            g[i] = ratio_tenths
        out[f"stage {s} at 0.{ratio_tenths}"] = tuple(g)
        if sl.stop - sl.start > 1:  # a stage mixing dense and pruned pairs runs another code path
            g = list(space.dense())
            g[sl.stop - 1] = ratio_tenths
            out[f"stage {s} last pair at 0.{ratio_tenths}"] = tuple(g)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("search_json", help="OUT.search.json of a finished search (its latency table is tested)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20, help="timed iterations per model, over all rounds")
    ap.add_argument("--probe-ratio", type=int, default=5, help="tenths: the ratio of the one-stage probes")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search_prediction_cpu.json"))
    args = ap.parse_args()

    t0 = time.perf_counter()
    log = lambda m: print(f"[{time.perf_counter() - t0:7.1f}s] {m}", file=sys.stderr, flush=True)  # noqa: E731
    st = json.loads(Path(args.search_json).read_text())
    cfg = st["settings"]
    set_threads(cfg["threads"])
    model = build_reference(cfg["model"], checkpoint=cfg["checkpoint"], img_size=cfg["img_size"], task=cfg["task"],
                            warn=log)
    space = SearchSpace.for_model(model.depths, model.img_size)  # the default ratios, as the search used
    table = LatencyTable.from_dict(st["latency_table"], space)
    measured_picks = {f"searched {c['genes']}": tuple(c["genes"]) for c in st["candidates"]
                      if c.get("measured_ms") and not c.get("reference")}
    pool = {"dense": space.dense(), **probes(space, args.probe_ratio),
            **{k: v for k, v in space.uniform().items() if k in ("uniform 0.3", "uniform 0.5", "uniform 0.7")},
            **space.presets(), **measured_picks}
    genes = list(dict.fromkeys(pool.values()))
    be = Backend("ort", threads=cfg["threads"], batch=cfg["batch"], iters=args.iters)
    with temp_workdir() as tmp, contextlib.closing(EndToEnd(model, space, be, Path(tmp))) as e2e:
        log(f"exporting {len(genes)} configs")
        e2e.export_all(genes)
        log(f"timing {len(genes)} configs side by side, {args.rounds} rounds")
        ms = dict(zip(genes, e2e.time(genes, rounds=args.rounds)))
        rounds = dict(zip(genes, be.last_rounds))
    dense_ms = ms[space.dense()]
    rows = {}
    for name, g in pool.items():
        pred = table.predict(g) / table.dense_ms
        meas = ms[g] / dense_ms
        rows[name] = {"genes": list(g), "ratios": space.ratios(g), "predicted_fraction": pred,
                      "measured_fraction": meas, "error": pred / meas - 1, "ms": ms[g],
                      "round_spread": (max(rounds[g]) - min(rounds[g])) / min(rounds[g])}
    errs = [abs(r["error"]) for n, r in rows.items() if n != "dense"]
    result = {"search_json": str(args.search_json), "settings": cfg, "dense_ms": dense_ms,
              "table_dense_ms": table.dense_ms, "rounds": args.rounds, "iters": args.iters, "rows": rows,
              "mean_abs_error": float(np.mean(errs)), "max_abs_error": float(np.max(errs)),
              "total_s": time.perf_counter() - t0}
    atomic_write_json(Path(args.out), result)
    print(f"{cfg['model']} {cfg['img_size']} {cfg['task']}, ORT {cfg['threads']} threads: dense {dense_ms:.1f} ms "
          f"here, {table.dense_ms:.1f} ms in the table")
    print(f"{'config':<34}{'predicted':>10}{'measured':>10}{'error':>8}{'spread':>8}")
    for name, r in rows.items():
        print(f"{name:<34}{r['predicted_fraction']:>10.3f}{r['measured_fraction']:>10.3f}"
              f"{100 * r['error']:>7.1f}%{100 * r['round_spread']:>7.1f}%")
    print(f"mean |error| {100 * result['mean_abs_error']:.1f} %, max {100 * result['max_abs_error']:.1f} %; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
