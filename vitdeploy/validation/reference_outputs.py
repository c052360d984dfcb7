"""`OUT.ref.npz`: the PyTorch original's outputs, travelling with the artifact (DESIGN §2.12).

`export` writes it beside the ONNX, so parity can be checked where the engine lives (a GPU or
serving host without torch or the checkpoint). Polygraphy's saved `RunResults` are the anchor; this
file adds what a verdict needs: the task and precision decide the metrics and thresholds, and the
provenance says which weights produced the outputs, so a reference from another checkpoint or
sparsity is refused instead of compared.

Format (a plain `.npz`, readable with `np.load(path, allow_pickle=False)`):
- `input.<name>`: the exact inputs fed (float32, NCHW; fixed-seed random images, then any real ones);
- `output.<name>`: the unfolded PyTorch model's outputs on them (float32);
- `provenance`: a 1-element unicode array holding a JSON object with `format`
  ("vitdeploy-reference"), `format_version`, `model`, `checkpoint_sha256`, `sparsity` (JSON text,
  as in the ONNX metadata), `precision`, `task`, `img_size`, `num_classes`, `vitdeploy_version`,
  `created` (UTC ISO 8601), `reference` (what produced the outputs) and `inputs` (a description).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from vitdeploy.errors import UserError
from vitdeploy.fileio import atomic_write_bytes

FORMAT = "vitdeploy-reference"
FORMAT_VERSION = 1
SUFFIX = ".ref.npz"
# Provenance keys that must equal the artifact's metadata: anything else compares other weights.
IDENTITY_KEYS = ("model", "checkpoint_sha256", "sparsity", "task", "img_size")


@dataclass
class ReferenceOutputs:
    inputs: Dict[str, np.ndarray]
    outputs: Dict[str, np.ndarray]
    provenance: Dict[str, object]

    @property
    def batch(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def save(self, path: os.PathLike) -> Path:
        arrays = {f"input.{k}": np.ascontiguousarray(v) for k, v in self.inputs.items()}
        arrays.update({f"output.{k}": np.ascontiguousarray(v) for k, v in self.outputs.items()})
        arrays["provenance"] = np.array([json.dumps(self.provenance, sort_keys=True)])
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
        return Path(path)


def make_provenance(*, metadata: Dict[str, str], inputs: str, reference: str) -> Dict[str, object]:
    """Provenance from the ONNX metadata the export wrote (prefix stripped) plus what was fed."""
    from vitdeploy import __version__

    prov: Dict[str, object] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                               "vitdeploy_version": __version__, "inputs": inputs, "reference": reference,
                               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    for k in ("model", "checkpoint_sha256", "sparsity", "precision", "task", "img_size", "num_classes",
              "resize", "norm_order"):
        if k in metadata:
            prov[k] = metadata[k]
    return prov


def load_reference(path: os.PathLike) -> ReferenceOutputs:
    """Read an OUT.ref.npz; one-line UserError when it is missing or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"reference not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise UserError(f"{path}: not a readable .npz ({type(e).__name__}); re-export to write a new one")
    try:
        prov = json.loads(str(arrays.pop("provenance")[0]))
    except (KeyError, IndexError, ValueError):
        raise UserError(f"{path}: no provenance record; not a vitdeploy reference (written by vitdeploy export)")
    if not isinstance(prov, dict) or prov.get("format") != FORMAT:
        raise UserError(f"{path}: not a vitdeploy reference (written by vitdeploy export)")
    if prov.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: reference format version {prov.get('format_version')} is not "
                        f"{FORMAT_VERSION}; re-export with this vitdeploy")
    inputs = {k[len("input."):]: v for k, v in arrays.items() if k.startswith("input.")}
    outputs = {k[len("output."):]: v for k, v in arrays.items() if k.startswith("output.")}
    if not inputs or not outputs:
        raise UserError(f"{path}: reference holds no inputs or no outputs; re-export to write a new one")
    return ReferenceOutputs(inputs, outputs, prov)


def reference_path_for(onnx_path: os.PathLike) -> Path:
    """model.onnx -> model.ref.npz (beside it)."""
    p = Path(onnx_path)
    return p.with_name(p.stem + SUFFIX)


def find_reference(artifact_path: os.PathLike, source_onnx: Optional[os.PathLike] = None) -> Optional[Path]:
    """The reference beside the artifact, else beside the ONNX an engine was built from."""
    for base in (artifact_path, source_onnx):
        if base is not None and reference_path_for(base).is_file():
            return reference_path_for(base)
    return None


def _same(key: str, a: object, b: object) -> bool:
    if key == "sparsity":
        try:
            return json.loads(str(a)) == json.loads(str(b))
        except ValueError:
            return False
    return str(a) == str(b)


def provenance_mismatches(provenance: Dict[str, object], metadata: Dict[str, str]) -> List[str]:
    """`key reference=X artifact=Y` for each identity key that differs (empty: same origin)."""
    return [f"{k} reference={provenance.get(k)!s:.24} artifact={metadata.get(k)!s:.24}" for k in IDENTITY_KEYS
            if k in metadata and not _same(k, provenance.get(k), metadata[k])]


def describe_provenance(provenance: Dict[str, object]) -> str:
    sha = str(provenance.get("checkpoint_sha256", "?"))
    sha = sha[:12] + "…" if len(sha) == 64 else sha  # a sha256; "random-seed-0" stays whole
    parts = [f"{provenance.get('model')} ({provenance.get('task')}, {provenance.get('img_size')} px, "
             f"{provenance.get('precision')})"]
    if provenance.get("sparsity") not in (None, "null"):
        parts.append(f"sparsity {provenance['sparsity']}")
    parts.append(f"checkpoint sha256 {sha}")
    parts.append(f"{provenance.get('inputs')}; vitdeploy {provenance.get('vitdeploy_version')}, "
                 f"created {provenance.get('created')}")
    return "reference: " + ", ".join(parts)
