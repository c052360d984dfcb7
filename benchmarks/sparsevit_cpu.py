"""SparseViT on CPU: dense Swin vs pruned configs, measured speedup beside the FLOP-ideal one.

At 672x672 (SparseViT's resolution), batch 1, two threads, backbone task (the four feature maps
SparseViT's detector consumes). For each config: our ONNX on ONNX Runtime and the PyTorch eager
model, median latency, the ideal speedup (dense MACs / pruned MACs, counted from the ops PyTorch
runs) and the measured one, and -- from ONNX Runtime's profiler -- the share of the pruned model's
node time spent in window gather / scatter / top-k and in the importance score that feeds top-k.

Noise: the machine may be shared, so configs are not timed one after another. All models are
built first, then every timing round runs each config once (dense included), and each config's
latency is the median over rounds; a load spike therefore hits all configs alike instead of
skewing one ratio. Same protocol as ``vitdeploy bench`` (``infer`` host-to-host, synchronised).

    .venv/bin/python benchmarks/sparsevit_cpu.py [--model swin_t] [--img-size 672 | H W] [--rounds 15]
        [--configs dense cfg2 ...] [--sparsity-file LABEL=PATH ...] [--no-torch]

Each config is exported by a `vitdeploy export` child, as a user runs it (reference outputs and the
ORT parity check included); its wall time and peak RSS (the child's own, from wait4) are reported.
`--sparsity-file searched=sparse.json` adds a config from `vitdeploy search`.

Writes benchmarks/results/sparsevit_cpu.json and benchmarks/results/sparsevit_cpu.png.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitdeploy import jobs  # noqa: E402
from vitdeploy.engines.runners import OrtRunner, TorchRunner, set_threads  # noqa: E402
from vitdeploy.export.onnx import output_names_for  # noqa: E402
from vitdeploy.fileio import atomic_write_json  # noqa: E402
from vitdeploy.models.preprocess import random_images  # noqa: E402
from vitdeploy.models.size import ImageSize  # noqa: E402
from vitdeploy.validation.latency import summarize  # noqa: E402

CONFIGS = [("dense", None), ("cfg1", "cfg1"), ("cfg2", "cfg2"), ("cfg3", "cfg3"),
           ("uniform 0.2", "0.2"), ("uniform 0.4", "0.4"), ("uniform 0.6", "0.6"), ("uniform 0.8", "0.8")]

# ORT inlines the vitdeploy::WindowGather/WindowScatter function bodies and the node names it
# profiles are its own (Gather_677, ScatterND_601), so time is attributed by op type:
# Kinds of ORT node time reported per config. ORT inlines the WindowGather/WindowScatter function
# bodies, and the inlined nodes get names that are not in the exported graph: so a node that is
# not a top-level graph node (and not an ORT fusion, whose name carries a "/") ran inside a window
# op. That is exactly the work the TensorRT plugin replaces.
SHARE_KINDS = {
    "window_gather": "Gather nodes inside WindowGather bodies",
    "window_scatter": "ScatterND nodes inside WindowScatter bodies (ORT copies the base out of place)",
    "window_index": "row-index math inside the window-op bodies (Range/Mul/Add/Reshape/Shape/...)",
    "layout_gather": "top-level Gather: regular<->shifted relayout, shift-mask and window->token tables",
    "topk": "TopK",
    "score": "importance score: Abs + ReduceMean (channel mean |x|) + ReduceL2 (per window)",
}
_SCORE_OPS = {"Abs", "ReduceMean", "ReduceL2"}


def window_op_share(profile_json: str, onnx_path: Path) -> dict:
    """Share of all ORT node time per kind (``SHARE_KINDS``)."""
    import onnx

    top = {n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node}
    events = json.loads(Path(profile_json).read_text())
    per_kind = collections.Counter()
    total = 0.0
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        dur = float(e.get("dur", 0))
        total += dur
        name = e["name"][: -len("_kernel_time")]
        op = e.get("args", {}).get("op_name", "")
        in_window_op = name not in top and "/" not in name
        if in_window_op and op == "Gather":
            per_kind["window_gather"] += dur
        elif in_window_op and op == "ScatterND":
            per_kind["window_scatter"] += dur
        elif in_window_op and op in ("Range", "Mul", "Add", "Reshape", "Shape", "Concat", "Unsqueeze", "Identity"):
            per_kind["window_index"] += dur
        elif op == "Gather":
            per_kind["layout_gather"] += dur
        elif op == "TopK":
            per_kind["topk"] += dur
        elif op in _SCORE_OPS:
            per_kind["score"] += dur
    return {k: (per_kind[k] / total if total else 0.0) for k in SHARE_KINDS}


def window_ops(share: dict) -> float:
    return share["window_gather"] + share["window_scatter"] + share["window_index"]


def cli_export(model: str, size: ImageSize, spec, out: Path) -> dict:
    """`vitdeploy export` in a child: (report, wall seconds, the child's peak RSS in MB)."""
    exe = Path(sys.executable).with_name("vitdeploy")
    cmd = [str(exe), "export", model, "--task", "backbone", "--img-size", str(size.h), str(size.w), "-o", str(out)]
    if spec is not None:
        cmd += ["--sparsity", spec]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"export of {spec} failed:\n{err[-2000:]}")
    report = json.loads(out.with_suffix(".report.json").read_text())
    return {"report": report, "export_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def interleaved(runners: dict, x, rounds: int, warmup: int) -> dict:
    """Per label: ``summarize`` of ``rounds`` timings, taken round-robin over all runners."""
    feeds = {label: {r.inputs[0].name: x} for label, r in runners.items()}
    for label, r in runners.items():
        for _ in range(warmup):
            r.infer(feeds[label])
        r.synchronize()
    times = {label: [] for label in runners}
    for _ in range(rounds):
        for label, r in runners.items():
            t0 = time.perf_counter()
            r.infer(feeds[label])
            r.synchronize()
            times[label].append(time.perf_counter() - t0)
    out = {}
    for label, ts in times.items():
        st = {"backend": runners[label].name, "batch": int(x.shape[0]), "warmup": warmup, "iters": len(ts),
              "timing_scope": "infer() host-to-host, round-robin over configs"}
        st.update(summarize(ts, int(x.shape[0])))
        out[label] = st
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="swin_t")
    ap.add_argument("--img-size", nargs="+", default=["672"], help="N or H W")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15, help="ORT timing rounds (each runs every config once)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--torch-rounds", type=int, default=5)
    ap.add_argument("--configs", nargs="+", default=[c for c, _ in CONFIGS])
    ap.add_argument("--sparsity-file", action="append", default=[], metavar="LABEL=PATH",
                    help="an extra config from a sparsity JSON (e.g. vitdeploy search's output)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager timings")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sparsevit_cpu"))
    args = ap.parse_args(argv)

    set_threads(args.threads)
    task = "backbone"
    size = ImageSize.parse(args.img_size)
    x = random_images(1, size)
    selected = [(label, spec) for label, spec in CONFIGS if label in args.configs]
    for item in args.sparsity_file:
        label, _, path = item.partition("=")
        selected.append((label, str(Path(path).resolve())))
    if "dense" not in [label for label, _ in selected]:
        ap.error("--configs must include dense (the speedup baseline)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="vd-sparsevit-") as tmp:
        reps, paths = {}, {}
        for label, spec in selected:
            paths[label] = Path(tmp) / f"{label.replace(' ', '_')}.onnx"
            reps[label] = cli_export(args.model, size, spec, paths[label])
            print(f"exported {label} in {reps[label]['export_s']:.1f} s, peak RSS {reps[label]['peak_rss_mb']:.0f} MB",
                  flush=True)
        ort_runners = {label: OrtRunner(str(paths[label]), threads=args.threads) for label, _ in selected}
        ort = interleaved(ort_runners, x, args.rounds, args.warmup)
        del ort_runners
        shares = {}
        for label, _ in selected:  # separate sessions: profiling overhead stays out of the latency
            prof_r = OrtRunner(str(paths[label]), threads=args.threads, profile_prefix=str(Path(tmp) / "prof"))
            for _ in range(3):
                prof_r.infer({"images": x})
            shares[label] = window_op_share(prof_r.end_profiling(), paths[label])
        eager = {}
        if not args.no_torch:
            torch_runners = {label: TorchRunner(jobs.build_reference(args.model, img_size=size, task=task,
                                                                     sparsity=spec),
                                                output_names=output_names_for(task), threads=args.threads)
                             for label, spec in selected}
            eager = interleaved(torch_runners, x, args.torch_rounds, 1)
            del torch_runners
    for label, _ in selected:
        rep, o, t, share = reps[label]["report"], ort[label], eager.get(label), shares[label]
        dense_macs = rep.get("dense_macs", rep["macs"])
        rows.append({"config": label, "sparsity": rep["sparsity"], "macs_g": rep["macs"] / 1e9,
                     "dense_macs_g": dense_macs / 1e9, "ideal_speedup": dense_macs / rep["macs"],
                     "ort_ms": o["median_ms"], "torch_ms": t["median_ms"] if t else None, "ort_share": share,
                     "export_s": reps[label]["export_s"], "export_peak_rss_mb": reps[label]["peak_rss_mb"],
                     "ort": o, "torch": t})
        print(f"{label:<12} MACs {rep['macs'] / 1e9:6.2f} G  ort {o['median_ms']:8.1f} ms  torch "
              f"{t['median_ms'] if t else float('nan'):8.1f} ms  gather+scatter {100 * window_ops(share):.2f}%",
              flush=True)

    dense = next(r for r in rows if r["config"] == "dense")
    for r in rows:
        r["ort_speedup"] = dense["ort_ms"] / r["ort_ms"]
        r["torch_speedup"] = dense["torch_ms"] / r["torch_ms"] if r["torch_ms"] else None
        r["efficiency"] = r["ort_speedup"] / r["ideal_speedup"]
    print()
    print(f"{args.model} backbone at {size.label()}, batch 1, {args.threads} threads; "
          f"median of {args.rounds} ORT / {args.torch_rounds} eager round-robin rounds")
    print("Shares of ORT node time: gather+scatter = the WindowGather/WindowScatter bodies (gather, scatter, "
          "row-index math); relayout = other Gather nodes; top-k+score = TopK + Abs/ReduceMean/ReduceL2.")
    print("| config | GMACs | ideal speedup | ORT ms | ORT speedup | measured / ideal | gather+scatter "
          "| relayout gathers | top-k+score | PyTorch eager ms | eager speedup | export s | export peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["ort_share"]
        print(f"| {r['config']} | {r['macs_g']:.2f} | {r['ideal_speedup']:.2f}x | {r['ort_ms']:.1f} "
              f"| {r['ort_speedup']:.2f}x "
              f"| {r['efficiency']:.2f} | {100 * window_ops(s):.2f}% | {100 * s['layout_gather']:.2f}% "
              f"| {100 * (s['topk'] + s['score']):.2f}% "
              + (f"| {r['torch_ms']:.1f} | {r['torch_speedup']:.2f}x " if r["torch_ms"] else "| - | - ")
              + f"| {r['export_s']:.0f} | {r['export_peak_rss_mb']:.0f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), {"model": args.model, "img_size": str(size),
                                                 "threads": args.threads, "rounds": args.rounds,
                                                 "torch_rounds": args.torch_rounds, "share_kinds": SHARE_KINDS,
                                                 "rows": rows})
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rs = sorted(rows, key=lambda r: r["macs_g"], reverse=True)
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.plot([r["macs_g"] for r in rs], [dense["ort_ms"] / r["ideal_speedup"] for r in rs], "--", color="gray",
                label="ideal (dense latency x MACs ratio)")
        ax.plot([r["macs_g"] for r in rs], [r["ort_ms"] for r in rs], "o-", label="ONNX Runtime (measured)")
        if not args.no_torch:
            ax.plot([r["macs_g"] for r in rs], [r["torch_ms"] for r in rs], "s-", label="PyTorch eager (measured)")
        for r in rs:
            ax.annotate(r["config"], (r["macs_g"], r["ort_ms"]), textcoords="offset points", xytext=(3, 5), fontsize=7)
        ax.invert_xaxis()
        ax.set_xlabel("GMACs (lower = sparser)")
        ax.set_ylabel("latency, ms (batch 1)")
        ax.set_title(f"SparseViT ({args.model}) at {size.label()}, CPU, {args.threads} threads")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        tmp_png = out.with_name(out.name + ".tmp.png")
        fig.savefig(tmp_png, dpi=120)
        os.replace(tmp_png, out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.png')}")
    except ImportError:
        print("matplotlib not installed: no plot")
    print(f"wrote {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
