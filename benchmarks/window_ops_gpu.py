"""Achieved bandwidth of the window gather/scatter kernels vs a plain copy and the standard-op forms.

For each Swin-T 672x672 shape SparseViT prunes (stage 0: 576 windows x 49 tokens x 96 channels, cfg2
keeps 230; stage 2: 36 x 49 x 384, keeps 28) and batch 1/4/16, times on one GPU with CUDA events
(median of per-iteration device times):

gather   vitdeploy kernel | ONNX Gather on rows (index_select, our function body) |
         ONNX GatherElements form (torch.gather with the index expanded to the data's size) |
         device-to-device copy of the same bytes
scatter  vitdeploy fused out-of-place kernel | vitdeploy in-place kernel | ONNX ScatterND on rows
         (clone + index_copy_, our function body) | ONNX ScatterElements form (torch.scatter with an
         expanded index) | device-to-device copy of the same bytes

Bandwidth is the op's essential traffic (gather: read + write K windows; out-of-place scatter: read +
write nW windows; in-place scatter: read + write K windows) divided by the time, so forms that move more
than they need to show up as a lower number. Index bytes are not counted. Shapes smaller than the L2
cache measure L2-resident bandwidth unless --flush-l2 is given (the model's own tensors are usually
L2-resident at those sizes too).

    python benchmarks/window_ops_gpu.py [--dtype fp16|fp32|bf16] [--iters 200] [--flush-l2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = [  # name, nW, N, C, K (Swin-T at 672, SparseViT cfg2 keep counts)
    ("stage0", 576, 49, 96, 230),
    ("stage2", 36, 49, 384, 28),
    # all-pruned stages are exported as token rows: the same bytes as stage0, rows of one token
    ("s0tokens", 576 * 49, 1, 96, 230 * 49),
]
BATCHES = (1, 4, 16)


def _load_extension(torch):
    from torch.utils.cpp_extension import load

    from vitdeploy import plugins

    csrc = plugins.csrc_dir()
    build = plugins.default_build_dir() / "torch_ext"
    build.mkdir(parents=True, exist_ok=True)
    return load(name="vitdeploy_window_ops_bench",
                sources=[str(csrc / "tests" / "torchWindowOps.cpp"), str(csrc / "common" / "windowOpsKernel.cu")],
                extra_include_paths=[str(csrc / "common")], extra_cflags=["-O2"], extra_cuda_cflags=["-O3"],
                build_directory=str(build), verbose=False)


def _time(torch, fn, iters, warmup, flush):
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for s, e in zip(starts, ends):
        if flush is not None:
            flush.zero_()  # evict the operands from L2 (outside the timed pair)
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
    return times[len(times) // 2]


def run(args) -> dict:
    import torch

    dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    ext = _load_extension(torch)
    stream = lambda: torch.cuda.current_stream().cuda_stream  # noqa: E731
    props = torch.cuda.get_device_properties(0)
    flush = None
    if args.flush_l2:
        l2 = getattr(props, "L2_cache_size", 64 << 20) or (64 << 20)
        flush = torch.empty(2 * l2 // 4, dtype=torch.float32, device="cuda")

    rows = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name, nW, N, C, K in CASES:
        for B in BATCHES:
            x = torch.randn(B, nW, N, C, device="cuda", generator=gen).to(dtype)
            src = torch.randn(B, K, N, C, device="cuda", generator=gen).to(dtype)
            idx = torch.stack([torch.randperm(nW, device="cuda", generator=gen)[:K] for _ in range(B)])
            row_bytes = N * C * x.element_size()
            flat_rows = (idx + torch.arange(B, device="cuda")[:, None] * nW).reshape(-1)
            idx_full = idx[:, :, None, None].expand(B, K, N, C).contiguous()  # what GatherElements needs
            x_rows = x.view(B * nW, N * C)
            src_rows = src.view(B * K, N * C)
            k_copy_dst = torch.empty(B * K, N * C, dtype=dtype, device="cuda")
            nw_copy_dst = torch.empty_like(x)
            inplace = x.clone()

            gather_bytes = 2 * B * K * row_bytes
            scatter_bytes = 2 * B * nW * row_bytes
            forms = [
                ("gather", "vitdeploy", gather_bytes, lambda: ext.gather(x, idx, stream())),
                ("gather", "onnx Gather rows", gather_bytes, lambda: x_rows.index_select(0, flat_rows)),
                ("gather", "onnx GatherElements", gather_bytes, lambda: torch.gather(x, 1, idx_full)),
                ("gather", "d2d copy", gather_bytes, lambda: k_copy_dst.copy_(x_rows[: B * K])),
                ("scatter", "vitdeploy map (plugin)", scatter_bytes, lambda: ext.scatter_map(x, idx, src, stream())),
                ("scatter", "vitdeploy fused scan", scatter_bytes, lambda: ext.scatter(x, idx, src, stream())),
                ("scatter", "vitdeploy in-place", gather_bytes, lambda: ext.scatter_(inplace, idx, src, stream())),
                ("scatter", "onnx ScatterND rows", scatter_bytes,
                 lambda: x_rows.clone().index_copy_(0, flat_rows, src_rows)),
                ("scatter", "onnx ScatterElements", scatter_bytes, lambda: torch.scatter(x, 1, idx_full, src)),
                ("scatter", "d2d copy", scatter_bytes, lambda: nw_copy_dst.copy_(x)),
            ]
            # Same answer from every form before timing anything.
            ref_g = torch.gather(x, 1, idx_full)
            assert torch.equal(ext.gather(x, idx, stream()), ref_g)
            ref_s = torch.scatter(x, 1, idx_full, src)
            assert torch.equal(ext.scatter(x, idx, src, stream()), ref_s)
            assert torch.equal(ext.scatter_map(x, idx, src, stream()), ref_s)
            for op, form, nbytes, fn in forms:
                ms = _time(torch, fn, args.iters, args.warmup, flush)
                rows.append({"case": name, "batch": B, "nW": nW, "N": N, "C": C, "K": K, "op": op, "form": form,
                             "bytes": nbytes, "median_us": ms * 1e3, "gbps": nbytes / (ms * 1e-3) / 1e9})
            del x, src, idx, idx_full, k_copy_dst, nw_copy_dst, inplace
            torch.cuda.empty_cache()

    copy_bw = {(r["case"], r["batch"], r["op"]): r["gbps"] for r in rows if r["form"] == "d2d copy"}
    for r in rows:
        r["of_copy"] = r["gbps"] / copy_bw[(r["case"], r["batch"], r["op"])]
    return {"device": props.name, "capability": f"{props.major}.{props.minor}", "torch": torch.__version__,
            "cuda": torch.version.cuda, "dtype": args.dtype, "iters": args.iters, "flush_l2": bool(args.flush_l2),
            "rows": rows}


def format_table(res: dict) -> str:
    lines = [f"{res['device']} (sm_{res['capability'].replace('.', '')}), {res['dtype']}, median of "
             f"{res['iters']} iterations, L2 {'flushed' if res['flush_l2'] else 'warm'}",
             f"{'case':<8}{'B':>4} {'op':<8}{'form':<22}{'median us':>11}{'GB/s':>9}{'of copy':>9}"]
    for r in res["rows"]:
        lines.append(f"{r['case']:<8}{r['batch']:>4} {r['op']:<8}{r['form']:<22}{r['median_us']:>11.2f}"
                     f"{r['gbps']:>9.1f}{r['of_copy']:>8.0%}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", choices=("fp16", "fp32", "bf16"), default="fp16")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--flush-l2", action="store_true")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "window_ops_gpu.json"))
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("window_ops_gpu: PyTorch is not installed; this benchmark needs PyTorch with CUDA", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("window_ops_gpu: no CUDA GPU visible (torch.cuda.is_available() is False; this torch is "
              f"{torch.__version__}): this benchmark measures device bandwidth and needs a GPU and a CUDA build "
              "of PyTorch", file=sys.stderr)
        return 2
    res = run(args)
    print(format_table(res))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(res, f, indent=2)
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
