"""What an exported artifact is, read from the file itself: one place for every verb and server.

`open_artifact(path)` reads an `.onnx` (graph + `vitdeploy.*` metadata, weights not loaded) or a
TensorRT engine (`.engine`/`.plan`/`.trt`, through its `<engine>.json` manifest, without
TensorRT) and returns an `Artifact`: its kind, metadata with the `vitdeploy.` prefix stripped,
inputs/outputs (name, numpy dtype, shape), batch profile and, for an engine, the ONNX it was
built from. `validate`, `bench`, `info`, `serve` and `triton-repo` all read artifacts here, so a
suffix or a metadata key is spelled once. Imports neither torch nor TensorRT.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from vitdeploy.errors import UserError
from vitdeploy.export.onnx import META_PREFIX, load_onnx

ONNX_SUFFIX = ".onnx"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")

Dim = Union[int, str]  # an int for a static axis, a name ("batch", "?") for a dynamic one


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name
    shape: List[Dim]

    @property
    def static_batch(self) -> Optional[int]:
        d = self.shape[0] if self.shape else None
        return d if isinstance(d, int) and d > 0 else None


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an artifact accepts: an engine's optimization profile, or an ONNX's static batch."""
    min: int
    opt: int
    max: int


@dataclass
class Artifact:
    path: Path
    kind: str  # "onnx" | "engine"
    metadata: Dict[str, str]  # vitdeploy.* keys, prefix stripped
    inputs: List[TensorInfo]
    outputs: List[TensorInfo]
    batch: Optional[BatchProfile]  # None: any batch (a dynamic-batch ONNX)
    source_onnx: Optional[Path] = None  # engine: the ONNX its manifest names
    manifest: Dict = field(default_factory=dict)  # engine only
    onnx: object = None  # onnx.ModelProto (external data not loaded), ONNX only

    @property
    def precision(self) -> str:
        """fp32 | fp16 | int8 | fp8: the export's metadata, else read from the graph (an engine: its manifest)."""
        if self.kind == "engine":
            return str(self.manifest.get("precision") or self.metadata.get("precision") or "fp32")
        return onnx_precision(self.onnx, self.metadata.get("precision"))

    @property
    def nbytes(self) -> int:
        return self.path.stat().st_size

    @property
    def size(self):
        """The input H x W (``ImageSize``): the metadata's ``img_size``, else the input's last two dims."""
        from vitdeploy.models.size import ImageSize

        if "img_size" in self.metadata:
            return ImageSize.parse(self.metadata["img_size"], f"{self.path} metadata img_size")
        dims = self.inputs[0].shape[-2:] if self.inputs else []
        if len(dims) == 2 and all(isinstance(d, int) and d > 0 for d in dims):
            return ImageSize(int(dims[0]), int(dims[1]))
        raise UserError(f"{self.path}: no img_size in its metadata and no static H x W input; "
                        "export it with vitdeploy export")

    @property
    def fixed_batch(self) -> Optional[int]:
        """Axis 0's size when the graph was exported with a static batch (--batch N)."""
        return self.inputs[0].static_batch if self.inputs else None


def is_engine_path(path: os.PathLike) -> bool:
    return Path(path).suffix.lower() in ENGINE_SUFFIXES


def artifact_kind(path: os.PathLike) -> str:
    """'onnx' or 'engine' from the file name; UserError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix == ONNX_SUFFIX:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    raise UserError(f"{path}: unknown artifact type {suffix!r}; expected .onnx or one of "
                    f"{', '.join(ENGINE_SUFFIXES)}")


def strip_prefix(props: Mapping[str, object]) -> Dict[str, str]:
    """`vitdeploy.*` keys without the prefix (other keys dropped); values as strings."""
    import json

    return {k[len(META_PREFIX):]: (v if isinstance(v, str) else json.dumps(v))
            for k, v in props.items() if k.startswith(META_PREFIX)}


def onnx_tensors(proto) -> Dict[str, List[TensorInfo]]:
    """{"inputs": [...], "outputs": [...]} of a ModelProto (initializers listed as inputs are skipped)."""
    import onnx

    inits = {t.name for t in proto.graph.initializer}

    def info(vi) -> TensorInfo:
        tt = vi.type.tensor_type
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        except Exception:
            raise UserError(f"ONNX tensor {vi.name!r} has an element type ({tt.elem_type}) numpy cannot hold")
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        return TensorInfo(vi.name, dtype, shape)

    return {"inputs": [info(vi) for vi in proto.graph.input if vi.name not in inits],
            "outputs": [info(vi) for vi in proto.graph.output]}


PRECISIONS = ("fp32", "fp16", "int8", "fp8")


def onnx_precision(proto, declared: Optional[str] = None) -> str:
    """The precision an ONNX computes in: `declared` (its vitdeploy.precision) when valid, else from the graph:
    float8 Q/DQ -> fp8, int8 Q/DQ -> int8, fp16 weights -> fp16, else fp32."""
    if declared in PRECISIONS:
        return declared
    import onnx

    types = {t.data_type for t in proto.graph.initializer}
    if types & {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E5M2}:
        return "fp8"
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node) and \
            onnx.TensorProto.INT8 in types:
        return "int8"
    return "fp16" if onnx.TensorProto.FLOAT16 in types else "fp32"


def _open_onnx(path: Path) -> Artifact:
    proto = load_onnx(path)
    io = onnx_tensors(proto)
    if not io["inputs"] or not io["outputs"]:
        raise UserError(f"{path}: the graph has no inputs or no outputs; export it with vitdeploy export")
    meta = strip_prefix({p.key: p.value for p in proto.metadata_props})
    static = io["inputs"][0].static_batch
    batch = BatchProfile(static, static, static) if static else None
    return Artifact(path, "onnx", meta, io["inputs"], io["outputs"], batch, onnx=proto)


def _open_engine(path: Path) -> Artifact:
    from vitdeploy.engines.manifest import EngineManifest, manifest_path

    manifest = EngineManifest.read(path)  # the manifest type is the one reader of its fields
    where = manifest_path(path)
    inputs = [TensorInfo(n, dtype, shape) for n, dtype, shape in manifest.tensors("inputs", where)]
    outputs = [TensorInfo(n, dtype, shape) for n, dtype, shape in manifest.tensors("outputs", where)]
    batch = manifest.batch_profile(inputs[0].name)
    onnx_path = manifest.get("onnx_path")
    return Artifact(path, "engine", strip_prefix(manifest.get("onnx_metadata") or {}), inputs, outputs,
                    BatchProfile(*batch) if batch else None, Path(onnx_path) if onnx_path else None,
                    manifest=manifest)


def open_artifact(path: os.PathLike) -> Artifact:
    """Read an .onnx or an engine (via its manifest). UserError: missing, unknown type, unreadable."""
    path = Path(path)
    kind = artifact_kind(path)
    if not path.is_file():
        raise UserError(f"not found: {path}")
    return _open_onnx(path) if kind == "onnx" else _open_engine(path)


def split_targets(targets: Sequence[str]) -> Dict[str, List[str]]:
    """Sort command-line targets into {"onnx": [...], "engine": [...], "other": [...]} by suffix."""
    out: Dict[str, List[str]] = {"onnx": [], "engine": [], "other": []}
    for t in targets:
        suffix = Path(t).suffix.lower()
        out["onnx" if suffix == ONNX_SUFFIX else "engine" if suffix in ENGINE_SUFFIXES else "other"].append(t)
    return out
