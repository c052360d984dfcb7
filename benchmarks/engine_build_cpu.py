"""Engine builds on a CPU-only host with TensorRT for RTX: per export, parse s, build s, peak RSS, engine
MB and layers (inlined window ops vs our plugin).

    python benchmarks/engine_build_cpu.py [--set small|full] [--plugin-lib PATH] [--out DIR]

Each build runs in its own child process (one TensorRT flavour per process; peak RSS is the child's
ru_maxrss), through vitdeploy's own build path (engines.build.build_engine) with the batch profile
1..16 (opt 1). Exports are made first with `vitdeploy export --no-validate`. Prints a Markdown table
and writes DIR/engine_build_cpu.json. Targets (issue #15): every EfficientViT <= 15 s, Swin-B 672
SparseViT <= 60 s and <= 4 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETS = {
    "small": [
        ("efficientvit_m0", 224, None, "fp32"), ("efficientvit_m0", 224, None, "fp16"),
        ("efficientvit_m0", 224, None, "int8"), ("swin_t", 448, "cfg2", "fp32"),
    ],
    "full": [
        *[("efficientvit_m0", 224, None, p) for p in ("fp32", "fp16", "int8", "fp8")],
        *[("efficientvit_m5", 224, None, p) for p in ("fp32", "fp16", "int8", "fp8")],
        ("swin_t", 224, None, "fp32"), ("swin_t", 448, "cfg2", "fp32"), ("swin_t", 672, "cfg2", "fp32"),
        ("swin_b", 672, "cfg2", "fp32"),
    ],
}

# Runs in the child: parse and build timed separately through vitdeploy's seam and build path pieces.
CHILD = r"""
import json, resource, sys, time
from vitdeploy import optional, plugins
from vitdeploy.artifact import open_artifact
from vitdeploy.engines import build as b
from vitdeploy.engines.profiles import profile_from_batches

onnx_path, lib = sys.argv[1], (sys.argv[2] or None)
trt = optional.tensorrt("rtx")
poly = trt.polygraphy()
art = open_artifact(onnx_path)
if lib and b.vitdeploy_node_count(art.onnx):
    plugins.load(lib)
plan = b.parse_plan(art.onnx, plugin_available=bool(lib) and b.vitdeploy_node_count(art.onnx) > 0)
t0 = time.monotonic()
with poly.G_LOGGER.verbosity(poly.G_LOGGER.ERROR):
    builder, network, parser = b._network_loader(trt, onnx_path, plan)()
parse_s = time.monotonic() - t0
summary = b.network_summary(trt, network)
plugin_layers = b.count_plugin_layers(b._network_layers(trt, network))
inp = art.inputs[0]
shapes = profile_from_batches(inp.shape, 1, 1, 16)
cfg = trt.create_config(profiles=[poly.Profile().add(inp.name, shapes["min"], shapes["opt"], shapes["max"])],
                        builder_optimization_level=3)
t0 = time.monotonic()
with poly.G_LOGGER.verbosity(poly.G_LOGGER.ERROR):
    data = poly.EngineBytesFromNetwork((builder, network, parser), config=cfg)()
build_s = time.monotonic() - t0
print(json.dumps({"parse_s": parse_s, "build_s": build_s, "engine_mb": len(bytes(memoryview(data))) / 1e6,
                  "layers": summary["layers"], "plugin_layers": plugin_layers,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tensorrt": trt.label}))
"""


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def export(model, img, sparsity, precision, out: Path) -> Path:
    name = f"{model}_{img}_{sparsity or 'dense'}_{precision}.onnx"
    path = out / name
    if not path.exists():
        cmd = [sys.executable, "-m", "vitdeploy.cli", "export", model, "-o", str(path), "--img-size", str(img),
               "--precision", precision, "--no-validate", "-q"]
        if sparsity:
            cmd += ["--sparsity", sparsity]
        subprocess.run(cmd, check=True, env=_env(), capture_output=True, text=True)
    return path


def build(onnx_path: Path, lib: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(onnx_path), lib], capture_output=True, text=True,
                          env=_env(), timeout=1800)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=sorted(SETS), default="small")
    ap.add_argument("--plugin-lib", default="", help="libvitdeploy_plugins.so: SparseViT rows also built with it")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model, img, sparsity, precision in SETS[args.set]:
        t0 = time.monotonic()
        onnx_path = export(model, img, sparsity, precision, out)
        libs = [""] + ([args.plugin_lib] if args.plugin_lib and sparsity else [])
        for lib in libs:
            r = build(onnx_path, lib)
            r.update(model=model, img=img, sparsity=sparsity, precision=precision, plugin=bool(lib),
                     export_s=time.monotonic() - t0)
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    (out / "engine_build_cpu.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"TensorRT builds on this CPU-only host ({next((r['tensorrt'] for r in rows if 'tensorrt' in r), '?')}, "
          "batch 1..16, opt 1)\n")
    print("| export | window ops | parse s | build s | peak RSS MB | engine MB | layers (plugin) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        what = f"{r['model']} {r['img']} {r['sparsity'] or 'dense'} {r['precision']}"
        ops = "-" if not r["sparsity"] else "plugin" if r["plugin"] else "inlined"
        if "error" in r:
            print(f"| {what} | {ops} | error: {r['error']} |||||")
            continue
        print(f"| {what} | {ops} | {r['parse_s']:.1f} | {r['build_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{r['engine_mb']:.1f} | {r['layers']} ({r['plugin_layers']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
