"""The user-level jobs behind the CLI verbs: export (+validate +report), validate, bench, info.

These compose the layers (models -> export -> engines) and sit above all of them; cli.py only
parses argv, prints and maps exceptions to exit codes. Progress goes through a callback so the
library stays silent when used from Python.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from vitdeploy import __version__
from vitdeploy.errors import CheckFailed, UserError

Progress = Callable[[str], None]
RANDOM_WEIGHTS = "random-seed-0"


def _noop(msg: str) -> None:
    pass


def report_path_for(onnx_path: os.PathLike) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.stem + ".report.json")


# ----------------------------------------------------------------------------- reference models

def build_reference(model: str, *, checkpoint=None, img_size=None, task="classify", sparsity=None,
                    num_classes=None, warn: Optional[Progress] = None):
    """The unfolded PyTorch model: with the checkpoint, or deterministic random weights.

    Random weights are randomised non-trivially (BN statistics included), with a fixed seed, so
    that an export made without a checkpoint can be validated later from its metadata alone."""
    from vitdeploy.models.registry import build_model, randomize_for_parity

    m = build_model(model, num_classes=num_classes, img_size=img_size, task=task, sparsity=sparsity,
                    checkpoint=checkpoint)
    if checkpoint is None:
        if warn:
            warn(f"warning: no --checkpoint given: {model} has random weights (seed 0); "
                 "parity and speed are meaningful, predictions are not")
        randomize_for_parity(m, seed=0)
    return m.eval()


def count_macs(model, img_size: int) -> int:
    """MACs of one image, from the ops PyTorch actually runs (so pruned windows are not counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, img_size, img_size)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    return int(fc.get_total_flops() // 2)


def reference_from_metadata(meta: Dict[str, str], checkpoint=None, warn: Optional[Progress] = None,
                            where: str = "artifact"):
    """Rebuild the PyTorch original an artifact was exported from."""
    from vitdeploy.models.checkpoints import file_sha256

    if "model" not in meta:
        raise UserError(f"{where} has no vitdeploy metadata (was it exported by vitdeploy?); "
                        "validate needs to know the model it came from")
    recorded = meta.get("checkpoint_sha256", RANDOM_WEIGHTS)
    if checkpoint is None and recorded != RANDOM_WEIGHTS:
        raise UserError(f"{where} was exported from a checkpoint (sha256 {recorded[:12]}…); "
                        "pass the same file with --checkpoint")
    if checkpoint is not None and warn:
        sha = file_sha256(checkpoint)
        if sha != recorded:
            warn(f"warning: --checkpoint sha256 {sha[:12]}… differs from the one the export used "
                 f"({recorded[:12]}…); parity will compare different weights")
    sparsity = json.loads(meta.get("sparsity", "null"))
    if isinstance(sparsity, dict):
        from vitdeploy.models.sparsity import SparsityConfig

        sparsity = SparsityConfig(ratios=sparsity["ratios"], source=f"{where} metadata")
    return build_reference(meta["model"], checkpoint=checkpoint, img_size=int(meta["img_size"]),
                           task=meta.get("task", "classify"), sparsity=sparsity,
                           num_classes=int(meta.get("num_classes", 1000)))


def artifact_metadata(artifact: os.PathLike) -> Dict[str, str]:
    """vitdeploy.* metadata of an .onnx, or of the ONNX an .engine was built from (its manifest)."""
    p = Path(artifact)
    if p.suffix == ".onnx":
        from vitdeploy.export.onnx import read_metadata

        return read_metadata(p)
    if p.suffix in (".engine", ".plan", ".trt"):
        from vitdeploy.engines.manifest import read_manifest

        raw = read_manifest(p).get("onnx_metadata", {})  # kept with the "vitdeploy." prefix there
        return {(k[len("vitdeploy."):] if k.startswith("vitdeploy.") else k): v for k, v in raw.items()}
    raise UserError(f"{p}: unknown artifact type {p.suffix!r}; expected .onnx or .engine")


# ----------------------------------------------------------------------------- export

def export(model: str, out: os.PathLike, *, checkpoint=None, sparsity=None, img_size=None,
           batch: Optional[int] = None, task: str = "classify", num_classes: Optional[int] = None,
           precision: str = "fp32", portable: bool = False, opset: int = 20, validate: bool = True,
           validate_batch: int = 2, calib_images=None, calib_num: Optional[int] = None,
           calib_method: Optional[str] = None, target: str = "trt",
           progress: Progress = _noop) -> Dict[str, object]:
    """Checkpoint -> folded ONNX (+ fp16) -> ORT parity vs the unfolded model -> OUT.report.json."""
    import torch

    from vitdeploy.export import fold, onnx as vonnx
    from vitdeploy.models.checkpoints import file_sha256
    from vitdeploy.models.registry import get_spec, random_images

    t_all = time.perf_counter()
    timings: Dict[str, float] = {}
    spec = get_spec(model)
    out = vonnx.check_writable(out)
    if out.suffix != ".onnx":
        raise UserError(f"output {out} should end in .onnx")
    if precision not in ("fp32", "fp16", "int8", "fp8"):
        raise UserError(f"--precision must be fp32, fp16, int8 or fp8, not {precision!r}")
    # --- quantization (issue 11): argument checks before any slow work
    quantized = precision in ("int8", "fp8")
    if quantized:
        from vitdeploy.export import quantize

        calib_num = quantize.DEFAULT_CALIB_NUM if calib_num is None else calib_num
        calib_method = calib_method or quantize.DEFAULT_METHOD
        quantize.check_args(precision, opset, target, calib_method, calib_images, calib_num)
    elif calib_images is not None or calib_num is not None or calib_method is not None or target != "trt":
        raise UserError("--calib-images/--calib-num/--calib-method/--target apply to --precision int8|fp8 only")
    # --- end quantization
    if sparsity is not None and not spec.sparsity:
        raise UserError(f"--sparsity applies to Swin models (SparseViT), not {model}")
    if portable and not spec.sparsity:
        progress(f"note: --portable changes nothing for {model} (it has no window ops)")
    if batch is not None and batch < 1:
        raise UserError(f"--batch must be >= 1 or 'dynamic', not {batch}")
    img_size = img_size or spec.default_img_size

    t = time.perf_counter()
    progress(f"[1/5] building {model} at {img_size}x{img_size}"
             + (f" from {checkpoint}" if checkpoint else " (random weights)"))
    ref = build_reference(model, checkpoint=checkpoint, img_size=img_size, task=task, sparsity=sparsity,
                          num_classes=num_classes, warn=progress)
    num_classes = ref.num_classes  # from the checkpoint's head when not given
    ckpt_sha = file_sha256(checkpoint) if checkpoint else RANDOM_WEIGHTS
    sparsity_cfg = getattr(ref, "sparsity", None)
    timings["build_s"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("[2/5] folding BatchNorm")
    deploy = fold.folded_copy(ref)
    n_bn_before, n_bn_after = fold.count_batchnorm(ref), fold.count_batchnorm(deploy)
    timings["fold_s"] = time.perf_counter() - t

    t = time.perf_counter()
    progress(f"[3/5] exporting ONNX (opset {opset}, batch {'dynamic' if batch is None else batch}"
             + (", portable" if portable else "") + ")")
    out_names = vonnx.output_names_for(task)
    example = torch.from_numpy(random_images(batch or 2, img_size))
    try:
        proto = vonnx.export_module(deploy, example, out_names, dynamic_batch=batch is None, opset=opset,
                                    portable=portable, uses_window_ops=bool(getattr(deploy, "uses_window_ops", False)))
    except RuntimeError as e:
        raise CheckFailed(f"ONNX export of {model} failed: {str(e).splitlines()[0]}")
    if precision == "fp16":
        from vitdeploy.export.precision import to_fp16

        proto = to_fp16(proto)
    calibration = None
    if quantized:  # issue 11: calibrated Q/DQ on the fp32 graph
        qres = quantize.quantize_onnx(proto, precision=precision, calib_images=calib_images,
                                      calib_num=calib_num, method=calib_method, target=target,
                                      mean=spec.mean, std=spec.std, progress=progress)
        proto, calibration = qres.model, qres.summary()
    meta = {"version": __version__, "model": model, "task": task, "img_size": str(img_size),
            "sparsity": (sparsity_cfg.to_json() if sparsity_cfg is not None and not sparsity_cfg.is_dense
                         else "null"),
            "precision": precision, "mean": json.dumps(list(spec.mean)), "std": json.dumps(list(spec.std)),
            "checkpoint_sha256": ckpt_sha, "num_classes": str(num_classes)}
    if calibration is not None:
        meta["calibration"] = json.dumps({k: calibration[k] for k in ("target", "method", "num_images", "source")})
    vonnx.set_metadata(proto, meta)
    proto.producer_name, proto.producer_version = "vitdeploy", __version__
    vonnx.check_model(proto)
    timings["export_s"] = time.perf_counter() - t

    t = time.perf_counter()
    progress(f"[4/5] writing {out}")
    nbytes = vonnx.save_model(proto, out)
    timings["write_s"] = time.perf_counter() - t

    report = {
        "vitdeploy_version": __version__, "model": model, "task": task, "img_size": img_size,
        "num_classes": num_classes, "precision": precision, "portable": portable,
        "sparsity": json.loads(meta["sparsity"]), "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": ckpt_sha, "opset": opset, "onnx": str(out), "onnx_bytes": nbytes,
        **vonnx.io_shapes(proto), "op_histogram": vonnx.op_histogram(proto),
        "batchnorm_modules": {"before_fold": n_bn_before, "after_fold": n_bn_after},
        "parameters": int(sum(p.numel() for p in ref.parameters())),
        "macs": count_macs(deploy, img_size),
    }
    if calibration is not None:
        report["calibration"] = calibration
    if sparsity_cfg is not None and not sparsity_cfg.is_dense:
        from vitdeploy.models.registry import build_model

        dense = fold.folded_copy(build_model(model, img_size=img_size, task=task, num_classes=num_classes))
        report["dense_macs"] = count_macs(dense, img_size)

    if validate:
        t = time.perf_counter()
        progress(f"[5/5] validating on ONNX Runtime (CPU) vs the unfolded PyTorch model, batch {validate_batch}")
        parity = validate_runners(ref, out, task=task, img_size=img_size, precision=precision,
                                  batch=validate_batch if batch is None else batch, out_names=out_names)
        report["parity"] = parity.to_dict()
        timings["validate_s"] = time.perf_counter() - t
        progress(parity.table())
    else:
        report["parity"] = None
    timings["total_s"] = time.perf_counter() - t_all
    report["timings"] = timings
    from vitdeploy.engines.bench import _peak_rss_mb

    report["peak_rss_mb"] = _peak_rss_mb()
    vonnx.atomic_write_json(report_path_for(out), report)
    if validate and not report["parity"]["passed"]:
        raise CheckFailed(f"{out}: parity check failed (see {report_path_for(out)})")
    return report


def validate_runners(ref_model, artifact, *, task, img_size, precision, batch=2, out_names=None,
                     images: Optional[np.ndarray] = None, backend: str = "ort", plugin_lib=None,
                     inputs_label: str = "random images, seed 0"):
    from vitdeploy.engines.parity import run_parity
    from vitdeploy.engines.runners import TorchRunner, make_artifact_runner
    from vitdeploy.export.onnx import output_names_for
    from vitdeploy.models.registry import random_images

    out_names = out_names or output_names_for(task)
    ref = TorchRunner(ref_model, output_names=out_names, input_shape=["batch", 3, img_size, img_size],
                      name="torch")
    cand = make_artifact_runner(backend, str(artifact), plugin_lib=plugin_lib)
    try:
        x = images if images is not None else random_images(batch, img_size, seed=0)
        return run_parity(ref, cand, x, precision=precision, task=task, inputs=inputs_label)
    finally:
        cand.close()


# ----------------------------------------------------------------------------- validate

def validate(artifact: os.PathLike, *, checkpoint=None, images=None, backend: Optional[str] = None,
             batch: int = 8, plugin_lib=None, progress: Progress = _noop):
    from vitdeploy.models.registry import preprocess_images

    artifact = Path(artifact)
    if not artifact.exists():
        raise UserError(f"not found: {artifact}")
    meta = artifact_metadata(artifact)
    backend = backend or ("trt" if artifact.suffix in (".engine", ".plan", ".trt") else "ort")
    img_size = int(meta["img_size"]) if "img_size" in meta else 224
    task = meta.get("task", "classify")
    precision = meta.get("precision", "fp32")
    progress(f"[1/3] rebuilding the PyTorch original: {meta.get('model')} ({task}, {img_size}px"
             + (f", sparsity {meta.get('sparsity')}" if meta.get("sparsity", "null") != "null" else "") + ")")
    ref = reference_from_metadata(meta, checkpoint=checkpoint, warn=progress, where=str(artifact))
    if images is not None:
        mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
        x = preprocess_images(images, img_size, mean, std)
        label = f"{len(x)} images from {images}"
    else:
        from vitdeploy.models.registry import random_images

        x = random_images(batch, img_size, seed=0)
        label = "random images, seed 0"
    progress(f"[2/3] running {backend} and torch on {label}")
    parity = validate_runners(ref, artifact, task=task, img_size=img_size, precision=precision,
                              images=x, backend=backend, plugin_lib=plugin_lib, inputs_label=label)
    progress("[3/3] comparing")
    return parity


# ----------------------------------------------------------------------------- bench

def bench(targets: Sequence[str], *, backends: Sequence[str] = ("torch", "ort"), batch: int = 1,
          threads: Optional[int] = None, iters: int = 50, warmup: int = 10, sparsity=None,
          img_size=None, checkpoint=None, plugin_lib=None, progress: Progress = _noop) -> List[dict]:
    """Benchmark each backend on the matching target, side by side in this one process.

    `targets` are artifacts (.onnx/.engine) or a model name; `torch` runs the PyTorch eager
    original rebuilt from the artifact's metadata (or the named model)."""
    import tempfile

    from vitdeploy.engines.bench import bench_runner
    from vitdeploy.engines.runners import TorchRunner, make_artifact_runner, set_threads
    from vitdeploy.export.onnx import output_names_for
    from vitdeploy.models.registry import SPECS, random_images

    set_threads(threads)
    onnx_t = [t for t in targets if str(t).endswith(".onnx")]
    engine_t = [t for t in targets if Path(t).suffix in (".engine", ".plan", ".trt")]
    model_t = [t for t in targets if t in SPECS]
    unknown = [t for t in targets if t not in onnx_t + engine_t + model_t]
    if unknown:
        if not Path(unknown[0]).exists() and not str(unknown[0]).endswith((".onnx", ".engine")):
            raise UserError(f"{unknown[0]}: neither a model name ({', '.join(SPECS)}) nor an .onnx/.engine file")
        raise UserError(f"{unknown[0]}: unknown artifact type; expected .onnx or .engine")
    for t in onnx_t + engine_t:
        if not Path(t).exists():
            raise UserError(f"not found: {t}")
    if batch < 1:
        raise UserError(f"--batch must be >= 1, not {batch}")
    meta = artifact_metadata(onnx_t[0] if onnx_t else engine_t[0]) if (onnx_t or engine_t) else None
    tmpdir = None
    if meta is None:
        if not model_t:
            raise UserError("bench needs an .onnx/.engine artifact or a model name")
        # a bare model name: export it to a temporary ONNX so ORT can be compared too
        if any(b.startswith("ort") for b in backends):
            tmpdir = tempfile.TemporaryDirectory(prefix="vitdeploy-bench-")
            p = Path(tmpdir.name) / f"{model_t[0]}.onnx"
            progress(f"exporting {model_t[0]} to a temporary ONNX for the ort backend")
            export(model_t[0], p, checkpoint=checkpoint, sparsity=sparsity, img_size=img_size,
                   validate=False, progress=_noop)
            onnx_t = [str(p)]
            meta = artifact_metadata(p)
        else:
            spec = SPECS[model_t[0]]
            meta = {"model": model_t[0], "img_size": str(img_size or spec.default_img_size), "task": "classify",
                    "sparsity": "null", "checkpoint_sha256": RANDOM_WEIGHTS, "num_classes": "1000"}
            if sparsity is not None:
                from vitdeploy.models.registry import build_model

                cfg = build_model(model_t[0], img_size=int(meta["img_size"]), sparsity=sparsity).sparsity
                meta["sparsity"] = cfg.to_json() if cfg is not None else "null"
    img = int(meta["img_size"])
    task = meta.get("task", "classify")
    x = random_images(batch, img, seed=0)
    results = []
    try:
        for be in backends:
            if be == "torch":
                progress("building the PyTorch eager original")
                runner = TorchRunner(reference_from_metadata(meta, checkpoint=checkpoint, where="artifact"),
                                     output_names=output_names_for(task), input_shape=["batch", 3, img, img],
                                     threads=threads)
            elif be in ("ort", "ort-cuda", "ort-trt"):
                if not onnx_t:
                    raise UserError(f"--backend {be} needs an .onnx artifact among the targets")
                runner = make_artifact_runner(be, onnx_t[0], threads=threads)
            elif be == "trt":
                if not engine_t:
                    raise UserError("--backend trt needs an .engine artifact among the targets "
                                    "(build one with `vitdeploy build MODEL.onnx -o MODEL.engine`)")
                runner = make_artifact_runner("trt", engine_t[0], plugin_lib=plugin_lib)
            else:
                raise UserError(f"unknown backend {be!r}; choose from torch, ort, ort-cuda, ort-trt, trt")
            progress(f"benchmarking {be}: batch {batch}, {warmup} warm-up + {iters} timed iterations"
                     + (f", {threads} threads" if threads else ""))
            try:
                r = bench_runner(runner, x, warmup=warmup, iters=iters, threads=threads)
            finally:
                runner.close()
            r.update({"model": meta["model"], "img_size": img, "sparsity": json.loads(meta.get("sparsity", "null")),
                      "precision": meta.get("precision", "fp32")})
            results.append(r)
    finally:
        if tmpdir:
            tmpdir.cleanup()
    return results


# ----------------------------------------------------------------------------- info

def info(artifact: os.PathLike) -> Dict[str, object]:
    p = Path(artifact)
    if not p.exists():
        raise UserError(f"not found: {p}")
    if p.suffix == ".onnx":
        from vitdeploy.export.onnx import io_shapes, load_onnx, op_histogram

        proto = load_onnx(p)
        meta = {k[len("vitdeploy."):]: v for k, v in ((m.key, m.value) for m in proto.metadata_props)
                if k.startswith("vitdeploy.")}
        return {"artifact": str(p), "kind": "onnx", "bytes": p.stat().st_size, "metadata": meta,
                "opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
                **io_shapes(proto), "custom_nodes": sum(n.domain == "vitdeploy" for n in proto.graph.node),
                "local_functions": [f"{f.domain}::{f.name}" for f in proto.functions],
                "nodes": len(proto.graph.node), "op_histogram": op_histogram(proto)}
    if p.suffix in (".engine", ".plan", ".trt"):
        from vitdeploy.engines.manifest import read_manifest

        return {"artifact": str(p), "kind": "tensorrt-engine", "bytes": p.stat().st_size,
                "manifest": read_manifest(p)}
    raise UserError(f"{p}: unknown artifact type {p.suffix!r}; expected .onnx or .engine")
