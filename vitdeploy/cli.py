"""The command line. Thin: parse argv, call vitdeploy.jobs / the library, print, map errors to exit codes.

Exit codes (DESIGN §3): 0 success, 1 a check failed, 2 bad input, 3 an internal error (a bug, or
the machine ran out of memory). Errors are one line on stderr; `--debug` (or VITDEPLOY_DEBUG=1)
re-raises an internal error so its traceback shows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

from vitdeploy import __version__
from vitdeploy.errors import CheckFailed, UserError

EXIT_OK, EXIT_CHECK, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class Console:
    """Progress to stderr (results to stdout), with elapsed time; --quiet hides progress."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def progress(self, msg: str) -> None:
        if self.quiet and not msg.startswith("warning"):
            return
        for i, line in enumerate(msg.splitlines()):
            prefix = f"[{time.perf_counter() - self.t0:6.1f}s] " if i == 0 else " " * 10
            print(prefix + line, file=sys.stderr, flush=True)


def _positive_int(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {v!r}")
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


def _batch_arg(v: str):
    """A positive batch size, or None for 'dynamic'."""
    if v == "dynamic":
        return None
    try:
        return _positive_int(v)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e} (or 'dynamic')")


SIZE_HELP = "input size: N (square), H W or HxW, e.g. 800 1344 (legal sizes per family: `vitdeploy models`)"


def _size(values):
    """--img-size's 1-2 words -> ImageSize (UserError: exit 2, one line, before anything is written)."""
    if values is None:
        return None
    from vitdeploy.models.size import ImageSize

    return ImageSize.parse(values, allow_zero=True)  # the family check names the nearest legal sizes


def _existing_file(v: str) -> str:
    if not os.path.exists(v):
        raise argparse.ArgumentTypeError(f"not found: {v}")
    return v


# ----------------------------------------------------------------------------- commands

def cmd_models(args, con: Console) -> int:
    from vitdeploy.models.registry import SPECS

    if args.json:
        print(json.dumps([{"name": s.name, "family": s.family, "img_size": s.default_img_size, "tasks": s.tasks,
                           "checkpoint_formats": s.checkpoint_formats, "sparsity": s.sparsity,
                           "description": s.description} for s in SPECS.values()], indent=2))
        return EXIT_OK
    print(f"{'model':<17}{'img':>5}  {'tasks':<19}{'sparsity':<10}checkpoint formats")
    for s in SPECS.values():
        print(f"{s.name:<17}{s.default_img_size:>5}  {'|'.join(s.tasks):<19}{'yes' if s.sparsity else '-':<10}"
              f"{'; '.join(s.checkpoint_formats)}")
    print("\ncheckpoints: .pth/.pt (torch.load weights_only) or .safetensors; no --checkpoint = random weights."
          "\nsparsity (Swin = SparseViT): cfg1|cfg2|cfg3, a float (every block), or a JSON file "
          '{"ratios": [[..],[..],[..],[..]]}')
    return EXIT_OK


def cmd_export(args, con: Console) -> int:
    from vitdeploy import jobs

    report = jobs.export(args.model, args.output, checkpoint=args.checkpoint, sparsity=args.sparsity,
                         img_size=_size(args.img_size), batch=args.batch, task=args.task, num_classes=args.num_classes,
                         precision=args.precision, portable=args.portable, opset=args.opset,
                         images=args.images, validate=not args.no_validate, calib_images=args.calib_images,
                         calib_num=args.calib_num, calib_method=args.calib_method, target=args.target,
                         resize=args.resize, norm_order=args.norm_order, progress=con.progress)
    t = report["timings"]
    print(f"wrote {report['onnx']} ({report['onnx_bytes'] / 2**20:.1f} MiB, "
          f"{sum(report['op_histogram'].values())} nodes, "
          f"{report['macs'] / 1e6:.1f} M MACs, {report['parameters'] / 1e6:.2f} M params), "
          f"{report['reference']} and {jobs.report_path_for(report['onnx'])} in {t['total_s']:.1f}s")
    if report["parity"] is not None:
        worst = max(o["max_rel_err"] for o in report["parity"]["outputs"])
        print(f"parity vs PyTorch on ONNX Runtime: PASS (max rel err {worst:.2e})")
    return EXIT_OK


def cmd_validate(args, con: Console) -> int:
    from vitdeploy import jobs

    parity = jobs.validate(args.artifact, reference=args.reference, checkpoint=args.checkpoint, images=args.images,
                           backend=args.backend, batch=args.batch, plugin_lib=args.plugin_lib, progress=con.progress)
    print(parity.table())
    if args.json:
        from vitdeploy.fileio import atomic_write_json

        atomic_write_json(args.json, parity.to_dict())
    return EXIT_OK if parity.passed else EXIT_CHECK


def cmd_bench(args, con: Console) -> int:
    from vitdeploy import jobs
    from vitdeploy.validation.latency import format_table

    results = jobs.bench(args.targets, backends=args.backend, batch=args.batch, threads=args.threads,
                         iters=args.iters, warmup=args.warmup, sparsity=args.sparsity, img_size=_size(args.img_size),
                         checkpoint=args.checkpoint, plugin_lib=args.plugin_lib, progress=con.progress)
    base = "torch" if any(r["backend"] == "torch" for r in results) else None
    r0 = results[0]
    print(f"{r0['model']} {r0['img_size']} {r0['precision']}"
          + (f" sparsity {json.dumps(r0['sparsity'])}" if r0["sparsity"] else "") + f" (scope: {r0['timing_scope']})")
    print(format_table(results, ratio_to=base))
    if args.json:
        from vitdeploy.fileio import atomic_write_json

        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    return EXIT_OK


def cmd_info(args, con: Console) -> int:
    from vitdeploy import jobs

    info = jobs.info(args.artifact)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return EXIT_OK
    m = info["metadata"]
    if info["kind"] == "onnx":
        print(f"{info['artifact']}: ONNX, {info['bytes'] / 2**20:.1f} MiB, {info['nodes']} nodes, "
              f"opset {info['opset']}")
    else:
        print(f"{info['artifact']}: TensorRT engine, {info['bytes'] / 2**20:.1f} MiB, built from {info['source_onnx']}")
    for k in ("model", "task", "img_size", "precision", "sparsity", "checkpoint_sha256", "crop_pct",
              "interpolation", "version"):
        if k in m:
            print(f"  {k:<18} {m[k]}")
    for kind in ("inputs", "outputs"):
        for n, d in info[kind].items():
            print(f"  {kind[:-1]:<18} {n} {d['dtype']} {d['shape']}")
    if info["batch_profile"]:
        print(f"  {'batch':<18} {info['batch_profile']['min']}..{info['batch_profile']['max']} "
              f"(opt {info['batch_profile']['opt']})")
    print(f"  {'reference':<18} {info['reference'] or '- (validate needs torch and the checkpoint)'}")
    if info["kind"] == "onnx":
        if info["custom_nodes"]:
            print(f"  custom nodes       {info['custom_nodes']} (vitdeploy::WindowGather/WindowScatter; "
                  f"functions: {', '.join(info['local_functions'])})")
        top = ", ".join(f"{k} {v}" for k, v in list(info["op_histogram"].items())[:8])
        print(f"  ops                {top}")
    else:
        from vitdeploy.engines.manifest import EngineManifest
        from vitdeploy.optional import FLAVOUR_NAMES

        man = EngineManifest(info["manifest"])
        targets = (", ".join(man.targets) or "the RTX builder's defaults") if man.flavour == "rtx" \
            else f"{man.get('gpu_name')} (compute capability {man.get('compute_capability')})"
        print(f"  {'tensorrt':<18} {FLAVOUR_NAMES[man.flavour]} {man.get('tensorrt_version')}")
        print(f"  {'targets':<18} {targets}")
        print(f"  {'plugin layers':<18} {man.plugin_layers}"
              + (f" (library sha256 {man['plugin_lib_sha256'][:12]}…)" if man.get("plugin_lib_sha256") else ""))
        net = man.get("network") or {}
        if net:
            print(f"  {'network':<18} {net.get('layers')} layers"
                  + (", strongly typed" if net.get("strongly_typed") else ""))
        for k, v in info["manifest"].items():
            if k not in ("onnx_metadata", "inputs", "outputs", "network"):
                print(f"  {k:<20} {json.dumps(v) if not isinstance(v, str) else v}")
    return EXIT_OK


def cmd_build(args, con: Console) -> int:
    from vitdeploy.checks import check_against_reference
    from vitdeploy.engines.build import build_engine

    manifest = build_engine(args.onnx, args.output, plugin_lib=args.plugin_lib, min_batch=args.min_batch,
                            opt_batch=args.opt_batch, max_batch=args.max_batch, timing_cache=args.timing_cache,
                            tensorrt=args.tensorrt, compute_capabilities=args.compute_capability,
                            runtime_cache=args.runtime_cache, progress=con.progress)
    from vitdeploy.optional import FLAVOUR_NAMES

    where = (f"targets {', '.join(manifest.targets) or 'the builder defaults'}" if manifest.flavour == "rtx"
             else manifest.get("gpu_name"))
    print(f"wrote {args.output} and {args.output}.json ({FLAVOUR_NAMES[manifest.flavour]} "
          f"{manifest.get('tensorrt_version')}, {where}, {manifest.plugin_layers} plugin layers)")
    # The engine stays written when parity fails: it is what TensorRT built, and the table says how far off.
    check_against_reference(args.output, plugin_lib=manifest.get("plugin_lib_path"), progress=con.progress)
    return EXIT_OK


def cmd_plugins(args, con: Console) -> int:
    from vitdeploy import plugins

    if args.action == "build":
        res = plugins.build(build_dir=args.build_dir, cuda_archs=args.cuda_archs, tensorrt_root=args.tensorrt_root,
                            progress=con.progress)
        print(json.dumps(res, indent=2, default=str))
        if res.get("library") is None:
            # Kernels alone are not what `plugins build` promises: say what is missing, exit as bad input.
            print(f"error: {res['message']}", file=sys.stderr)
            return EXIT_INPUT
        return EXIT_OK
    print(json.dumps(plugins.info(args.plugin_lib), indent=2, default=str))
    return EXIT_OK


def cmd_serve(args, con: Console) -> int:
    from vitdeploy.artifact import is_engine_path
    from vitdeploy.serving.triton import describe_ready, serve

    def ready(si) -> None:
        print(describe_ready(si), flush=True)
        if args.ready_json:
            print("READY " + json.dumps(si.as_dict()), flush=True)

    def torch_model(info, say):
        """The PyTorch original rebuilt from the artifact's metadata, as `validate` does (A/B checks)."""
        from vitdeploy import jobs

        if not info.metadata.get("model"):
            raise UserError(f"{info.path}: no vitdeploy.model metadata, so --backend torch cannot rebuild the "
                            "PyTorch model; use --backend ort")
        return jobs.reference_from_metadata(info.metadata, checkpoint=args.checkpoint, warn=say, where=str(info.path))

    backend = args.backend or ("trt" if is_engine_path(args.artifact) else "ort")
    serve(args.artifact, backend=backend, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
          metrics_port=args.metrics_port, max_batch=args.max_batch, max_queue_delay_us=args.max_queue_delay_us,
          preferred_batch_sizes=args.preferred_batch_sizes, dynamic_batching=not args.no_dynamic_batching,
          instances=args.instances, model_name=args.model_name, plugin_lib=args.plugin_lib, threads=args.threads,
          torch_model=torch_model, progress=con.progress, verbose=args.verbose, ready_callback=ready)
    con.progress("server stopped")
    return EXIT_OK


def cmd_triton_repo(args, con: Console) -> int:
    from vitdeploy.serving.repository import write_triton_repo

    path = write_triton_repo(args.artifact, args.output, max_batch=args.max_batch, instances=args.instances,
                             model_name=args.model_name,
                             preferred_batch_sizes=args.preferred_batch_sizes, plugin_lib=args.plugin_lib)
    print(f"wrote Triton model repository {path} (config.pbtxt validated against Triton's model-config schema; "
          f"see {path.parent / 'README.md'})")
    return EXIT_OK


# ----------------------------------------------------------------------------- search (vitdeploy.search)

def cmd_search(args, con: Console) -> int:
    from vitdeploy.search.run import run_search

    res = run_search(args.model, args.output, checkpoint=args.checkpoint, img_size=_size(args.img_size), task=args.task,
                     budget=args.budget, budget_ms=args.budget_ms, macs_budget=args.macs_budget,
                     backend=args.backend, threads=args.threads, batch=args.batch, images=args.images,
                     labels=args.labels, num_images=args.num_images, seed=args.seed, time_limit=args.time_limit,
                     generations=args.generations, population=args.population, parents=args.parents,
                     mutation_prob=args.mutation_prob, resume=args.resume, top_k=args.top_k,
                     ratio_choices=args.ratios, resize=args.resize, export_workers=args.export_workers,
                     progress=con.progress)
    s = res["search"]
    print(res.pop("_front_table"))
    print(f"chosen {res['ratios']}: {s['chosen_ms_measured']:.2f} ms measured ({s['chosen_ms_predicted']:.2f} "
          f"predicted) vs dense {s['dense_ms_measured']:.2f} ms = {s['speedup_measured']:.2f}x on {s['backend']}, "
          f"{s['macs'] / 1e9:.2f}/{s['dense_macs'] / 1e9:.2f} G MACs, fidelity {s['fidelity']['score']:.5f}; "
          f"wrote {args.output}")
    return EXIT_OK


def _add_search_parser(sub) -> None:
    s = sub.add_parser("search", help="per-block SparseViT ratios under a latency budget measured on a backend")
    s.add_argument("model", help="swin_t, swin_s, swin_b")
    s.add_argument("-o", "--output", required=True,
                   help="sparsity file OUT.json (also writes OUT.search.json and OUT.png)")
    s.add_argument("--checkpoint", type=_existing_file, help=".pth/.pt/.safetensors (timm, Microsoft or mmdet keys)")
    s.add_argument("--img-size", nargs="+", metavar="N", help=SIZE_HELP + " (default 224; SparseViT uses 672)")
    s.add_argument("--resize", choices=("crop", "keep-ratio", "stretch"),
                   help="--images preprocessing (default: the family's official test pipeline for --task)")
    s.add_argument("--task", choices=("classify", "backbone"), default="backbone")
    b = s.add_mutually_exclusive_group(required=True)
    b.add_argument("--budget", type=float, help="latency budget as a fraction of the dense model's, measured here")
    b.add_argument("--budget-ms", type=float, help="latency budget in ms on the backend")
    b.add_argument("--macs-budget", type=float, help="MACs budget as a fraction of the dense model's")
    s.add_argument("--backend", choices=("ort", "ort-cuda", "trt"), default="ort")
    s.add_argument("--threads", type=_positive_int, help="CPU threads (ORT and the PyTorch fidelity runs)")
    s.add_argument("--batch", type=_positive_int, default=1, help="batch the latency is measured at")
    s.add_argument("--images", help="calibration images (export preprocessing); default random inputs")
    s.add_argument("--labels", help="ImageFolder directory (DIR/CLASS/IMAGE): score top-1 accuracy (classify)")
    s.add_argument("--num-images", type=_positive_int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--time-limit", type=float, help="seconds for the evolutionary search (then verify)")
    s.add_argument("--generations", type=int, default=6)
    s.add_argument("--population", type=_positive_int, default=32, help="paper: 100")
    s.add_argument("--parents", type=_positive_int, default=8, help="paper: 25")
    s.add_argument("--mutation-prob", type=float, default=0.1)
    s.add_argument("--top-k", type=_positive_int, default=3, help="searched configs measured end to end")
    s.add_argument("--ratios", type=float, nargs="+", help="restrict the ratios tried (default 0 0.1 ... 0.8)")
    s.add_argument("--resume", help="continue from this OUT.search.json")
    s.add_argument("--export-workers", type=_positive_int,
                   help="processes exporting ONNX side by side (default: one per core, at most 4)")
    s.set_defaults(func=cmd_search)


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vitdeploy", description="Export EfficientViT-M and SparseViT to ONNX and "
                                "TensorRT, check parity and latency, and serve them.")
    p.add_argument("--version", action="version", version=f"vitdeploy {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="hide progress (warnings and results still print)")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an internal error (same as VITDEPLOY_DEBUG=1)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="hide progress (warnings and results still print)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an internal error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, parents=[common], **k)  # every verb takes --quiet and --debug

    s = sub.add_parser("models", help="list model names, defaults and checkpoint formats")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("export", help="checkpoint -> folded ONNX (+report), validated on ONNX Runtime")
    s.add_argument("model", help="efficientvit_m0..m5, swin_t, swin_s, swin_b")
    s.add_argument("-o", "--output", required=True, help="output .onnx (a .report.json is written beside it)")
    s.add_argument("--checkpoint", type=_existing_file, help=".pth/.pt/.safetensors (official, timm or mmdet keys)")
    s.add_argument("--sparsity", help="SparseViT ratios: cfg1|cfg2|cfg3, a float, or a JSON file")
    s.add_argument("--img-size", nargs="+", metavar="N", help=SIZE_HELP + " (default: the model's)")
    s.add_argument("--resize", choices=("crop", "keep-ratio", "stretch"),
                   help="image preprocessing recorded for validate/serve/client: crop (classification), "
                        "keep-ratio (mmdet Resize keep_ratio + zero pad), stretch (keep_ratio=False); default: "
                        "crop for classify, stretch for a Swin backbone (SparseViT), keep-ratio for an "
                        "EfficientViT backbone (RetinaNet)")
    s.add_argument("--norm-order", choices=("sparsevit", "timm"),
                   help="Swin, dense only: where LN1 runs on padded maps: sparsevit (pad -> roll -> LN1) or "
                        "timm (LN1 -> pad, also mmdet); default: the checkpoint's family (pruned: always sparsevit)")
    s.add_argument("--batch", type=_batch_arg, default=None, help="static batch N, or 'dynamic' (default)")
    s.add_argument("--task", choices=("classify", "backbone"), default="classify")
    s.add_argument("--num-classes", type=_positive_int, default=None,
                   help="classifier classes (default: from the checkpoint's head, else 1000)")
    s.add_argument("--precision", choices=("fp32", "fp16", "int8", "fp8"), default="fp32",
                   help="int8/fp8: calibrated Q/DQ (TensorRT explicit quantization; ORT CPU runs it)")
    s.add_argument("--calib-images", help="int8/fp8: directory of calibration images (default: random inputs, warned)")
    s.add_argument("--calib-num", type=int, default=None, help="int8/fp8: number of calibration images (default 32)")
    s.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default=None,
                   help="int8/fp8: activation range calibration (default percentile 99.999)")
    s.add_argument("--target", choices=("trt", "ort-cpu"), default="trt",
                   help="int8: trt = TensorRT-compatible Q/DQ (signed, symmetric; default); "
                        "ort-cpu = ONNX Runtime CPU-tuned (uint8 activations, quantized outputs)")
    s.add_argument("--portable", action="store_true", help="standard ops only (no vitdeploy custom nodes)")
    s.add_argument("--opset", type=int, default=20)
    s.add_argument("--images", help="directory of images: their preprocessed arrays and PyTorch outputs join the "
                   "random ones in OUT.ref.npz")
    s.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime parity check")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("validate", help="parity of an .onnx/.engine against the PyTorch original (or its "
                       "stored outputs, OUT.ref.npz)")
    s.add_argument("artifact")
    s.add_argument("--reference", type=_existing_file,
                   help="OUT.ref.npz written by export (default: the one beside the artifact or its ONNX); "
                   "needs neither torch nor the checkpoint")
    s.add_argument("--checkpoint", type=_existing_file)
    s.add_argument("--images", help="directory of images (official eval preprocessing); default random")
    s.add_argument("--backend", choices=("ort", "ort-cuda", "ort-trt", "trt"), default=None,
                   help="default: trt for .engine, ort (CPU) for .onnx")
    s.add_argument("--batch", type=_positive_int, default=8,
                   help="number of random images when rebuilding the PyTorch original")
    s.add_argument("--plugin-lib", help="libvitdeploy_plugins.so (TensorRT)")
    s.add_argument("--json", help="also write the parity report here")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("build", help="ONNX -> TensorRT engine (+ manifest)")
    s.add_argument("onnx", type=_existing_file)
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--plugin-lib")
    s.add_argument("--min-batch", type=_positive_int, default=None, help="default 1 (or the ONNX's static batch)")
    s.add_argument("--opt-batch", type=_positive_int, default=None, help="default: --min-batch")
    s.add_argument("--max-batch", type=_positive_int, default=None, help="default: max(opt, 16)")
    s.add_argument("--timing-cache", help="enterprise TensorRT: reuse/save builder timings in this file")
    s.add_argument("--tensorrt", choices=("auto", "trt", "rtx"), default=None,
                   help="TensorRT flavour: trt (enterprise), rtx (TensorRT for RTX: builds without a GPU), "
                        "auto (default, or $VITDEPLOY_TENSORRT: enterprise if installed, else RTX)")
    s.add_argument("--compute-capability", nargs="+", metavar="X.Y",
                   help="TensorRT for RTX: GPUs to compile for, e.g. 8.6 8.9 12.0 (default: the RTX builder's)")
    s.add_argument("--runtime-cache", help="TensorRT for RTX: file for the runtime's JIT cache (recorded in the "
                   "manifest; --timing-cache's counterpart)")
    s.set_defaults(func=cmd_build)

    s = sub.add_parser("bench", help="latency of backends side by side, same protocol")
    s.add_argument("targets", nargs="+", help="artifacts (.onnx, .engine) or a model name")
    s.add_argument("--backend", nargs="+", default=["torch", "ort"],
                   choices=("torch", "ort", "ort-cuda", "ort-trt", "trt"))
    s.add_argument("--batch", type=_positive_int, default=1)
    s.add_argument("--threads", type=_positive_int, default=None)
    s.add_argument("--iters", type=_positive_int, default=50)
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--sparsity")
    s.add_argument("--img-size", nargs="+", metavar="N", help=SIZE_HELP)
    s.add_argument("--checkpoint", type=_existing_file)
    s.add_argument("--plugin-lib")
    s.add_argument("--json", help="write results as JSON")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("info", help="what an .onnx/.engine is, from its metadata")
    s.add_argument("artifact")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("plugins", help="build / describe the native TensorRT plugin library")
    s.add_argument("action", choices=("build", "info"))
    s.add_argument("--build-dir")
    s.add_argument("--cuda-archs", help='CMAKE_CUDA_ARCHITECTURES, e.g. "80;90"')
    s.add_argument("--tensorrt-root", help="TensorRT install (include/ and lib/)")
    s.add_argument("--plugin-lib", help="library to describe (info)")
    s.set_defaults(func=cmd_plugins)

    s = sub.add_parser("serve", help="serve an artifact through Triton Inference Server (PyTriton)")
    s.add_argument("artifact")
    s.add_argument("--backend", choices=("ort", "ort-cuda", "trt", "torch"), default=None,
                   help="default: trt for .engine, ort for .onnx; torch = the PyTorch original (A/B checks)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.add_argument("--max-batch", type=_positive_int, default=16)
    s.add_argument("--max-queue-delay-us", type=int, default=500)
    s.add_argument("--preferred-batch-sizes", type=_positive_int, nargs="+")
    s.add_argument("--no-dynamic-batching", action="store_true")
    s.add_argument("--instances", type=_positive_int, default=1)
    s.add_argument("--model-name")
    s.add_argument("--plugin-lib")
    s.add_argument("--threads", type=_positive_int)
    s.add_argument("--verbose", action="store_true", help="tritonserver's own log")
    s.add_argument("--checkpoint", type=_existing_file, help="for --backend torch")
    s.add_argument("--ready-json", action="store_true",
                   help="once the model answers, also print one line 'READY {json}' (endpoints, I/O, server pids)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("triton-repo", help="write a Triton model repository for an artifact")
    s.add_argument("artifact", type=_existing_file)
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--max-batch", type=_positive_int, default=16)
    s.add_argument("--instances", type=_positive_int, default=1)
    s.add_argument("--model-name")
    s.add_argument("--preferred-batch-sizes", type=_positive_int, nargs="+")
    s.add_argument("--plugin-lib", help="path of libvitdeploy_plugins_static_reg.so on the serving host (README)")
    s.set_defaults(func=cmd_triton_repo)

    _add_search_parser(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 with one usage line on bad flags
    con = Console(quiet=args.quiet)
    try:
        return args.func(args, con)
    except UserError as e:
        print(f"vitdeploy {args.command}: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except CheckFailed as e:
        print(f"vitdeploy {args.command}: check failed: {e}", file=sys.stderr)
        return EXIT_CHECK
    except KeyboardInterrupt:
        print(f"vitdeploy {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vitdeploy info x.onnx | head`: the reader left, nothing is wrong
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except MemoryError:
        # Not exit 1 (no check failed) nor 2 (the input may be fine on a bigger machine).
        print(f"vitdeploy {args.command}: internal error: out of memory (try a smaller --batch, or a machine "
              "with more memory)", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as e:  # a bug of ours: one line by default, the traceback on request
        if args.debug or os.environ.get("VITDEPLOY_DEBUG"):
            raise
        first = (str(e).splitlines() or [""])[0][:300]
        print(f"vitdeploy {args.command}: internal error (a bug in vitdeploy): {type(e).__name__}: {first} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL

if __name__ == "__main__":
    sys.exit(main())
