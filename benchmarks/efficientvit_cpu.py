"""EfficientViT-M0..M5 on CPU: PyTorch eager original vs our ONNX on ONNX Runtime, side by side.

Settings: batch 16 with one thread (the official CPU speed-test setting) and batch 1 with two
threads. Every model is exported by vitdeploy (random non-trivial weights; speed does not depend
on the values), both runners run in this one process, alternating per model, with the same
thread count, so the ratio column is a like-for-like measurement.

    .venv/bin/python benchmarks/efficientvit_cpu.py [--models efficientvit_m0 ...] [--iters 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitdeploy import jobs  # noqa: E402
from vitdeploy.engines.runners import OrtRunner, TorchRunner, set_threads  # noqa: E402
from vitdeploy.models.preprocess import random_images  # noqa: E402
from vitdeploy.validation.latency import bench_runner  # noqa: E402

SETTINGS = [(16, 1), (1, 2)]  # (batch, threads)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[f"efficientvit_m{i}" for i in range(6)])
    ap.add_argument("--iters", type=int, default=20, help="timed iterations at batch 16 (x5 at batch 1)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "efficientvit_cpu.json"))
    args = ap.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="vd-bench-") as tmp:
        for name in args.models:
            onnx_path = Path(tmp) / f"{name}.onnx"
            rep = jobs.export(name, onnx_path, validate=False)
            ref = jobs.build_reference(name)  # the unfolded eager original, same weights
            for batch, threads in SETTINGS:
                set_threads(threads)
                x = random_images(batch, 224)
                iters = args.iters if batch > 1 else args.iters * 5
                torch_r = TorchRunner(ref, threads=threads)
                ort_r = OrtRunner(str(onnx_path), threads=threads)
                t = bench_runner(torch_r, x, warmup=args.warmup, iters=iters, threads=threads)
                o = bench_runner(ort_r, x, warmup=args.warmup, iters=iters, threads=threads)
                row = {"model": name, "batch": batch, "threads": threads, "macs_m": rep["macs"] / 1e6,
                       "torch_ms": t["median_ms"], "ort_ms": o["median_ms"],
                       "torch_ips": t["throughput_ips"], "ort_ips": o["throughput_ips"],
                       "speedup": t["median_ms"] / o["median_ms"], "torch": t, "ort": o}
                rows.append(row)
                print(f"{name:<16} b{batch:<3} t{threads}  torch {t['median_ms']:8.2f} ms  ort {o['median_ms']:8.2f} ms"
                      f"  {row['speedup']:.2f}x", flush=True)

    print()
    print("| model | MACs (M) | batch / threads | PyTorch eager ms (img/s) | vitdeploy ONNX on ORT ms (img/s) "
          "| ORT / eager |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['macs_m']:.1f} | {r['batch']} / {r['threads']} "
              f"| {r['torch_ms']:.2f} ({r['torch_ips']:.0f}) "
              f"| {r['ort_ms']:.2f} ({r['ort_ips']:.0f}) | {r['speedup']:.2f}x |")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    import onnxruntime
    import torch

    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                               "onnxruntime": onnxruntime.__version__, "rows": rows}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
