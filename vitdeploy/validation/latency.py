"""One latency protocol for every runner (DESIGN decision 10).

Warm-up, then N timed iterations of `runner.infer` on the same pre-made input; each iteration is
bracketed by `runner.synchronize()` so device runners are timed to completion. The scope is the
runner's `infer` call (host arrays in, host arrays out) — the same for torch and ORT on CPU; the
TensorRT runner reports its device-only scope separately where it can.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Dict, Optional

import numpy as np


def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:
        return float("nan")


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summarize(times_s, batch: int) -> Dict[str, float]:
    t = np.asarray(times_s, dtype=np.float64) * 1e3
    med = float(np.median(t))
    return {
        "median_ms": med,
        "p90_ms": float(np.percentile(t, 90)),
        "p99_ms": float(np.percentile(t, 99)),
        "mean_ms": float(t.mean()),
        "min_ms": float(t.min()),
        "std_ms": float(t.std()),
        "throughput_ips": batch * 1e3 / med if med > 0 else float("inf"),
    }


def bench_runner(runner, images: np.ndarray, *, warmup: int = 10, iters: int = 50,
                 threads: Optional[int] = None, min_time_s: float = 0.0) -> Dict[str, object]:
    """Time `runner` on `images`. Returns the stats dict that `vitdeploy bench --json` writes
    (`threads` is recorded there; the caller applied it to the runner).

    `min_time_s` keeps iterating past `iters` until that much time was spent: the search times
    single stages of a few milliseconds, whose medians need more samples than `iters`."""
    feeds = {runner.inputs[0].name: np.ascontiguousarray(images)}
    batch = int(images.shape[0])
    for _ in range(warmup):
        runner.infer(feeds)
    runner.synchronize()
    times = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        runner.infer(feeds)
        runner.synchronize()
        times.append(time.perf_counter() - t0)
    stats = {"backend": runner.name, "device": runner.device, "batch": batch, "warmup": warmup,
             "iters": len(times), "threads": threads, "timing_scope": "infer() host-to-host"}
    stats.update(summarize(times, batch))
    stats["rss_mb"] = _rss_mb()
    stats["peak_rss_mb"] = peak_rss_mb()
    return stats


def format_table(results, ratio_to: Optional[str] = None) -> str:
    """Side-by-side table. The speedup column is relative to the `ratio_to` backend's first row, or
    to the first row when several rows are compared; an artifact column appears when rows time
    different files (fp32 vs int8 exports, say)."""
    base = next((r for r in results if r["backend"] == ratio_to), results[0] if len(results) > 1 else None)
    names = [os.path.basename(r["artifact"]) if r.get("artifact") else "(eager)" for r in results]
    width = max(map(len, names)) + 2 if len({r.get("artifact") for r in results if r.get("artifact")}) > 1 else 0
    hdr = (f"{'artifact':<{width}}" if width else "") + (
        f"{'backend':<10}{'batch':>6}{'threads':>8}{'median ms':>11}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}"
        f"{'img/s':>10}{'peak MB':>9}")
    if base:
        hdr += f"{'speedup':>9}"
    lines = [hdr]
    for name, r in zip(names, results):
        line = (f"{name:<{width}}" if width else "") + (
            f"{r['backend']:<10}{r['batch']:>6}{str(r.get('threads') or '-'):>8}{r['median_ms']:>11.2f}"
            f"{r['p90_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['mean_ms']:>9.2f}{r['throughput_ips']:>10.1f}"
            f"{r['peak_rss_mb']:>9.0f}")
        if base:
            line += f"{base['median_ms'] / r['median_ms']:>8.2f}x"
        lines.append(line)
    return "\n".join(lines)
