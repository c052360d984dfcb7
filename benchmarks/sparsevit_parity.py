"""SparseViT parity table: ONNX Runtime (CPU) vs the PyTorch original, dense and cfg1-3, at 224,
448 and 672, custom-node form and --portable form, every backbone output (random non-trivial
weights, seed 0; random images, batch 2).

    .venv/bin/python benchmarks/sparsevit_parity.py [--model swin_t] [--sizes 224 448 672]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitdeploy import jobs  # noqa: E402
from vitdeploy.fileio import atomic_write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="swin_t")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448, 672])
    ap.add_argument("--configs", nargs="+", default=["dense", "cfg1", "cfg2", "cfg3"])
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "sparsevit_parity.json"))
    args = ap.parse_args(argv)
    rows = []
    print("| size | config | form | max rel err (features.0 / 1 / 2 / 3) | min cosine | verdict |")
    print("|---:|---|---|---|---:|---|")
    with tempfile.TemporaryDirectory(prefix="vd-parity-") as tmp:
        for size in args.sizes:
            for cfg in args.configs:
                for portable in (False, True):
                    if cfg == "dense" and portable:
                        continue  # a dense model has no window ops: both forms are the same graph
                    out = Path(tmp) / f"{size}_{cfg}_{portable}.onnx"
                    rep = jobs.export(args.model, out, img_size=size, task="backbone", portable=portable,
                                      sparsity=None if cfg == "dense" else cfg, validate_batch=2)
                    outs = rep["parity"]["outputs"]
                    row = {"size": size, "config": cfg, "form": "portable" if portable else "custom nodes",
                           "max_rel_err": [o["max_rel_err"] for o in outs],
                           "min_cosine": min(o["cosine"] for o in outs), "passed": rep["parity"]["passed"]}
                    rows.append(row)
                    print(f"| {size} | {cfg} | {row['form']} | {' / '.join(f'{e:.1e}' for e in row['max_rel_err'])} "
                          f"| {row['min_cosine']:.8f} | {'PASS' if row['passed'] else 'FAIL'} |", flush=True)
                    out.unlink()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, {"model": args.model, "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
