"""Model names -> builders, defaults and preprocessing.

Families are imported lazily so listing models stays instant and one family's import cost is
not paid by the other.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from vitdeploy.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "efficientvit" | "swin"
    module: str  # python module with build/convert functions
    builder: str
    default_img_size: int
    tasks: Tuple[str, ...]
    checkpoint_formats: Tuple[str, ...]
    description: str
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    sparsity: bool = False  # accepts --sparsity (SparseViT)


_EV = ("official Microsoft (blocks1/.c./.l.)", "timm (stages.*)", "vitdeploy")
_SW = ("timm (layers.*)", "mmdet/SparseViT (backbone.stages.*.attn.w_msa)", "vitdeploy")

SPECS = {s.name: s for s in [
    *(ModelSpec(f"efficientvit_m{i}", "efficientvit", "vitdeploy.models.efficientvit", "build_efficientvit",
                224, ("classify",), _EV, f"EfficientViT-M{i} (MSRA, CVPR 2023)") for i in range(6)),
    *(ModelSpec(f"swin_{v}", "swin", "vitdeploy.models.swin", "build_swin", 224, ("classify", "backbone"), _SW,
                f"Swin-{v.upper()}; with --sparsity: SparseViT (MIT, CVPR 2023)", sparsity=True)
      for v in ("t", "s", "b")),
]}

MODEL_NAMES = tuple(SPECS)


def get_spec(name: str) -> ModelSpec:
    if name not in SPECS:
        import difflib

        close = difflib.get_close_matches(name, SPECS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown model {name!r}{hint}; choose one of: {', '.join(SPECS)}")
    return SPECS[name]


def family_module(spec: ModelSpec):
    return importlib.import_module(spec.module)


def guess_model(sd) -> Optional[str]:
    """Which known model a state dict belongs to, across families (for error messages)."""
    for fam in ("vitdeploy.models.efficientvit", "vitdeploy.models.swin"):
        try:
            g = importlib.import_module(fam).guess_variant(sd)
        except Exception:
            g = None
        if g:
            return g
    return None


_HEAD_KEYS = ("head.linear.weight", "head.l.weight", "head.fc.weight")


def infer_num_classes(sd) -> Optional[int]:
    """Classes of a checkpoint's classifier head (fine-tuned models rarely have 1000)."""
    for k, v in sd.items():
        if k.endswith(_HEAD_KEYS) and getattr(v, "ndim", 0) == 2 and "dist" not in k:
            return int(v.shape[0])
    return None


def build_model(name: str, *, num_classes: Optional[int] = None, img_size: Optional[int] = None,
                task: str = "classify", sparsity=None, checkpoint: Optional[os.PathLike] = None):
    """Build `name` in eval mode, with weights from `checkpoint` when given (random otherwise).

    `sparsity` is a spec (None, float, preset name, JSON path) or a parsed SparsityConfig.
    """

    spec = get_spec(name)
    img_size = img_size or spec.default_img_size
    if task not in spec.tasks:
        raise UserError(f"{name} supports --task {'|'.join(spec.tasks)}, not {task!r}")
    mod = family_module(spec)
    raw = None
    if checkpoint is not None:
        from vitdeploy.models.checkpoints import load_state_dict_file

        raw = load_state_dict_file(checkpoint)
    if num_classes is None:
        num_classes = (infer_num_classes(raw) if raw is not None and task == "classify" else None) or 1000
    if spec.family == "swin":
        from vitdeploy.models.sparsity import SparsityConfig, parse_sparsity

        cfg = sparsity if isinstance(sparsity, SparsityConfig) or sparsity is None else None
        if cfg is None and sparsity is not None:
            cfg = parse_sparsity(sparsity, mod.CONFIGS[name]["depths"], img_size=img_size)
        model = getattr(mod, spec.builder)(name, num_classes=num_classes, img_size=img_size, task=task,
                                           sparsity=cfg)
    else:
        if sparsity is not None:
            raise UserError(f"--sparsity applies to Swin models (SparseViT), not {name}")
        # a distillation head in the file: build it, so eval averages both heads like the official code
        distill = raw is not None and mod.has_distillation_head(raw)
        model = getattr(mod, spec.builder)(name, num_classes=num_classes, img_size=img_size, distillation=distill)
    if raw is not None:
        from vitdeploy.models.checkpoints import load_into

        guess = guess_model(raw)
        try:
            sd = mod.convert_checkpoint(raw, model)
        except UserError as e:
            if guess and guess != name:
                raise UserError(f"{checkpoint}: looks like a {guess} checkpoint, not {name} ({e})")
            raise
        load_into(model, sd, name, source=str(checkpoint), guess=guess)
    model.num_classes = num_classes
    return model.eval()


def randomize_for_parity(model, seed: int = 0):
    """Random non-trivial weights: every parameter and every BN statistic perturbed, so that
    parity tests exercise folding (default BN stats are the identity) and attention biases."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # every value comes from the seeded generator (not from the random init), so two builds
        # in two processes give the same model: `validate` can rebuild an export's weights
        for name, p in model.named_parameters():
            if p.ndim <= 1:
                base = 1.0 if name.endswith("weight") else 0.0  # norm scales around 1, biases around 0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = max(1, p[0].numel())
                # 0.5/sqrt(fan_in): activations stay O(1) through dozens of residual branches
                p.copy_(0.5 * torch.randn(p.shape, generator=g) / fan_in ** 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


def list_images(path: Union[str, os.PathLike, Sequence]) -> List[Path]:
    if isinstance(path, (list, tuple)):
        return [Path(p) for p in path]
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise UserError(f"--images: {p} is not a directory or image file")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--images: no images ({', '.join(IMAGE_SUFFIXES)}) in {p}")
    return files


def preprocess_images(paths_or_dir, img_size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                      std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Official eval preprocessing: resize short side to img*256/224 (bicubic), center crop,
    scale to [0,1], normalize. Returns float32 [B,3,H,W]."""
    from PIL import Image, UnidentifiedImageError

    files = list_images(paths_or_dir)
    resize = int(img_size * 256 / 224)
    out = []
    for f in files:
        try:
            im = Image.open(f).convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"--images: cannot read {f}: {e}")
        w, h = im.size
        if w <= h:
            nw, nh = resize, int(resize * h / w)
        else:
            nw, nh = int(resize * w / h), resize
        im = im.resize((nw, nh), Image.BICUBIC)
        left, top = int(round((nw - img_size) / 2.0)), int(round((nh - img_size) / 2.0))
        im = im.crop((left, top, left + img_size, top + img_size))
        a = np.asarray(im, dtype=np.float32) / 255.0
        a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        out.append(a.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def random_images(batch: int, img_size: int, seed: int = 0) -> np.ndarray:
    """Synthetic normalized images: smooth-ish random fields, fixed seed."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, img_size, img_size)).astype(np.float32)
