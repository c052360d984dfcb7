"""Load checkpoints safely and strictly.

Only `torch.load(weights_only=True)` and safetensors: a checkpoint is data, never code. The
family-specific key maps (official Microsoft, timm, mmdet/SparseViT) live beside each model in its
own file (`convert_checkpoint`), like timm's checkpoint filters; this module does the parts every
family shares: reading, unwrapping, the strict load and an error report a user can act on.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import torch

from vitdeploy.errors import UserError

WRAPPER_KEYS = ("model_ema", "state_dict_ema", "model", "state_dict", "module", "net")


def _unwrap(obj, path) -> Dict[str, torch.Tensor]:
    """Find the tensor dict inside common training-checkpoint wrappers.

    `model_ema` first: when a training run kept an EMA copy, that is the weight set people ship.
    """
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if isinstance(obj, dict):
            for k in WRAPPER_KEYS:
                if k in obj and isinstance(obj[k], dict):
                    obj = obj[k]
                    break
            else:
                tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
                if tensors:
                    obj = tensors
                    break
                raise UserError(f"{path}: no tensor dict found (top-level keys: {sorted(obj)[:6]}); "
                                "expected a state_dict, or one under 'model', 'state_dict' or 'model_ema'")
        else:
            raise UserError(f"{path}: checkpoint holds a {type(obj).__name__}, not a state_dict")
    sd = {}
    for k, v in obj.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        sd[k] = v
    return sd


def load_state_dict_file(path: os.PathLike) -> Dict[str, torch.Tensor]:
    """Read a .pth/.pt/.bin/.ckpt (weights only) or .safetensors file into a flat tensor dict."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise UserError(f"checkpoint is not a file: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        except Exception as e:
            raise UserError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0][:120]})")
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except (zipfile.BadZipFile, EOFError, RuntimeError, OSError) as e:
            raise UserError(f"{path}: unreadable or truncated checkpoint ({str(e).splitlines()[0][:120]}); "
                            "re-download or re-save it")
        except Exception as e:  # pickle.UnpicklingError for files that hold code objects, etc.
            msg = str(e).splitlines()[0][:160]
            if "weights_only" in msg or "Unsupported global" in msg:
                raise UserError(f"{path}: checkpoint contains Python objects, not just tensors; refusing to "
                                "unpickle it. Re-save with torch.save(model.state_dict()) or as .safetensors")
            raise UserError(f"{path}: cannot read checkpoint ({type(e).__name__}: {msg})")
    sd = _unwrap(obj, path)
    if not sd:
        raise UserError(f"{path}: checkpoint has no tensors")
    return sd


def _first(items: Iterable[str], n: int = 3) -> str:
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def diff_state_dict(model: torch.nn.Module, sd: Dict[str, torch.Tensor]) -> Dict[str, List[str]]:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
                  if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    return {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}


def load_into(model: torch.nn.Module, sd: Dict[str, torch.Tensor], model_name: str,
              source: str = "checkpoint", guess: Optional[str] = None) -> None:
    """Strict load. On mismatch one line names the first missing, unexpected and mismatched keys,
    and the variant the checkpoint seems to belong to when `guess` says so."""
    d = diff_state_dict(model, sd)
    if any(d.values()):
        parts = []
        if guess and guess != model_name:
            parts.append(f"it looks like a {guess} checkpoint (use `{guess}` as the model)")
        if d["mismatched"]:
            parts.append(f"shape mismatch: {_first(d['mismatched'], 2)}")
        if d["missing"]:
            parts.append(f"missing: {_first(d['missing'])}")
        if d["unexpected"]:
            parts.append(f"unexpected: {_first(d['unexpected'])}")
        raise UserError(f"{source} does not fit {model_name}: " + "; ".join(parts))
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    sd = {k: v.to(dtypes[k]) if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)
