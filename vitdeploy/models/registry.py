"""Model names -> specs (defaults, preprocessing, checkpoint formats) and one way to build any of them.

Every family module exposes the same builder, `build(name, *, num_classes, img_size, task,
sparsity, state_dict, norm_order)` and `check_legal_size(ImageSize)`, which validate what the
family does not support (EfficientViT has no sparsity) and read what they need from the
checkpoint's state dict (EfficientViT's distillation head and window resolutions, Swin's layout
for the dense pad/LN order), so nothing here branches on the family. Families are imported lazily so
listing models stays instant and one family's import cost is not paid by the other.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Optional, Tuple

from vitdeploy.errors import UserError
from vitdeploy.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, default_resize
from vitdeploy.models.size import ImageSize


@dataclass(frozen=True)
class ModelSpec:
    """A model name's facts, timm `pretrained_cfg` style: input size and eval preprocessing included."""
    name: str
    family: str  # "efficientvit" | "swin" (for display; building goes through `module`)
    module: str  # python module with build / convert_checkpoint / guess_variant
    default_img_size: int
    tasks: Tuple[str, ...]
    checkpoint_formats: Tuple[str, ...]
    description: str
    crop_pct: float
    interpolation: str
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    sparsity: bool = False  # accepts --sparsity (SparseViT)

    def default_resize(self, task: str) -> str:
        """--resize default: the family's official test pipeline for this task."""
        return default_resize(self.family, task)

    def interpolation_for(self, resize: str) -> str:
        """crop: the classifier's (timm pretrained_cfg); keep-ratio/stretch: mmdet's Resize (bilinear)."""
        from vitdeploy.models.preprocess import DETECTION_INTERPOLATION

        return self.interpolation if resize == "crop" else DETECTION_INTERPOLATION


_EV = ("official Microsoft (blocks1/.c./.l.)", "timm (stages.*)", "vitdeploy")
_SW = ("timm (layers.*)", "mmdet/SparseViT (backbone.stages.*.attn.w_msa)", "vitdeploy")

# crop_pct / interpolation: EfficientViT's official eval (Resize 256 bicubic, CenterCrop 224) and
# timm's swin_*.ms_in1k pretrained_cfg (crop_pct 0.9, bicubic).
SPECS = {s.name: s for s in [
    *(ModelSpec(f"efficientvit_m{i}", "efficientvit", "vitdeploy.models.efficientvit", 224, ("classify", "backbone"),
                _EV,
                f"EfficientViT-M{i} (MSRA, CVPR 2023)", crop_pct=0.875, interpolation="bicubic")
      for i in range(6)),
    *(ModelSpec(f"swin_{v}", "swin", "vitdeploy.models.swin", 224, ("classify", "backbone"), _SW,
                f"Swin-{v.upper()}; with --sparsity: SparseViT (MIT, CVPR 2023)", crop_pct=0.9,
                interpolation="bicubic", sparsity=True)
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
    for fam in sorted({spec.module for spec in SPECS.values()}):
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


def check_size(name: str, img_size) -> ImageSize:
    """The size as an ImageSize, legal for the model's family (UserError naming the nearest legal)."""
    spec = get_spec(name)
    size = ImageSize.parse(img_size if img_size is not None else spec.default_img_size, allow_zero=True)
    family_module(spec).check_legal_size(size)
    return size


def build_model(name: str, *, num_classes: Optional[int] = None, img_size=None,
                task: str = "classify", sparsity=None, checkpoint: Optional[os.PathLike] = None,
                norm_order: Optional[str] = None):
    """Build `name` in eval mode, with weights from `checkpoint` when given (random otherwise).

    `sparsity` is a spec (None, float, preset name, JSON path) or a parsed SparsityConfig;
    `img_size` an int (square), "HxW" or ImageSize; `norm_order` (Swin) overrides the default
    pad/LN1 order (``swin.default_norm_order``).
    """

    spec = get_spec(name)
    img_size = check_size(name, img_size)
    if task not in spec.tasks:
        raise UserError(f"{name} supports --task {'|'.join(spec.tasks)}, not {task!r}")
    mod = family_module(spec)
    raw = None
    if checkpoint is not None:
        from vitdeploy.models.checkpoints import load_state_dict_file

        raw = load_state_dict_file(checkpoint)
    if num_classes is None:
        num_classes = (infer_num_classes(raw) if raw is not None and task == "classify" else None) or 1000
    model = mod.build(name, num_classes=num_classes, img_size=img_size, task=task, sparsity=sparsity,
                      state_dict=raw, norm_order=norm_order)
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
