"""Images -> the normalized NCHW float32 arrays the models take, as each model's eval expects.

Crop ratio and interpolation come from the model spec (timm's `pretrained_cfg` style) and are
written into the ONNX metadata, so `validate --images` and a client preprocess exactly as the
export did: resize the short side to img_size / crop_pct, center crop img_size, scale to [0, 1],
normalize with the spec's mean/std.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np

from vitdeploy.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875  # 224 / 256: the classic ImageNet eval crop
DEFAULT_INTERPOLATION = "bicubic"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos")


def list_images(path: Union[str, os.PathLike, Sequence]) -> List[Path]:
    """A directory's images (sorted), one image file, or the given list of paths."""
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
                      std: Sequence[float] = IMAGENET_STD, crop_pct: float = DEFAULT_CROP_PCT,
                      interpolation: str = DEFAULT_INTERPOLATION) -> np.ndarray:
    """Eval preprocessing (timm's `transforms_factory` eval path). Returns float32 [B,3,H,W]."""
    from PIL import Image, UnidentifiedImageError

    if interpolation not in INTERPOLATIONS:
        raise UserError(f"interpolation {interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}")
    if not 0 < crop_pct <= 1:
        raise UserError(f"crop_pct {crop_pct}: expected a fraction in (0, 1]")
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                "lanczos": Image.LANCZOS}[interpolation]
    resize = int(img_size / crop_pct)  # timm: math.floor(img_size / crop_pct)
    out = []
    for f in list_images(paths_or_dir):
        try:
            im = Image.open(f).convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"--images: cannot read {f}: {e}")
        w, h = im.size
        nw, nh = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        im = im.resize((nw, nh), resample)
        left, top = int(round((nw - img_size) / 2.0)), int(round((nh - img_size) / 2.0))
        im = im.crop((left, top, left + img_size, top + img_size))
        a = np.asarray(im, dtype=np.float32) / 255.0
        a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        out.append(a.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def random_images(batch: int, img_size: int, seed: int = 0) -> np.ndarray:
    """Synthetic normalized images (standard normal), fixed seed: the same in every process."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, img_size, img_size)).astype(np.float32)
