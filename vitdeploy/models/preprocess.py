"""Images -> the normalized NCHW float32 arrays the models take, as each model's eval expects.

Three resize modes (``--resize``), all written into the ONNX metadata with crop ratio and
interpolation, so `validate --images`, `serve`, calibration, search and the client preprocess
exactly as the export did (then scale to [0, 1] and normalize with the spec's mean/std):

* ``crop`` (classification, timm eval): resize keeping the ratio so the image covers
  floor(H / crop_pct) x floor(W / crop_pct), center crop H x W (for a square: the short side to
  img_size / crop_pct, as before).
* ``keep-ratio`` (detection, mmdet ``Resize(keep_ratio=True)`` + ``Pad(size_divisor=32)``): scale by
  ``min(H / h, W / w)`` so the image fits into H x W, new size ``int(x * scale + 0.5)`` (mmcv's
  ``rescale_size``), bilinear; normalize; pad bottom/right with zeros up to H x W. The padded
  pixels are exactly 0 *after* normalisation, as mmdet pads the normalized image. The model's
  input is static, so the pad reaches H x W (which contains the size_divisor pad; H, W are multiples of 32).
* ``stretch`` (mmdet ``keep_ratio=False``, SparseViT's Mask R-CNN test pipeline): resize to
  exactly H x W, bilinear.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np

from vitdeploy.errors import UserError
from vitdeploy.models.size import as_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875  # 224 / 256: the classic ImageNet eval crop
DEFAULT_INTERPOLATION = "bicubic"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos")
RESIZE_MODES = ("crop", "keep-ratio", "stretch")
DETECTION_INTERPOLATION = "bilinear"  # mmdet/mmcv Resize default


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


def check_resize(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise UserError(f"--resize {mode!r}: expected one of {', '.join(RESIZE_MODES)}")
    return mode


def default_resize(family: str, task: str) -> str:
    """Each family's official test pipeline: classification crops; SparseViT's Mask R-CNN config
    stretches to 672x672 (keep_ratio=False); EfficientViT's RetinaNet config (Cream
    EfficientViT/downstream) fits (1333, 800) keeping the ratio and pads to 32."""
    if task == "classify":
        return "crop"
    return "stretch" if family == "swin" else "keep-ratio"


def fit_size(w: int, h: int, H: int, W: int) -> tuple[int, int]:
    """keep-ratio: (new_w, new_h) of a w x h image fitted into H x W (mmcv ``rescale_size``)."""
    scale = min(H / h, W / w)
    return min(W, int(w * float(scale) + 0.5)), min(H, int(h * float(scale) + 0.5))


def preprocess_images(paths_or_dir, img_size=224, mean: Sequence[float] = IMAGENET_MEAN,
                      std: Sequence[float] = IMAGENET_STD, crop_pct: float = DEFAULT_CROP_PCT,
                      interpolation: str = DEFAULT_INTERPOLATION, resize: str = "crop") -> np.ndarray:
    """Eval preprocessing for an H x W input in one of RESIZE_MODES. Returns float32 [B,3,H,W]."""
    from PIL import Image, UnidentifiedImageError

    size = as_size(img_size)
    H, W = size.h, size.w
    check_resize(resize)
    if interpolation not in INTERPOLATIONS:
        raise UserError(f"interpolation {interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}")
    if not 0 < crop_pct <= 1:
        raise UserError(f"crop_pct {crop_pct}: expected a fraction in (0, 1]")
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                "lanczos": Image.LANCZOS}[interpolation]
    rh, rw = int(H / crop_pct), int(W / crop_pct)  # timm: math.floor(size / crop_pct)
    m_ = np.asarray(mean, np.float32)
    s_ = np.asarray(std, np.float32)
    out = []
    for f in list_images(paths_or_dir):
        try:
            im = Image.open(f).convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"--images: cannot read {f}: {e}")
        w, h = im.size
        if resize == "crop":
            # cover rh x rw keeping the ratio (square: the short side to rh), then center crop
            nw, nh = (rw, int(rw * h / w)) if rw * h >= rh * w else (int(rh * w / h), rh)
            im = im.resize((nw, nh), resample)
            left, top = int(round((nw - W) / 2.0)), int(round((nh - H) / 2.0))
            im = im.crop((left, top, left + W, top + H))
            a = (np.asarray(im, dtype=np.float32) / 255.0 - m_) / s_
        elif resize == "stretch":
            im = im.resize((W, H), resample)
            a = (np.asarray(im, dtype=np.float32) / 255.0 - m_) / s_
        else:  # keep-ratio: fit, normalize, then zero-pad bottom/right (zeros after normalisation)
            nw, nh = fit_size(w, h, H, W)
            im = im.resize((nw, nh), resample)
            a = np.zeros((H, W, 3), np.float32)
            a[:nh, :nw] = (np.asarray(im, dtype=np.float32) / 255.0 - m_) / s_
        out.append(a.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def random_images(batch: int, img_size, seed: int = 0) -> np.ndarray:
    """Synthetic normalized images (standard normal), fixed seed: the same in every process."""
    size = as_size(img_size)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, size.h, size.w)).astype(np.float32)
