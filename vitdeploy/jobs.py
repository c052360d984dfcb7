"""The user-level jobs behind the CLI verbs: export (+reference +validate +report), validate, bench, info.

These compose the layers (models -> export -> engines) and sit above all of them; cli.py only
parses argv, prints and maps exceptions to exit codes. Progress goes through a callback so the
library stays silent when used from Python. torch is imported only inside the jobs that rebuild
the PyTorch original: `validate` against an OUT.ref.npz runs without it.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from vitdeploy import __version__
from vitdeploy.errors import CheckFailed, UserError
from vitdeploy.validation.parity import QUANTIZED

Progress = Callable[[str], None]
RANDOM_WEIGHTS = "random-seed-0"
PRECISIONS = ("fp32", "fp16") + QUANTIZED
TORCH_REFERENCE = "torch"  # what produced a reference's outputs: the unfolded PyTorch original


def _noop(msg: str) -> None:
    pass


def report_path_for(onnx_path: os.PathLike) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.stem + ".report.json")


# ----------------------------------------------------------------------------- reference models

def meta_size(meta: Dict[str, str], where: str = "artifact"):
    """The artifact's input size (ImageSize) from its metadata, or its model's default."""
    from vitdeploy.models.registry import SPECS
    from vitdeploy.models.size import ImageSize

    if "img_size" in meta:
        return ImageSize.parse(meta["img_size"], f"{where} metadata img_size")
    return ImageSize.parse(SPECS[meta["model"]].default_img_size if meta.get("model") in SPECS else 224)


def build_reference(model: str, *, checkpoint=None, img_size=None, task="classify", sparsity=None,
                    num_classes=None, warn: Optional[Progress] = None, norm_order=None):
    """The unfolded PyTorch model: with the checkpoint, or deterministic random weights.

    Random weights are randomised non-trivially (BN statistics included), with a fixed seed, so
    that an export made without a checkpoint can be validated later from its metadata alone."""
    from vitdeploy.models.registry import build_model, randomize_for_parity

    m = build_model(model, num_classes=num_classes, img_size=img_size, task=task, sparsity=sparsity,
                    checkpoint=checkpoint, norm_order=norm_order)
    if checkpoint is None:
        if warn:
            warn(f"warning: no --checkpoint given: {model} has random weights (seed 0); "
                 "parity and speed are meaningful, predictions are not")
        randomize_for_parity(m, seed=0)
    return m.eval()


def reference_from_metadata(meta: Dict[str, str], checkpoint=None, warn: Optional[Progress] = None,
                            where: str = "artifact"):
    """Rebuild the PyTorch original an artifact was exported from."""
    from vitdeploy.fileio import file_sha256

    if "model" not in meta:
        raise UserError(f"{where} has no vitdeploy metadata (was it exported by vitdeploy?); "
                        "validate needs to know the model it came from")
    recorded = meta.get("checkpoint_sha256", RANDOM_WEIGHTS)
    if checkpoint is None and recorded != RANDOM_WEIGHTS:
        raise UserError(f"{where} was exported from a checkpoint (sha256 {recorded[:12]}…); "
                        "pass the same file with --checkpoint, or compare with --reference OUT.ref.npz")
    if checkpoint is not None and warn:
        sha = file_sha256(checkpoint)
        if sha != recorded:
            warn(f"warning: --checkpoint sha256 {sha[:12]}… differs from the one the export used "
                 f"({recorded[:12]}…); parity will compare different weights")
    sparsity = json.loads(meta.get("sparsity", "null"))
    if isinstance(sparsity, dict):
        from vitdeploy.models.sparsity import SparsityConfig

        sparsity = SparsityConfig(ratios=sparsity["ratios"], source=f"{where} metadata")
    from vitdeploy.models.registry import SPECS

    norm_order = meta.get("norm_order")
    if norm_order is None and getattr(SPECS.get(meta["model"]), "family", None) == "swin":
        norm_order = "sparsevit"  # exported before norm_order was recorded: the only order there was
    return build_reference(meta["model"], checkpoint=checkpoint, img_size=meta_size(meta, where),
                           task=meta.get("task", "classify"), sparsity=sparsity,
                           num_classes=int(meta.get("num_classes", 1000)), norm_order=norm_order)


def torch_runner_for(model, task: str, img_size, threads: Optional[int] = None, name: str = "torch"):
    from vitdeploy.engines.runners import TorchRunner
    from vitdeploy.export.onnx import output_names_for
    from vitdeploy.models.size import as_size

    size = as_size(img_size)
    return TorchRunner(model, output_names=output_names_for(task, model), input_shape=["batch", 3, size.h, size.w],
                       threads=threads, name=name)


def preprocess_for(meta: Dict[str, str], images) -> np.ndarray:
    """Real images preprocessed the way the artifact's metadata says the model expects (size,
    resize mode, crop, interpolation, mean/std)."""
    from vitdeploy.models.preprocess import DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION, preprocess_images

    return preprocess_images(images, meta_size(meta), json.loads(meta["mean"]), json.loads(meta["std"]),
                             crop_pct=float(meta.get("crop_pct", DEFAULT_CROP_PCT)),
                             interpolation=meta.get("interpolation", DEFAULT_INTERPOLATION),
                             resize=meta.get("resize", "crop"))


@contextmanager
def _timed(timings: Dict[str, float], key: str):
    t = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t


# ----------------------------------------------------------------------------- export

@dataclass
class ExportRequest:
    """The export's arguments, checked (`_check_export`) before any slow step runs."""
    model: str
    out: Path
    checkpoint: Optional[os.PathLike]
    sparsity: object
    img_size: object  # ImageSize
    batch: Optional[int]
    task: str
    num_classes: Optional[int]
    precision: str
    portable: bool
    opset: int
    images: Optional[os.PathLike]
    reference_batch: int
    spec: object = None
    calib_images: Optional[os.PathLike] = None
    calib_num: Optional[int] = None
    calib_method: Optional[str] = None
    target: str = "trt"
    resize: str = "crop"
    norm_order: Optional[str] = None
    timings: Dict[str, float] = field(default_factory=dict)


def _check_export(model, out, *, checkpoint, sparsity, img_size, batch, task, num_classes, precision, portable,
                  opset, images, validate_batch, calib_images, calib_num, calib_method, target,
                  progress, resize=None, norm_order=None) -> ExportRequest:
    from vitdeploy.export.onnx import check_writable
    from vitdeploy.models.preprocess import check_resize
    from vitdeploy.models.registry import check_size, get_spec

    spec = get_spec(model)
    size = check_size(model, img_size)  # exit 2 naming the nearest legal sizes, before anything is written
    resize = check_resize(resize) if resize is not None else spec.default_resize(task)
    if norm_order is not None and not spec.sparsity:
        raise UserError(f"--norm-order applies to Swin models, not {model}")
    if sparsity is not None and spec.sparsity:  # keep-0 per block on the padded grid, before any slow step
        from vitdeploy.models.sparsity import parse_sparsity
        from vitdeploy.models.swin import CONFIGS

        parse_sparsity(sparsity, CONFIGS[model]["depths"], img_size=size)
    out = check_writable(out)
    if out.suffix != ".onnx":
        raise UserError(f"output {out} should end in .onnx")
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision in QUANTIZED:  # every calibration check before the slow steps
        from vitdeploy.export import quantize

        calib_num = quantize.DEFAULT_CALIB_NUM if calib_num is None else calib_num
        calib_method = calib_method or quantize.DEFAULT_METHOD
        quantize.check_args(precision, opset, target, calib_method, calib_images, calib_num)
    elif calib_images is not None or calib_num is not None or calib_method is not None or target != "trt":
        raise UserError("--calib-images/--calib-num/--calib-method/--target apply to --precision int8|fp8 only")
    if sparsity is not None and not spec.sparsity:
        raise UserError(f"--sparsity applies to Swin models (SparseViT), not {model}")
    if portable and not spec.sparsity:
        progress(f"note: --portable changes nothing for {model} (it has no window ops)")
    if batch is not None and batch < 1:
        raise UserError(f"--batch must be >= 1 or 'dynamic', not {batch}")
    if images is not None and not Path(images).exists():
        raise UserError(f"--images: {images} not found")
    return ExportRequest(model, out, checkpoint, sparsity, size, batch, task,
                         num_classes, precision, portable, opset, images,
                         validate_batch if batch is None else batch, spec, calib_images, calib_num, calib_method,
                         target, resize, norm_order)


def _export_graph(req: ExportRequest, deploy):
    """The folded model -> a checked-later ModelProto (custom nodes and functions finalized)."""
    import torch

    from vitdeploy.export import onnx as vonnx
    from vitdeploy.models.preprocess import random_images

    example = torch.from_numpy(random_images(req.batch or 2, req.img_size))
    try:
        return vonnx.export_module(deploy, example, vonnx.output_names_for(req.task, deploy),
                                   dynamic_batch=req.batch is None,
                                   opset=req.opset, portable=req.portable,
                                   uses_window_ops=bool(getattr(deploy, "uses_window_ops", False)))
    except RuntimeError as e:
        raise CheckFailed(f"ONNX export of {req.model} failed: {str(e).splitlines()[0]}")


def _precision_pass(proto, req: ExportRequest, progress: Progress):
    """Where the graph gets its precision (TensorRT 11 is strongly typed: precision lives in the graph).

    Returns (proto, calibration summary or None)."""
    if req.precision == "fp16":
        from vitdeploy.export.precision import to_fp16

        return to_fp16(proto), None
    if req.precision in QUANTIZED:  # calibrated Q/DQ on the fp32 graph
        from vitdeploy.export import quantize

        spec = req.spec
        res = quantize.quantize_onnx(proto, precision=req.precision, calib_images=req.calib_images,
                                     calib_num=req.calib_num, method=req.calib_method, target=req.target,
                                     mean=spec.mean, std=spec.std, crop_pct=spec.crop_pct,
                                     interpolation=req.spec.interpolation_for(req.resize), progress=progress,
                                     img_size=req.img_size, resize=req.resize)
        return res.model, res.summary()
    return proto, None


def _export_metadata(req: ExportRequest, ckpt_sha: str, sparsity_cfg, num_classes: int, ref=None) -> Dict[str, str]:
    spec = req.spec
    dense = sparsity_cfg is None or sparsity_cfg.is_dense
    meta = {"version": __version__, "model": req.model, "task": req.task, "img_size": str(req.img_size),
            "sparsity": "null" if dense else sparsity_cfg.to_json(), "precision": req.precision,
            "mean": json.dumps(list(spec.mean)), "std": json.dumps(list(spec.std)),
            "crop_pct": str(spec.crop_pct), "interpolation": spec.interpolation_for(req.resize), "resize": req.resize,
            "checkpoint_sha256": ckpt_sha, "num_classes": str(num_classes)}
    if getattr(ref, "norm_order", None):  # Swin: which pad/LN1 order the export computes (issue 16)
        meta["norm_order"] = ref.norm_order
    if req.task == "backbone" and getattr(ref, "feature_strides", None):
        meta["feature_strides"] = json.dumps(list(ref.feature_strides))
    return meta


def _reference_inputs(req: ExportRequest, meta: Dict[str, str]):
    """Fixed-seed random images, then the user's real ones (--images): what OUT.ref.npz stores."""
    from vitdeploy.models.preprocess import random_images

    x = random_images(req.reference_batch, req.img_size, seed=0)
    label = f"{len(x)} random images (seed 0)"
    if req.images is not None:
        real = preprocess_for(meta, req.images)
        x = np.concatenate([x, real])
        label += f" + {len(real)} images from {req.images}"
    return x, label


def write_reference(ref_model, onnx_path: os.PathLike, meta: Dict[str, str], images: np.ndarray,
                    inputs_label: str) -> Path:
    """Run the unfolded PyTorch model on `images` and write OUT.ref.npz beside the ONNX."""
    from vitdeploy.validation.parity import infer_in_chunks
    from vitdeploy.validation.reference_outputs import ReferenceOutputs, make_provenance, reference_path_for

    runner = torch_runner_for(ref_model, meta["task"], meta_size(meta), name=TORCH_REFERENCE)
    outputs = infer_in_chunks(runner, images)
    ref = ReferenceOutputs({runner.inputs[0].name: images}, outputs,
                           make_provenance(metadata=meta, inputs=inputs_label, reference=TORCH_REFERENCE))
    return ref.save(reference_path_for(onnx_path))


def _export_report(req: ExportRequest, proto, ref, deploy, *, ckpt_sha, meta, nbytes, bn) -> Dict[str, object]:
    from vitdeploy.artifact import onnx_tensors
    from vitdeploy.export import fold
    from vitdeploy.export.onnx import op_histogram
    from vitdeploy.models.macs import count_macs
    from vitdeploy.models.registry import build_model

    io = onnx_tensors(proto)
    report = {
        "vitdeploy_version": __version__, "model": req.model, "task": req.task, "img_size": str(req.img_size),
        "resize": req.resize,
        "num_classes": int(meta["num_classes"]), "precision": req.precision, "portable": req.portable,
        "sparsity": json.loads(meta["sparsity"]), "checkpoint": str(req.checkpoint) if req.checkpoint else None,
        "checkpoint_sha256": ckpt_sha, "opset": req.opset, "onnx": str(req.out), "onnx_bytes": nbytes,
        **{kind: {t.name: {"shape": t.shape, "dtype": t.dtype} for t in io[kind]} for kind in io},
        "op_histogram": op_histogram(proto),
        "batchnorm_modules": {"before_fold": bn[0], "after_fold": bn[1]},
        "parameters": int(sum(p.numel() for p in ref.parameters())),
        "macs": count_macs(deploy, req.img_size),
    }
    if meta["sparsity"] != "null":
        dense = fold.folded_copy(build_model(req.model, img_size=req.img_size, task=req.task,
                                             num_classes=report["num_classes"],
                                             norm_order=meta.get("norm_order") if meta.get("sparsity") == "null"
                                             else None))
        report["dense_macs"] = count_macs(dense, req.img_size)
    return report


def export(model: str, out: os.PathLike, *, checkpoint=None, sparsity=None, img_size=None,
           batch: Optional[int] = None, task: str = "classify", num_classes: Optional[int] = None,
           precision: str = "fp32", portable: bool = False, opset: int = 20, validate: bool = True,
           validate_batch: int = 2, images: Optional[os.PathLike] = None, calib_images=None,
           calib_num: Optional[int] = None, calib_method: Optional[str] = None, target: str = "trt",
           resize: Optional[str] = None, norm_order: Optional[str] = None,
           progress: Progress = _noop) -> Dict[str, object]:
    """Checkpoint -> folded ONNX (+ precision pass) -> OUT.ref.npz -> ORT parity -> OUT.report.json."""
    from vitdeploy.checks import parity_from_reference
    from vitdeploy.export import fold
    from vitdeploy.export import onnx as vonnx
    from vitdeploy.fileio import atomic_write_json, file_sha256
    from vitdeploy.validation.latency import peak_rss_mb

    t_all = time.perf_counter()
    req = _check_export(model, out, checkpoint=checkpoint, sparsity=sparsity, img_size=img_size, batch=batch,
                        task=task, num_classes=num_classes, precision=precision, portable=portable, opset=opset,
                        images=images, validate_batch=validate_batch, calib_images=calib_images,
                        calib_num=calib_num, calib_method=calib_method, target=target, progress=progress,
                        resize=resize, norm_order=norm_order)
    timings = req.timings

    with _timed(timings, "build_s"):
        progress(f"[1/5] building {model} at {req.img_size.label()}"
                 + (f" from {checkpoint}" if checkpoint else " (random weights)"))
        ref = build_reference(model, checkpoint=checkpoint, img_size=req.img_size, task=task, sparsity=sparsity,
                              num_classes=num_classes, warn=progress, norm_order=norm_order)
        ckpt_sha = file_sha256(checkpoint) if checkpoint else RANDOM_WEIGHTS
    with _timed(timings, "fold_s"):
        progress("[2/5] folding BatchNorm")
        deploy = fold.folded_copy(ref)
        bn = fold.count_batchnorm(ref), fold.count_batchnorm(deploy)
    with _timed(timings, "export_s"):
        progress(f"[3/5] exporting ONNX (opset {opset}, batch {'dynamic' if batch is None else batch}"
                 + (", portable" if portable else "") + ")")
        proto, calibration = _precision_pass(_export_graph(req, deploy), req, progress)
        # num_classes comes from the checkpoint's head when not given
        meta = _export_metadata(req, ckpt_sha, getattr(ref, "sparsity", None), ref.num_classes, ref)
        if calibration is not None:
            meta["calibration"] = json.dumps({k: calibration[k] for k in ("target", "method", "num_images", "source")})
        vonnx.set_metadata(proto, meta)
        proto.producer_name, proto.producer_version = "vitdeploy", __version__
        vonnx.check_model(proto)
    with _timed(timings, "write_s"):
        progress(f"[4/5] writing {req.out} and its reference outputs")
        nbytes = vonnx.save_model(proto, req.out)
        x, label = _reference_inputs(req, meta)
        ref_path = write_reference(ref, req.out, meta, x, label)

    report = _export_report(req, proto, ref, deploy, ckpt_sha=ckpt_sha, meta=meta, nbytes=nbytes, bn=bn)
    report["reference"] = str(ref_path)
    if calibration is not None:
        report["calibration"] = calibration
    report["parity"] = None
    if validate:
        with _timed(timings, "validate_s"):
            progress(f"[5/5] validating on ONNX Runtime (CPU) vs the unfolded PyTorch model ({label})")
            parity = parity_from_reference(req.out, ref_path, backend="ort")
            report["parity"] = parity.to_dict()
            progress(parity.table())
    timings["total_s"] = time.perf_counter() - t_all
    report["timings"] = timings
    report["peak_rss_mb"] = peak_rss_mb()
    atomic_write_json(report_path_for(req.out), report)
    if validate and not report["parity"]["passed"]:
        raise CheckFailed(f"{req.out}: parity check failed (see {report_path_for(req.out)})")
    return report


# ----------------------------------------------------------------------------- validate

def validate(artifact: os.PathLike, *, reference: Optional[os.PathLike] = None, checkpoint=None, images=None,
             backend: Optional[str] = None, batch: int = 8, plugin_lib=None, progress: Progress = _noop):
    """Parity of an .onnx/engine: against OUT.ref.npz (given, or found beside it; no torch needed), or
    against the PyTorch original rebuilt from its metadata (with --checkpoint / --images, or no reference)."""
    from vitdeploy.artifact import open_artifact
    from vitdeploy.checks import parity_from_reference

    if reference is not None and (checkpoint is not None or images is not None):
        raise UserError("--reference compares the inputs and outputs stored in it: drop --checkpoint/--images, "
                        "or drop --reference to rebuild the PyTorch original")
    art = open_artifact(artifact)
    if checkpoint is None and images is None:
        parity = parity_from_reference(art.path, reference, backend=backend, plugin_lib=plugin_lib,
                                       progress=progress)
        if parity is not None:
            return parity
    return _validate_against_torch(art, checkpoint=checkpoint, images=images, backend=backend, batch=batch,
                                   plugin_lib=plugin_lib, progress=progress)


def _validate_against_torch(art, *, checkpoint, images, backend, batch, plugin_lib, progress):
    from vitdeploy import optional
    from vitdeploy.engines.backends import default_backend, make_artifact_runner
    from vitdeploy.models.preprocess import random_images
    from vitdeploy.validation.parity import parity_class, run_parity
    from vitdeploy.validation.reference_outputs import reference_path_for

    if not optional.available("torch"):
        raise UserError(f"{art.path}: no {reference_path_for(art.path).name} beside it and PyTorch is not "
                        "installed to rebuild the original: pass --reference OUT.ref.npz (written by export)")
    meta = art.metadata
    backend = backend or default_backend(art)
    img_size = meta_size(meta, str(art.path))
    task = meta.get("task", "classify")
    progress(f"[1/3] rebuilding the PyTorch original: {meta.get('model')} ({task}, {img_size.label()}"
             + (f", sparsity {meta.get('sparsity')}" if meta.get("sparsity", "null") != "null" else "") + ")")
    ref = reference_from_metadata(meta, checkpoint=checkpoint, warn=progress, where=str(art.path))
    if images is not None:
        x = preprocess_for(meta, images)
        label = f"{len(x)} images from {images}"
    else:
        x = random_images(batch, img_size, seed=0)
        label = "random images, seed 0"
    progress(f"[2/3] running {backend} and torch on {label}")
    cand = make_artifact_runner(backend, str(art.path), plugin_lib=plugin_lib)
    try:
        parity = run_parity(torch_runner_for(ref, task, img_size), cand, x,
                            precision=parity_class(meta), task=task, inputs=label)
    finally:
        cand.close()
    progress("[3/3] compared")
    return parity


# ----------------------------------------------------------------------------- bench

BENCH_BACKENDS = ("torch", "ort", "ort-cuda", "ort-trt", "trt")


@dataclass
class BenchTargets:
    onnx: List[str]
    engine: List[str]
    model: List[str]


def _bench_targets(targets: Sequence[str]) -> BenchTargets:
    from vitdeploy.artifact import split_targets
    from vitdeploy.models.registry import SPECS

    by_kind = split_targets(targets)
    models = [t for t in by_kind["other"] if t in SPECS]
    unknown = [t for t in by_kind["other"] if t not in SPECS]
    if unknown:
        if not Path(unknown[0]).exists():
            raise UserError(f"{unknown[0]}: neither a model name ({', '.join(SPECS)}) nor an .onnx/.engine file")
        raise UserError(f"{unknown[0]}: unknown artifact type; expected .onnx or .engine")
    for t in by_kind["onnx"] + by_kind["engine"]:
        if not Path(t).exists():
            raise UserError(f"not found: {t}")
    return BenchTargets(by_kind["onnx"], by_kind["engine"], models)


def _model_metadata(model: str, img_size, sparsity) -> Dict[str, str]:
    """What an export of `model` would record, for a torch-only bench of a bare model name."""
    from vitdeploy.models.registry import SPECS, build_model, check_size

    meta = {"model": model, "img_size": str(check_size(model, img_size or SPECS[model].default_img_size)),
            "task": "classify", "sparsity": "null", "checkpoint_sha256": RANDOM_WEIGHTS, "num_classes": "1000"}
    if sparsity is not None:
        cfg = build_model(model, img_size=meta["img_size"], sparsity=sparsity).sparsity
        meta["sparsity"] = cfg.to_json() if cfg is not None else "null"
    return meta


def _bench_artifacts(be: str, t: BenchTargets) -> List[Optional[str]]:
    """What `be` times: every .onnx for the ONNX Runtime backends, every engine for trt, torch once."""
    if be == "torch":
        return [None]
    if be in ("ort", "ort-cuda", "ort-trt"):
        if not t.onnx:
            raise UserError(f"--backend {be} needs an .onnx artifact among the targets")
        return list(t.onnx)
    if be == "trt":
        if not t.engine:
            raise UserError("--backend trt needs an .engine artifact among the targets "
                            "(build one with `vitdeploy build MODEL.onnx -o MODEL.engine`)")
        return list(t.engine)
    raise UserError(f"unknown backend {be!r}; choose from {', '.join(BENCH_BACKENDS)}")


def _bench_runner_for(be: str, artifact: Optional[str], meta: Dict[str, str], *, checkpoint, threads, plugin_lib,
                      progress):
    from vitdeploy.engines.backends import make_artifact_runner

    if be == "torch":
        progress("building the PyTorch eager original")
        model = reference_from_metadata(meta, checkpoint=checkpoint, where="artifact")
        return torch_runner_for(model, meta.get("task", "classify"), meta_size(meta), threads=threads)
    return make_artifact_runner(be, artifact, threads=threads, plugin_lib=plugin_lib)


def _artifact_metadata(t: BenchTargets) -> Dict[str, Dict[str, str]]:
    """Each artifact's metadata; they must take the same input, since every row times the same images."""
    from vitdeploy.artifact import open_artifact

    metas = {a: open_artifact(a).metadata for a in t.onnx + t.engine}
    sizes = {a: m.get("img_size") for a, m in metas.items()}
    if len(set(sizes.values())) > 1:
        raise UserError("bench compares artifacts on the same images, but their input sizes differ: "
                        + ", ".join(f"{a} {v}px" for a, v in sizes.items()))
    return metas


def bench(targets: Sequence[str], *, backends: Sequence[str] = ("torch", "ort"), batch: int = 1,
          threads: Optional[int] = None, iters: int = 50, warmup: int = 10, sparsity=None,
          img_size=None, checkpoint=None, plugin_lib=None, progress: Progress = _noop) -> List[dict]:
    """Benchmark each backend on every matching target, side by side in this one process.

    `targets` are artifacts (.onnx/.engine) or a model name; `torch` runs the PyTorch eager
    original rebuilt from the first artifact's metadata (or the named model). Several ONNX files
    (e.g. fp32 and int8 exports of one model) each get a row per ONNX Runtime backend."""
    import tempfile

    from vitdeploy.engines.runners import set_threads
    from vitdeploy.models.preprocess import random_images
    from vitdeploy.validation.latency import bench_runner

    set_threads(threads)
    t = _bench_targets(targets)
    if batch < 1:
        raise UserError(f"--batch must be >= 1, not {batch}")
    if not (t.onnx or t.engine or t.model):
        raise UserError("bench needs an .onnx/.engine artifact or a model name")
    with tempfile.TemporaryDirectory(prefix="vitdeploy-bench-") as tmp:
        if not (t.onnx or t.engine) and any(b.startswith("ort") for b in backends):
            # a bare model name: export it to a temporary ONNX so ORT can be compared too
            p = Path(tmp) / f"{t.model[0]}.onnx"
            progress(f"exporting {t.model[0]} to a temporary ONNX for the ort backend")
            export(t.model[0], p, checkpoint=checkpoint, sparsity=sparsity, img_size=img_size, validate=False)
            t.onnx = [str(p)]
        metas = _artifact_metadata(t)
        meta = next(iter(metas.values())) if metas else _model_metadata(t.model[0], img_size, sparsity)
        x = random_images(batch, meta_size(meta), seed=0)
        results = []
        for be in backends:
            for artifact in _bench_artifacts(be, t):
                runner = _bench_runner_for(be, artifact, meta, checkpoint=checkpoint, threads=threads,
                                           plugin_lib=plugin_lib, progress=progress)
                m = metas.get(artifact, meta)
                progress(f"benchmarking {be}" + (f" on {artifact}" if artifact else "")
                         + f": batch {batch}, {warmup} warm-up + {iters} timed iterations"
                         + (f", {threads} threads" if threads else ""))
                try:
                    r = bench_runner(runner, x, warmup=warmup, iters=iters, threads=threads)
                finally:
                    runner.close()
                r.update({"artifact": artifact, "model": m["model"], "img_size": str(meta_size(m)),
                          "sparsity": json.loads(m.get("sparsity", "null")), "precision": m.get("precision", "fp32")})
                results.append(r)
    return results


# ----------------------------------------------------------------------------- info

def info(artifact: os.PathLike) -> Dict[str, object]:
    from vitdeploy.artifact import open_artifact
    from vitdeploy.export.onnx import op_histogram
    from vitdeploy.export.window_nodes import DOMAIN
    from vitdeploy.validation.reference_outputs import find_reference

    art = open_artifact(artifact)
    ref = find_reference(art.path, art.source_onnx)
    out: Dict[str, object] = {
        "artifact": str(art.path), "kind": art.kind, "bytes": art.nbytes, "metadata": art.metadata,
        "inputs": {t.name: {"shape": t.shape, "dtype": t.dtype} for t in art.inputs},
        "outputs": {t.name: {"shape": t.shape, "dtype": t.dtype} for t in art.outputs},
        "batch_profile": vars(art.batch) if art.batch else None,
        "reference": str(ref) if ref else None}
    if art.kind == "onnx":
        proto = art.onnx
        out.update({"opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
                    "custom_nodes": sum(n.domain == DOMAIN for n in proto.graph.node),
                    "local_functions": [f"{f.domain}::{f.name}" for f in proto.functions],
                    "nodes": len(proto.graph.node), "op_histogram": op_histogram(proto)})
    else:
        out.update({"source_onnx": str(art.source_onnx) if art.source_onnx else None, "manifest": art.manifest})
    return out
