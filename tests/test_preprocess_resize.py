"""--resize modes (issue 16) on photo-like images of each orientation, pixel for pixel against a
hand computation: keep-ratio = mmdet Resize(keep_ratio=True) + zero pad (zeros after normalisation),
stretch = keep_ratio=False, crop = timm's eval crop generalised to H x W."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vitdeploy.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_images

H, W = 320, 640  # a landscape detector input (multiples of 32)


def _photo(path, w, h, seed):
    """A photo-like RGB image: smooth gradients, shapes and noise (no flat areas to hide errors)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([255 * xx / w, 255 * yy / h, 128 + 100 * np.sin(xx / 17.0 + yy / 23.0)], -1)
    a = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(a)
    d = ImageDraw.Draw(im)
    d.ellipse((w // 5, h // 4, w // 2, h // 2 + h // 4), fill=(220, 40, 30))
    d.rectangle((w // 2, h // 8, w - w // 6, h // 3), fill=(20, 90, 200))
    im.save(path)
    return path


def _norm(a):
    return (np.asarray(a, np.float32) / 255.0 - np.asarray(IMAGENET_MEAN, np.float32)) \
        / np.asarray(IMAGENET_STD, np.float32)


# (w, h) of the photo -> (new_w, new_h) by hand: scale = min(H/h, W/w); size = int(x * scale + 0.5)
#   landscape 600x400: scale = min(320/400, 640/600) = 0.8     -> 480 x 320, pad 160 columns
#   portrait  400x600: scale = min(320/600, 640/400) = 0.5333.. -> int(213.83) = 213 x 320, pad 427 columns
@pytest.mark.parametrize("wh,new", [((600, 400), (480, 320)), ((400, 600), (213, 320))],
                         ids=["landscape", "portrait"])
def test_keep_ratio_pixel_for_pixel(tmp_path, wh, new):
    p = _photo(tmp_path / "photo.png", *wh, seed=wh[0])
    x = preprocess_images([p], (H, W), resize="keep-ratio", interpolation="bilinear")
    assert x.shape == (1, 3, H, W)
    nw, nh = new
    want = _norm(Image.open(p).convert("RGB").resize((nw, nh), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(x[0, :, :nh, :nw], want)
    assert not x[0, :, :, nw:].any() and not x[0, :, nh:, :].any()  # the pad is exactly 0 after normalisation
    assert np.abs(x[0, :, :nh, :nw]).min() >= 0 and np.abs(x[0, :, :nh, nw - 1]).max() > 0.1  # image reaches nw


def test_stretch_and_crop_at_hxw(tmp_path):
    p = _photo(tmp_path / "photo.png", 400, 600, seed=1)
    x = preprocess_images([p], (H, W), resize="stretch", interpolation="bilinear")
    want = _norm(Image.open(p).convert("RGB").resize((W, H), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(x[0], want)
    # crop, crop_pct 0.8: cover 400x800 keeping the ratio: a 400x600 photo -> width 800, height int(800*600/400)
    # = 1200; center crop 320x640 at left (800-640)/2 = 80, top (1200-320)/2 = 440
    c = preprocess_images([p], (H, W), resize="crop", crop_pct=0.8, interpolation="bicubic")
    im = Image.open(p).convert("RGB").resize((800, 1200), Image.BICUBIC).crop((80, 440, 720, 760))
    assert np.array_equal(c[0], _norm(im).transpose(2, 0, 1))
    # a square size crops exactly as before H x W existed (short side to size / crop_pct)
    s = preprocess_images([p], 224, resize="crop", crop_pct=0.875)
    im = Image.open(p).convert("RGB").resize((256, 384), Image.BICUBIC).crop((16, 80, 240, 304))
    assert np.array_equal(s[0], _norm(im).transpose(2, 0, 1))
