"""SparseViT on CPU: dense Swin vs pruned configs, measured speedup beside the FLOP-ideal one.

At 672x672 (SparseViT's resolution), batch 1, two threads, backbone task (the four feature maps
SparseViT's detector consumes). For each config: our ONNX on ONNX Runtime and the PyTorch eager
model, median latency, the ideal speedup (dense MACs / pruned MACs, counted from the ops PyTorch
runs) and the measured one, and — from ONNX Runtime's profiler — the share of the pruned model's
time spent in window gather / scatter / top-k (and in the importance score that feeds top-k).

    .venv/bin/python benchmarks/sparsevit_cpu.py [--model swin_t] [--img-size 672] [--iters 10]

Writes benchmarks/results/sparsevit_cpu.json and benchmarks/results/sparsevit_cpu.png.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitdeploy import jobs  # noqa: E402
from vitdeploy.engines.bench import bench_runner  # noqa: E402
from vitdeploy.engines.runners import OrtRunner, TorchRunner, set_threads  # noqa: E402
from vitdeploy.export.onnx import output_names_for  # noqa: E402
from vitdeploy.models.registry import random_images  # noqa: E402

CONFIGS = [("dense", None), ("cfg1", "cfg1"), ("cfg2", "cfg2"), ("cfg3", "cfg3"),
           ("uniform 0.2", "0.2"), ("uniform 0.4", "0.4"), ("uniform 0.6", "0.6"), ("uniform 0.8", "0.8")]


def window_op_share(profile_json: str) -> dict:
    """Share of node time in the window ops, from an ORT profile.

    The custom nodes run through their inlined function bodies, whose node names keep the call
    node's name (`.../WindowGather...`); TopK and its score (ReduceL2 on the |x| map) are
    attributed by op type."""
    events = json.loads(Path(profile_json).read_text())
    per_kind = collections.Counter()
    total = 0.0
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        dur = float(e.get("dur", 0))
        total += dur
        name = e["name"]
        op = e.get("args", {}).get("op_name", "")
        if "WindowGather" in name or "window_gather" in name:
            per_kind["gather"] += dur
        elif "WindowScatter" in name or "window_scatter" in name:
            per_kind["scatter"] += dur
        elif op == "TopK":
            per_kind["topk"] += dur
        elif op == "ReduceL2":
            per_kind["score"] += dur
    return {k: (per_kind[k] / total if total else 0.0) for k in ("gather", "scatter", "topk", "score")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="swin_t")
    ap.add_argument("--img-size", type=int, default=672)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--torch-iters", type=int, default=5)
    ap.add_argument("--configs", nargs="+", default=[c for c, _ in CONFIGS])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sparsevit_cpu"))
    args = ap.parse_args(argv)

    set_threads(args.threads)
    task = "backbone"
    x = random_images(1, args.img_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vd-sparsevit-") as tmp:
        for label, spec in CONFIGS:
            if label not in args.configs:
                continue
            onnx_path = Path(tmp) / f"{label.replace(' ', '_')}.onnx"
            rep = jobs.export(args.model, onnx_path, sparsity=spec, img_size=args.img_size, task=task,
                              validate=False)
            dense_macs = rep.get("dense_macs", rep["macs"])
            ort_r = OrtRunner(str(onnx_path), threads=args.threads)
            o = bench_runner(ort_r, x, warmup=args.warmup, iters=args.iters, threads=args.threads)
            # profile in a separate session so profiling overhead stays out of the latency
            prof_r = OrtRunner(str(onnx_path), threads=args.threads, profile_prefix=str(Path(tmp) / "prof"))
            for _ in range(3):
                prof_r.infer({"images": x})
            share = window_op_share(prof_r.end_profiling())
            ref = jobs.build_reference(args.model, img_size=args.img_size, task=task, sparsity=spec)
            t = bench_runner(TorchRunner(ref, output_names=output_names_for(task), threads=args.threads), x,
                             warmup=1, iters=args.torch_iters, threads=args.threads)
            rows.append({"config": label, "sparsity": rep["sparsity"], "macs_g": rep["macs"] / 1e9,
                         "dense_macs_g": dense_macs / 1e9, "ideal_speedup": dense_macs / rep["macs"],
                         "ort_ms": o["median_ms"], "torch_ms": t["median_ms"], "ort_share": share,
                         "ort": o, "torch": t})
            print(f"{label:<12} MACs {rep['macs'] / 1e9:6.2f} G  ort {o['median_ms']:8.1f} ms  torch "
                  f"{t['median_ms']:8.1f} ms  gather+scatter {100 * (share['gather'] + share['scatter']):.2f}%",
                  flush=True)

    dense = next(r for r in rows if r["config"] == "dense")
    for r in rows:
        r["ort_speedup"] = dense["ort_ms"] / r["ort_ms"]
        r["torch_speedup"] = dense["torch_ms"] / r["torch_ms"]
        r["efficiency"] = r["ort_speedup"] / r["ideal_speedup"]
    print()
    print(f"{args.model} backbone at {args.img_size}x{args.img_size}, batch 1, {args.threads} threads")
    print("| config | GMACs | ideal speedup | ORT ms | ORT speedup | measured / ideal | gather+scatter share | top-k+score share | PyTorch eager ms | eager speedup |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["ort_share"]
        print(f"| {r['config']} | {r['macs_g']:.2f} | {r['ideal_speedup']:.2f}x | {r['ort_ms']:.1f} | {r['ort_speedup']:.2f}x "
              f"| {r['efficiency']:.2f} | {100 * (s['gather'] + s['scatter']):.2f}% | {100 * (s['topk'] + s['score']):.2f}% "
              f"| {r['torch_ms']:.1f} | {r['torch_speedup']:.2f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"model": args.model, "img_size": args.img_size,
                                                    "threads": args.threads, "rows": rows}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rs = sorted(rows, key=lambda r: r["macs_g"], reverse=True)
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.plot([r["macs_g"] for r in rs], [dense["ort_ms"] / r["ideal_speedup"] for r in rs], "--", color="gray",
                label="ideal (dense latency x MACs ratio)")
        ax.plot([r["macs_g"] for r in rs], [r["ort_ms"] for r in rs], "o-", label="ONNX Runtime (measured)")
        ax.plot([r["macs_g"] for r in rs], [r["torch_ms"] for r in rs], "s-", label="PyTorch eager (measured)")
        for r in rs:
            ax.annotate(r["config"], (r["macs_g"], r["ort_ms"]), textcoords="offset points", xytext=(3, 5), fontsize=7)
        ax.invert_xaxis()
        ax.set_xlabel("GMACs (lower = sparser)")
        ax.set_ylabel("latency, ms (batch 1)")
        ax.set_title(f"SparseViT ({args.model}) at {args.img_size}px, CPU, {args.threads} threads")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=120)
        print(f"wrote {out.with_suffix('.png')}")
    except ImportError:
        print("matplotlib not installed: no plot")
    print(f"wrote {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
