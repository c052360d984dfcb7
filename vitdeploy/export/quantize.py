"""Calibrated INT8 / FP8 Q/DQ graphs (TensorRT 11 has no implicit INT8: precision lives in the graph).

Why ONNX Runtime's quantizer and not NVIDIA ModelOpt: `nvidia-modelopt[onnx]` 0.47 pins
`onnx~=1.21`, `onnxruntime-gpu~=1.24` and `cupy-cuda12x` on Linux x86, which conflicts with our
pins (onnx 1.23.2, onnxruntime 1.31.1 CPU) and cannot install on a CPU machine. So calibration and
Q/DQ insertion use `onnxruntime.quantization` (QDQ format, symmetric, per-channel signed int8
weights) and a small post-pass on the proto makes the graph follow TensorRT's explicit-quantization
rules exactly:

- Only the data and weight inputs of Conv / MatMul / Gemm are quantized (`QUANTIZED_OPS`); ORT replaces a
  quantized tensor in *all* its consumers, so every other consumer (LayerNorm, residual Add, the
  importance score, WindowGather, graph outputs) is rewired to the float tensor: normalizations,
  Softmax, GELU, TopK, index math and the window ops stay float, and see float inputs.
- Activations per tensor, weights per output channel (Conv/Gemm-transB axis 0, MatMul last axis),
  all zero points 0 (`target="trt"`).
- Biases stay float for TensorRT (its DequantizeLinear takes no int32; it fuses the float bias);
  the `ort-cpu` flavour keeps ORT's own placement (outputs quantized too, int32 bias DQ) and uint8
  activations (asymmetric), which ORT's CPU QLinearConv / MatMulIntegerToFloat fuse on x86 (VNNI
  u8*s8); it is not meant for TensorRT.
- FP8: the same placement and calibrated ranges with `float8e4m3fn` Q/DQ (opset >= 19), scale =
  amax / 448 per tensor (activations) or per output channel (weights). ORT CPU executes these
  Q/DQ nodes, so FP8's accuracy is measured on CPU; its speed only means something on a GPU.

The window gather/scatter custom nodes and their model-local functions are never touched (ORT's
quantizer edits the main graph only; we exclude the custom nodes explicitly too).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from vitdeploy.errors import UserError
from vitdeploy.models.preprocess import DEFAULT_CROP_PCT, DEFAULT_INTERPOLATION

PRECISIONS = ("int8", "fp8")
TARGETS = ("trt", "ort-cpu")
METHODS = ("minmax", "entropy", "percentile")
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
FP8_MIN_OPSET = 19
FP8_MAX = 448.0  # largest finite float8e4m3fn
INT8_MAX = 127.0
CUSTOM_DOMAIN = "vitdeploy"
# Percentile (99.999 %) by measurement: on a pruned Swin-T (224) every feature map's cosine was
# >= 0.9997 with it and 0.9991 with min/max; on the dense Swin-T min/max, entropy and percentile
# all give 0.9996-0.9999, so percentile costs nothing where min/max is already fine.
DEFAULT_METHOD = "percentile"
DEFAULT_CALIB_NUM = 32
# Images the model was not calibrated on reach past the calibrated ranges: every activation range
# gets ACTIVATION_HEADROOM (x the calibrated amax; free at run time). Measured on a dense Swin-T
# backbone (random weights, 8 smooth random calibration images, 8 *other* images, last feature
# map's cosine to fp32 at 224): 0.99910 without, 0.99928 / 0.99931 / 0.99916 with 1.25x / 1.5x /
# 2x (2x loses resolution); min/max instead of percentile 0.99919 at 448.
# The most sensitive matmul is the attention's output projection (the weight MatMul reading
# softmax(QK^T)V): keeping its 12 instances float (FLOAT_ATTENTION_OUTPUT) gave 0.99937, with
# the headroom 0.99948, but costs speed (ORT CPU b1: int8 1.43x -> 1.30x of fp32 at 224, loaded
# machine), so it is an option, not the default. README "INT8 on images it was not calibrated on".
ACTIVATION_HEADROOM = 1.5
FLOAT_ATTENTION_OUTPUT = False
_SHAPE_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")


@dataclass
class QuantizeResult:
    model: object  # onnx.ModelProto
    precision: str
    target: str
    method: str
    num_images: int
    ranges: Dict[str, List[float]]  # calibrated tensor -> [min, max]
    quantized_nodes: Dict[str, int]  # op type -> count
    float_nodes: Dict[str, int] = field(default_factory=dict)  # Conv/MatMul/Gemm left float
    source: str = ""
    headroom: float = 1.0  # the calibrated activation ranges were widened by this factor

    def summary(self) -> dict:
        return {"precision": self.precision, "target": self.target, "method": self.method,
                "num_images": self.num_images, "headroom": self.headroom, "source": self.source,
                "quantized_nodes": self.quantized_nodes,
                "float_nodes": self.float_nodes, "ranges": self.ranges}


def ai_onnx_opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def check_args(precision: str, opset: int, target: str = "trt", method: str = DEFAULT_METHOD,
               calib_images=None, calib_num: int = DEFAULT_CALIB_NUM) -> None:
    """Every bad-input check of a quantized export, cheap enough to run before building the model."""
    check_precision_args(precision, opset, target, method)
    if calib_num < 1:
        raise UserError(f"--precision {precision} needs calibration inputs: --calib-num must be >= 1, not {calib_num}")
    if calib_images is not None:
        _check_readable(calibration_files(calib_images, calib_num))


def _check_readable(files: List[Path]) -> None:
    """Header check of every calibration image, so a broken file fails before the model is built."""
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise UserError(f"--calib-images: cannot read {f}: {e}")


def calibration_files(calib_dir, calib_num: int, flag: str = "--calib-images") -> List[Path]:
    """The first ``calib_num`` images (sorted) of ``calib_dir``; ``flag`` names it in errors."""
    from vitdeploy.models.preprocess import IMAGE_SUFFIXES

    p = Path(calib_dir)
    if not p.is_dir():
        raise UserError(f"{flag}: {p} is not a directory")
    try:
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    except OSError as e:
        raise UserError(f"{flag}: cannot read {p}: {e.strerror or e}")
    if not files:
        raise UserError(f"{flag}: no images ({', '.join(IMAGE_SUFFIXES)}) in {p}")
    return files[:calib_num]


def calibration_inputs(calib_images, calib_num: int, img_size, mean, std, crop_pct: float = DEFAULT_CROP_PCT,
                       interpolation: str = DEFAULT_INTERPOLATION, warn: Callable[[str], None] = lambda m: None,
                       resize: str = "crop", flag: str = "--calib-images"):
    """(images [N,3,H,W], description): the export's own preprocessing, or random inputs (warned).
    Also the search's calibration images (``flag="--images"``): one definition of "the first N
    images of DIR, preprocessed as the export does"."""
    from vitdeploy.models.preprocess import preprocess_images, random_images

    if calib_images is None:
        warn(f"warning: no --calib-images: calibrating on {calib_num} random inputs; the int8/fp8 ranges "
             "will not match real images (pass --calib-images DIR for a deployable model)")
        return random_images(calib_num, img_size, seed=1), f"{calib_num} random inputs (seed 1)"
    files = calibration_files(calib_images, calib_num, flag)
    try:
        x = preprocess_images(files, img_size, mean, std, crop_pct=crop_pct, interpolation=interpolation,
                              resize=resize)
    except UserError as e:
        raise UserError(str(e).replace("--images:", f"{flag}:", 1))
    return x, f"{len(files)} images from {calib_images}"


def quantize_onnx(model, *, precision: str, calib_images=None, calib_num: int = DEFAULT_CALIB_NUM,
                  method: str = DEFAULT_METHOD, target: str = "trt", mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225), crop_pct: float = DEFAULT_CROP_PCT,
                  interpolation: str = DEFAULT_INTERPOLATION,
                  progress: Callable[[str], None] = lambda m: None, img_size=None,
                  resize: str = "crop") -> QuantizeResult:
    """The export's quantization step: calibration inputs (preprocessed like the export) -> Q/DQ graph.

    ``img_size`` (H x W) defaults to the graph input's last two dims (not the last one alone: that
    is the width, which made rectangular inputs calibrate at W x W)."""
    from vitdeploy.models.size import ImageSize, as_size

    check_args(precision, ai_onnx_opset(model), target, method, calib_images, calib_num)
    if img_size is None:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        img_size = ImageSize(dims[-2].dim_value, dims[-1].dim_value)
    images, source = calibration_inputs(calib_images, calib_num, as_size(img_size), mean, std, crop_pct,
                                        interpolation, warn=progress, resize=resize)
    progress(f"  calibrating {precision} ({method}) on {source}")
    res = quantize_with_images(model, images, precision=precision, method=method, target=target,
                               progress=progress)
    res.source = source
    return res


def check_precision_args(precision: str, opset: int, target: str = "trt", method: str = DEFAULT_METHOD) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"quantize: precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if target not in TARGETS:
        raise UserError(f"--target must be one of {', '.join(TARGETS)}, not {target!r}")
    if method not in METHODS:
        raise UserError(f"--calib-method must be one of {', '.join(METHODS)}, not {method!r}")
    if precision == "fp8" and opset < FP8_MIN_OPSET:
        raise UserError(f"--precision fp8 needs --opset >= {FP8_MIN_OPSET} (float8e4m3fn Q/DQ), not {opset}")
    if precision == "fp8" and target != "trt":
        raise UserError("--precision fp8 is for TensorRT (--target trt); ORT CPU has no fast fp8 kernels")


class _Reader:
    """ORT CalibrationDataReader over in-memory preprocessed images, `batch` at a time."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int):
        self.images, self.input_name, self.batch = images, input_name, batch
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.images):
            return None
        x = self.images[self.pos:self.pos + self.batch]
        self.pos += len(x)
        return {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}

    def rewind(self):
        self.pos = 0


def _name_nodes(model) -> None:
    seen = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)


def _ort_method(method: str):
    from onnxruntime.quantization.calibrate import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def calib_batch_for(img_size) -> int:
    """Calibration batch that keeps ORT's per-call intermediate outputs near 8 images at 224x224
    (by pixel count: H x W, not the width squared)."""
    from vitdeploy.models.size import as_size

    return max(1, min(8, int(8 * 224 * 224 / as_size(img_size).pixels)))


def calibrate(model, images: np.ndarray, *, method: str = DEFAULT_METHOD, batch: int = 8, symmetric: bool = True,
              progress: Callable[[str], None] = lambda m: None, percentile: float = 99.999):
    """Run ORT's calibrator on the float model; returns ORT's TensorsData for QUANTIZED_OPS tensors.

    symmetric: histogram methods clip |x| (zero point 0, `trt`); False keeps both tails (`ort-cpu`)."""
    import onnx
    from onnxruntime.quantization.calibrate import create_calibrator

    cm = _ort_method(method)
    extra = {"symmetric": symmetric} if method != "minmax" else {}
    if method == "percentile":
        extra["percentile"] = percentile
    if method == "entropy":  # ORT's default 128 bins = 128 quantized bins degenerates to min/max
        extra.update(num_bins=2048, num_quantized_bins=128)  # TensorRT's entropy calibrator settings
    with tempfile.TemporaryDirectory(prefix="vitdeploy-calib-") as d:
        src = Path(d) / "model.onnx"
        onnx.save_model(model, str(src))  # in place external data would rewrite `model` itself
        cal = create_calibrator(src, list(QUANTIZED_OPS), augmented_model_path=str(Path(d) / "aug.onnx"),
                                calibrate_method=cm, extra_options=extra)
        # One collect_data call per batch: ORT keeps every intermediate output of a call in memory
        # (~0.5 GB per 672-px Swin image) and merges ranges/histograms across calls.
        name = model.graph.input[0].name
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print() as they go
            for i in range(0, len(images), batch):
                cal.collect_data(_Reader(images[i:i + batch], name, batch))
                progress(f"  calibrating: {min(i + batch, len(images))}/{len(images)} images")
            data = cal.compute_data()
        del cal
    return data


def quantize_with_images(model, images: np.ndarray, *, precision: str = "int8", method: str = DEFAULT_METHOD,
                         target: str = "trt", calib_batch: Optional[int] = None, exclude_ops: Iterable[str] = (),
                         exclude_nodes: Iterable[str] = (), float_attention_output: bool = FLOAT_ATTENTION_OUTPUT,
                         headroom: float = ACTIVATION_HEADROOM, progress: Callable[[str], None] = lambda m: None,
                         tensors_range=None) -> QuantizeResult:
    """Calibrate `model` (float onnx.ModelProto) on `images` [N,3,H,W] and return its Q/DQ copy.

    Every Conv/MatMul/Gemm is quantized by default: leaving EfficientViT's depthwise convs or all
    attention MatMuls in float was measured slower on ORT CPU (more Q/DQ boundaries; M0 b16
    0.92x vs 0.97x) and no more accurate. float_attention_output: keep the attention output
    projections float (FLOAT_ATTENTION_OUTPUT). exclude_ops: op types to leave float anyway;
    exclude_nodes: node names to leave float. headroom: every calibrated activation range is
    widened by this factor (ACTIVATION_HEADROOM).
    tensors_range: reuse ranges from an earlier `calibrate` call (skips calibration).
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    check_precision_args(precision, ai_onnx_opset(model), target, method)
    if len(images) < 1:
        raise UserError(f"--precision {precision} needs at least one calibration image")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    _name_nodes(model)
    n_custom = sum(n.domain == CUSTOM_DOMAIN for n in model.graph.node)
    functions = [(f.domain, f.name) for f in model.functions]
    excluded_types = set(exclude_ops)
    exclude = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.op_type in excluded_types]
    exclude += [n.name for n in model.graph.node if n.domain == CUSTOM_DOMAIN]
    keep = set(exclude_nodes) | set(attention_output_matmuls(model) if float_attention_output else ())
    exclude += [n.name for n in model.graph.node if n.name in keep]
    if tensors_range is None:
        calib_batch = calib_batch or calib_batch_for((int(images.shape[-2]), int(images.shape[-1])))
        tensors_range = calibrate(model, images, method=method, batch=calib_batch, symmetric=target == "trt",
                                  progress=progress)
    if headroom <= 0:
        raise UserError(f"quantize: headroom must be > 0, not {headroom}")
    tensors_range = _widened(tensors_range, headroom)
    float_init = {t.name: t for t in model.graph.initializer}

    trt = target == "trt"
    # Outputs are quantized only as the next op's input (TensorRT fuses Q into the producer).
    extra = {"ActivationSymmetric": trt, "WeightSymmetric": True,
             "QDQOpTypePerChannelSupportToAxis": {"MatMul": -1}}
    if trt:
        extra["OpTypesToExcludeOutputQuantization"] = list(QUANTIZED_OPS)
    progress(f"  inserting Q/DQ ({precision}, {target}, per-channel weights)")
    with tempfile.TemporaryDirectory(prefix="vitdeploy-quant-") as d:
        cache = Path(d) / "ranges.json"
        save_tensors_data(tensors_range, cache)
        out = Path(d) / "q.onnx"
        with _quiet_root_logger():  # ORT warns about its optional pre-processing on every call
            quantize_static(model, str(out), None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True, reduce_range=False,
                            activation_type=QuantType.QInt8 if trt else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                            calibrate_method=_ort_method(method), extra_options=extra,
                            calibration_cache_path=str(cache))
        q = onnx.load(str(out))
    # ORT's own tensor names: X -> X_QuantizeLinear_Output -> X_DequantizeLinear_Output.
    if trt:
        _rewire_float_consumers(q)
        _float_biases(q)
    if precision == "fp8":
        _to_fp8(q, float_init)
    _drop_dead_qdq(q)
    # Functions and custom nodes must survive untouched (ORT rewrites via its ONNXModel wrapper).
    if [(f.domain, f.name) for f in q.functions] != functions or \
            sum(n.domain == CUSTOM_DOMAIN for n in q.graph.node) != n_custom:
        raise RuntimeError("quantization lost the vitdeploy window nodes or their functions")
    onnx.checker.check_model(q)
    ranges = {k: [float(np.asarray(v.range_value[0]).min()), float(np.asarray(v.range_value[1]).max())]
              for k, v in tensors_range.data.items()}
    used = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    quantized: Dict[str, int] = {}
    float_left: Dict[str, int] = {}
    producers_dq = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for n in q.graph.node:
        if n.op_type in QUANTIZED_OPS:
            bucket = quantized if n.input[0] in producers_dq else float_left
            bucket[n.op_type] = bucket.get(n.op_type, 0) + 1
    return QuantizeResult(q, precision, target, method, len(images),
                          {k: v for k, v in ranges.items() if k in used}, quantized, float_left, headroom=headroom)


def _widened(tensors_range, factor: float):
    """A copy of ORT's TensorsData with every [lo, hi] range scaled by ``factor`` (about 0)."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    if factor == 1.0:
        return tensors_range
    data = {}
    for k, v in tensors_range.data.items():
        lo, hi = (np.asarray(r, dtype=np.float32) for r in v.range_value)
        data[k] = TensorData(lowest=(lo * factor).astype(np.float32), highest=(hi * factor).astype(np.float32))
    return TensorsData(tensors_range.calibration_method, data)


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def attention_output_matmuls(model) -> List[str]:
    """Names of the weight MatMul/Gemm nodes that read an attention's output: their data input
    comes, through shape ops only, from a MatMul one of whose inputs is a Softmax output."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    weights = {t.name for t in g.initializer}
    out = []
    for n in g.node:
        if n.op_type not in ("MatMul", "Gemm") or len(n.input) < 2 or n.input[1] not in weights:
            continue
        p = producer.get(n.input[0])
        while p is not None and p.op_type in _SHAPE_OPS:
            p = producer.get(p.input[0])
        if p is not None and p.op_type == "MatMul" and any(
                getattr(producer.get(i), "op_type", None) == "Softmax" for i in p.input):
            out.append(n.name)
    return out


def quantized_slots(node) -> tuple:
    """Input slots of `node` that may read a dequantized tensor (data and weight, never bias)."""
    return (0, 1) if node.op_type in QUANTIZED_OPS else ()


def _rewire_float_consumers(model) -> None:
    """Consumers outside QUANTIZED_OPS' data slots read the float tensor, not its DQ copy."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue  # weight DQ (initializer input)
        src = q.input[0]
        for n in g.node:
            for i, name in enumerate(n.input):
                if name == dq.output[0] and i not in quantized_slots(n):
                    n.input[i] = src
        if dq.output[0] in outputs:
            raise RuntimeError(f"graph output {dq.output[0]} is a dequantized tensor")


def _float_biases(model) -> None:
    """Replace int32 bias DQ (ORT's) with a float initializer: TensorRT fuses float biases."""
    from onnx import numpy_helper

    g = model.graph
    init = {t.name: t for t in g.initializer}
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        t = init.get(dq.input[0])
        if t is None or t.data_type != 6:  # INT32
            continue
        q = numpy_helper.to_array(t).astype(np.float64)
        s = numpy_helper.to_array(init[dq.input[1]]).astype(np.float64)
        name = dq.output[0] + "_float"
        g.initializer.append(numpy_helper.from_array((q * s).astype(np.float32), name))
        for n in g.node:
            for i, nm in enumerate(n.input):
                if nm == dq.output[0]:
                    n.input[i] = name


def _to_fp8(model, float_init) -> None:
    """int8 symmetric Q/DQ -> float8e4m3fn Q/DQ with the same amax (scale = amax / 448)."""
    import ml_dtypes
    from onnx import TensorProto, numpy_helper

    g = model.graph
    init = {t.name: t for t in g.initializer}

    def replace(name, arr):
        old = init[name]
        new = numpy_helper.from_array(arr, name)
        old.CopyFrom(new)

    def fp8_zero(name):
        zp = numpy_helper.to_array(init[name])
        replace(name, np.zeros(zp.shape, dtype=ml_dtypes.float8_e4m3fn))

    done = set()
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(n.input) < 3:
            continue
        scale_name, zp_name = n.input[1], n.input[2]
        if n.op_type == "DequantizeLinear" and n.input[0] in init:  # weight: requantize from float
            wq_name = n.input[0]
            if wq_name in done:
                continue
            w = numpy_helper.to_array(float_init[wq_name[:-len("_quantized")]]).astype(np.float32)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1) % w.ndim
            red = tuple(i for i in range(w.ndim) if i != axis)
            amax = np.abs(w).max(axis=red)
            s = np.where(amax > 0, amax / FP8_MAX, 1.0).astype(np.float32)
            shp = [1] * w.ndim
            shp[axis] = -1
            wq = np.clip(w / s.reshape(shp), -FP8_MAX, FP8_MAX).astype(ml_dtypes.float8_e4m3fn)
            replace(wq_name, wq)
            replace(scale_name, s.reshape(numpy_helper.to_array(init[scale_name]).shape))
            fp8_zero(zp_name)
            done.update({wq_name, scale_name, zp_name})
        else:
            if scale_name not in done:
                s = numpy_helper.to_array(init[scale_name]).astype(np.float32)
                replace(scale_name, (s * INT8_MAX / FP8_MAX).astype(np.float32))
                done.add(scale_name)
            if zp_name not in done:
                fp8_zero(zp_name)
                done.add(zp_name)
    assert all(init[k].data_type != TensorProto.INT8 for k in done)


def _drop_dead_qdq(model) -> None:
    g = model.graph
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
