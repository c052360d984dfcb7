"""What an artifact looks like to a server, and a standard Triton model repository for it.

Both `serve` (PyTriton) and `write_triton_repo` (a standalone tritonserver) need the same facts:
the model name, the I/O names, dtypes and dims and whether axis 0 is a batch axis. They come from
the artifact itself (`vitdeploy.artifact`: ONNX graph + metadata, or the engine manifest), never
from flags the export already knew.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from vitdeploy.artifact import Artifact, open_artifact
from vitdeploy.errors import UserError
from vitdeploy.plugins import STATIC_REG_LIBRARY_NAME

# numpy dtype name -> Triton model-config data type
TRITON_DTYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
    "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}


@dataclass
class IOSpec:
    name: str
    shape: List[int]  # full shape, -1 for a dynamic axis (axis 0 included)
    dtype: str  # numpy dtype name

    @property
    def dims(self) -> List[int]:
        """Per-sample dims (batch axis dropped), as Triton wants them with max_batch_size > 0."""
        return list(self.shape[1:])


@dataclass
class ArtifactInfo:
    path: Path
    kind: str  # "onnx" | "engine"
    name: str  # Triton model name
    metadata: Dict[str, str]  # vitdeploy.* keys, prefix stripped
    inputs: List[IOSpec]
    outputs: List[IOSpec]
    fixed_batch: Optional[int] = None  # axis 0 is a fixed size (exported with --batch N)
    profile_max_batch: Optional[int] = None  # engine optimization profile's max batch
    profile_opt_batch: Optional[int] = None
    manifest: Dict = field(default_factory=dict)

    @property
    def platform(self) -> str:
        return "tensorrt_plan" if self.kind == "engine" else "onnxruntime_onnx"

    @property
    def model_filename(self) -> str:
        return "model.plan" if self.kind == "engine" else "model.onnx"

    def check_max_batch(self, max_batch: int) -> None:
        if max_batch < 1:
            raise UserError(f"--max-batch must be >= 1, got {max_batch}")
        if self.profile_max_batch is not None and max_batch > self.profile_max_batch:
            raise UserError(f"--max-batch {max_batch} exceeds the engine's profile max batch "
                            f"{self.profile_max_batch} ({self.path}); lower --max-batch or rebuild with "
                            f"`vitdeploy build ... --max-batch {max_batch}`")


def sanitize_name(name: str) -> str:
    """Triton model names: letters, digits, '.', '_', '-' (PyTriton enforces the same)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return clean or "model"


def _io_spec(t) -> IOSpec:
    return IOSpec(t.name, [d if isinstance(d, int) and d > 0 else -1 for d in t.shape], t.dtype)


def describe_artifact(artifact: os.PathLike, model_name: Optional[str] = None) -> ArtifactInfo:
    """An .onnx or engine as a server sees it (read through `vitdeploy.artifact.open_artifact`)."""
    art: Artifact = open_artifact(artifact)
    name = model_name or sanitize_name(art.metadata.get("model") or art.path.stem)
    if sanitize_name(name) != name:
        raise UserError(f"model name {model_name!r} is not valid for Triton; use letters, digits, . _ -")
    info = ArtifactInfo(art.path, art.kind, name, art.metadata, [_io_spec(t) for t in art.inputs],
                        [_io_spec(t) for t in art.outputs], manifest=art.manifest)
    if art.kind == "engine" and art.batch is not None:
        info.profile_max_batch, info.profile_opt_batch = art.batch.max, art.batch.opt
    _set_batch_axis(info)
    return info


def _set_batch_axis(info: ArtifactInfo) -> None:
    """Axis 0 is the batch axis for every I/O (our exports guarantee it). Fixed => record its size."""
    for t in info.inputs + info.outputs:
        if not t.shape:
            raise UserError(f"{info.path}: tensor {t.name!r} is a scalar; vitdeploy artifacts have a batch axis")
    b0 = info.inputs[0].shape[0]
    if b0 > 0:
        info.fixed_batch = b0


# ----------------------------------------------------------------------------------------------
# Triton model repository


def default_preferred(info: ArtifactInfo, max_batch: int) -> List[int]:
    """The sizes worth waiting for: the engine's opt batch (what it was tuned for) and the max."""
    pref = {max_batch}
    if info.profile_opt_batch and info.profile_opt_batch <= max_batch:
        pref.add(info.profile_opt_batch)
    return sorted(pref)


def _model_config_pb2():
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UserError("writing a Triton config needs tritonclient: pip install 'vitdeploy[serve]'")
    return model_config_pb2, text_format


PREPROCESS_KEYS = ("img_size", "resize", "mean", "std", "crop_pct", "interpolation", "task")


def build_config(info: ArtifactInfo, *, max_batch: int, instances: int, preferred: Sequence[int],
                 max_queue_delay_us: int):
    """The model's config as Triton's own `ModelConfig` message (so only real fields can be set)."""
    pb, _ = _model_config_pb2()
    batched = info.fixed_batch is None
    cfg = pb.ModelConfig(name=info.name, platform=info.platform, max_batch_size=max_batch if batched else 0)
    for specs, add in ((info.inputs, cfg.input.add), (info.outputs, cfg.output.add)):
        for t in specs:
            if t.dtype not in TRITON_DTYPES:
                raise UserError(f"{info.path}: {t.name!r} has dtype {t.dtype}, which Triton configs cannot express")
            add(name=t.name, data_type=pb.DataType.Value(TRITON_DTYPES[t.dtype]),
                dims=t.dims if batched else t.shape)
    if batched:
        cfg.dynamic_batching.preferred_batch_size.extend(int(p) for p in preferred)
        cfg.dynamic_batching.max_queue_delay_microseconds = int(max_queue_delay_us)
    for k in PREPROCESS_KEYS:  # how a client must preprocess (size, resize mode, normalisation): issue 16
        if k in info.metadata:
            cfg.parameters[f"vitdeploy.{k}"].string_value = str(info.metadata[k])
    group = cfg.instance_group.add(count=instances)
    if info.kind == "engine":
        group.kind = pb.ModelInstanceGroup.KIND_GPU  # TensorRT plans only run on the GPU they were built for
    return cfg


def render_config(info: ArtifactInfo, *, max_batch: int, instances: int, preferred: Sequence[int],
                  max_queue_delay_us: int) -> str:
    """config.pbtxt text: `build_config` printed with protobuf's text_format, under a provenance comment."""
    _, text_format = _model_config_pb2()
    cfg = build_config(info, max_batch=max_batch, instances=instances, preferred=preferred,
                       max_queue_delay_us=max_queue_delay_us)
    header = (f"# Generated by vitdeploy from {info.path.name} "
              f"(model {info.metadata.get('model', '?')}, precision {info.metadata.get('precision', '?')}).\n")
    return header + text_format.MessageToString(cfg)


def parse_config(text: str, where: str = "config.pbtxt"):
    """Parse with Triton's own ModelConfig schema (shipped in tritonclient): unknown fields, bad enums
    and type errors are caught here rather than by tritonserver at load time."""
    model_config_pb2, text_format = _model_config_pb2()
    cfg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise UserError(f"{where}: not a valid Triton model config: {e}")
    return cfg


def _check_config(cfg, info: ArtifactInfo, max_batch: int, preferred: Sequence[int]) -> None:
    """Semantic rules the schema cannot express but tritonserver enforces at load time."""
    problems = []
    if cfg.name != info.name:
        problems.append(f"name {cfg.name!r} != directory {info.name!r}")
    if cfg.max_batch_size > 0:
        if any(p > cfg.max_batch_size or p < 1 for p in cfg.dynamic_batching.preferred_batch_size):
            problems.append("preferred_batch_size outside 1..max_batch_size")
    for t in list(cfg.input) + list(cfg.output):
        if not t.dims:
            problems.append(f"{t.name}: empty dims")
    if problems:
        raise UserError(f"generated config.pbtxt for {info.name} is inconsistent: {'; '.join(problems)}")


def _external_data_files(path: Path) -> List[str]:
    """Files an ONNX references through external data; a repository without them cannot load."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    files = set()
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for kv in t.external_data:
                if kv.key == "location":
                    files.add(kv.value)
    return sorted(files)


def _mkdtemp_near(out_dir: Path, name: str, suffix: str) -> Path:
    """A scratch dir on the same filesystem as out_dir (so rename is atomic), outside the repository
    when the parent is writable, so a polling tritonserver never mistakes it for a model."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{name}.", suffix=suffix, dir=out_dir.parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=suffix, dir=out_dir))


def write_triton_repo(artifact: os.PathLike, out_dir: os.PathLike, *, max_batch: int = 16, instances: int = 1,
                      model_name: Optional[str] = None, preferred_batch_sizes: Optional[Sequence[int]] = None,
                      max_queue_delay_us: int = 500, plugin_lib: Optional[os.PathLike] = None) -> Path:
    """Write `out_dir/<name>/config.pbtxt` + `out_dir/<name>/1/model.{plan,onnx}` + `out_dir/README.md`.

    The model directory is assembled in a temporary directory beside `out_dir` and renamed into
    place, so a running tritonserver polling the repository never sees a half-written model.
    Returns the model directory.
    """
    info = describe_artifact(artifact, model_name)
    info.check_max_batch(max_batch)
    if instances < 1:
        raise UserError(f"--instances must be >= 1, got {instances}")
    if info.fixed_batch is not None:
        max_batch = info.fixed_batch  # the config cannot batch a fixed-batch graph; recorded as-is
    preferred = sorted(set(int(p) for p in preferred_batch_sizes)) if preferred_batch_sizes else \
        default_preferred(info, max_batch)
    if any(p < 1 or p > max_batch for p in preferred):
        raise UserError(f"preferred batch sizes {preferred} must lie in 1..{max_batch} (--max-batch)")
    text = render_config(info, max_batch=max_batch, instances=instances, preferred=preferred,
                         max_queue_delay_us=max_queue_delay_us)
    cfg = parse_config(text, f"{info.name}/config.pbtxt")
    _check_config(cfg, info, max_batch, preferred)

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"-o {out_dir}: exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = _external_data_files(info.path) if info.kind == "onnx" else []
    for f in extra:
        if not (info.path.parent / f).is_file():
            raise UserError(f"{info.path}: external data file {f} is missing beside the model")
    final = out_dir / info.name
    tmp = _mkdtemp_near(out_dir, info.name, ".tmp")
    try:
        vdir = tmp / "1"
        vdir.mkdir()
        shutil.copyfile(info.path, vdir / info.model_filename)
        for f in extra:
            shutil.copyfile(info.path.parent / f, vdir / f)
        (tmp / "config.pbtxt").write_text(text)
        if info.kind == "engine":
            (tmp / "vitdeploy_manifest.json").write_text(json.dumps(info.manifest, indent=2) + "\n")
        # re-read what was written: the file on disk is what tritonserver will parse
        parse_config((tmp / "config.pbtxt").read_text(), str(final / "config.pbtxt"))
        os.chmod(tmp, 0o755)
        old = None
        if final.exists():
            old = _mkdtemp_near(out_dir, info.name, ".old")
            os.replace(final, old / "m")
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_readme(out_dir, plugin_lib)
    return final


def _repo_models(out_dir: Path) -> List[Dict[str, str]]:
    models = []
    for d in sorted(out_dir.iterdir()):
        cfgp = d / "config.pbtxt"
        if d.is_dir() and cfgp.is_file():
            try:
                cfg = parse_config(cfgp.read_text(), str(cfgp))
            except UserError:
                continue
            models.append({"name": cfg.name, "platform": cfg.platform, "max_batch": str(cfg.max_batch_size),
                           "inputs": ", ".join(f"{t.name} {list(t.dims)}" for t in cfg.input),
                           "outputs": ", ".join(f"{t.name} {list(t.dims)}" for t in cfg.output)})
    return models


def _write_readme(out_dir: Path, plugin_lib: Optional[os.PathLike]) -> None:
    models = _repo_models(out_dir)
    has_plan = any(m["platform"] == "tensorrt_plan" for m in models)
    lib = str(plugin_lib) if plugin_lib else f"/path/to/{STATIC_REG_LIBRARY_NAME}"
    rows = "\n".join(f"| `{m['name']}` | `{m['platform']}` | {m['max_batch']} | {m['inputs']} | {m['outputs']} |"
                     for m in models)
    text = f"""# Triton model repository (generated by `vitdeploy triton-repo`)

| model | platform | max batch | inputs (dims without batch) | outputs |
|---|---|---|---|---|
{rows}

Each model is `<name>/config.pbtxt` plus `<name>/1/model.onnx` or `<name>/1/model.plan`; the config
was validated against Triton's `ModelConfig` protobuf schema when it was written.

## Start the server

```
tritonserver --model-repository=$(pwd)/{out_dir.name}
```

(or the NGC container: `docker run --gpus all --rm -p8000:8000 -p8001:8001 -p8002:8002
-v $(pwd)/{out_dir.name}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models`).
Health: `curl localhost:8000/v2/health/ready`; metrics: `curl localhost:8002/metrics`; query with
`python examples/client.py --url localhost:8000 --images DIR`.

## ONNX models (`onnxruntime_onnx`)

Nothing to load. SparseViT's `vitdeploy::WindowGather` / `WindowScatter` nodes carry model-local
ONNX functions whose bodies are standard ops, and ONNX Runtime (CPU or CUDA execution provider)
runs them by inlining those bodies. `instance_group` has no `kind`, so Triton places the model on
a GPU when one is visible and on the CPU otherwise.

## TensorRT engines (`tensorrt_plan`)

A plan only runs with the TensorRT version and GPU it was built with (see
`<name>/vitdeploy_manifest.json`): use the Triton release whose TensorRT matches the manifest.
{"This repository holds at least one engine." if has_plan else ""}
An engine built with our window gather/scatter plugin needs the plugin library loaded into the
server before the plan is deserialized. Either preload it:

```
LD_PRELOAD={lib}:${{LD_PRELOAD}} tritonserver --model-repository=$(pwd)/{out_dir.name}
```

or let the TensorRT backend open it (several libraries separated by `;`):

```
tritonserver --model-repository=$(pwd)/{out_dir.name} --backend-config=tensorrt,plugins="{lib}"
```

Both only `dlopen` the library, so use the static-registration build, `{STATIC_REG_LIBRARY_NAME}`
(`vitdeploy plugins build` writes it beside `libvitdeploy_plugins.so`): its plugin creators register
themselves when the library is loaded, which the plain library (registered by vitdeploy's own loader)
does not do. An engine built without the plugin (the ONNX functions' bodies were inlined) needs nothing.
"""
    tmp = out_dir / ".README.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out_dir / "README.md")
