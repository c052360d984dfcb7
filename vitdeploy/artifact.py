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
KINDS = ("onnx", "engine")

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


def _open_onnx(path: Path) -> Artifact:
    proto = load_onnx(path)
    io = onnx_tensors(proto)
    if not io["inputs"] or not io["outputs"]:
        raise UserError(f"{path}: the graph has no inputs or no outputs; export it with vitdeploy export")
    meta = strip_prefix({p.key: p.value for p in proto.metadata_props})
    static = io["inputs"][0].static_batch
    batch = BatchProfile(static, static, static) if static else None
    return Artifact(path, "onnx", meta, io["inputs"], io["outputs"], batch, onnx=proto)


# TensorRT spells dtypes its own way when numpy cannot name them (build.py falls back to str(dtype)).
_TRT_DTYPE_NAMES = {"float": "float32", "half": "float16", "int32": "int32", "int64": "int64", "int8": "int8",
                    "bool": "bool", "uint8": "uint8", "bf16": "bfloat16", "fp8": "float8_e4m3fn"}


def _manifest_tensors(manifest: Dict, what: str, where: Path) -> List[TensorInfo]:
    items = manifest.get(what)
    if not isinstance(items, list) or not items or not all(isinstance(t, dict) and "name" in t for t in items):
        raise UserError(f"{where}: manifest has no usable {what!r} (name, shape, dtype); rebuild the engine "
                        "with `vitdeploy build`")
    out = []
    for t in items:
        dtype = str(t.get("dtype", "float32")).replace("DataType.", "")
        dtype = _TRT_DTYPE_NAMES.get(dtype.lower(), dtype)
        shape = t.get("shape")
        if not isinstance(shape, list):
            raise UserError(f"{where}: manifest {what} {t['name']!r} has no shape; rebuild the engine")
        out.append(TensorInfo(str(t["name"]), dtype, [d if isinstance(d, int) and d >= 0 else str(d)
                                                      for d in shape]))
    return out


def _engine_profile(manifest: Dict, input_name: str) -> Optional[BatchProfile]:
    entry = (manifest.get("profile") or {}).get(input_name)
    if not isinstance(entry, dict) or not all(k in entry for k in ("min", "opt", "max")):
        return None
    return BatchProfile(int(entry["min"][0]), int(entry["opt"][0]), int(entry["max"][0]))


def _open_engine(path: Path) -> Artifact:
    from vitdeploy.engines.manifest import manifest_path, read_manifest

    manifest = read_manifest(path)
    where = manifest_path(path)
    inputs = _manifest_tensors(manifest, "inputs", where)
    outputs = _manifest_tensors(manifest, "outputs", where)
    onnx_path = manifest.get("onnx_path")
    return Artifact(path, "engine", strip_prefix(manifest.get("onnx_metadata") or {}), inputs, outputs,
                    _engine_profile(manifest, inputs[0].name), Path(onnx_path) if onnx_path else None,
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
