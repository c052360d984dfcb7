"""MACs of a model, counted from the ops PyTorch actually runs (so pruned windows are not counted)."""

from __future__ import annotations


def count_macs(module, example) -> int:
    """MACs of one forward of `module` on `example`: a batch of images (tensor or array), or an int
    image size (int side, "HxW" or ImageSize) for one zero image of that size (the MACs of one image)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vitdeploy.models.size import ImageSize, as_size

    x = (torch.zeros(1, 3, *as_size(example).hw) if isinstance(example, (int, str, ImageSize))
         else torch.as_tensor(example))
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        module(x)
    return int(fc.get_total_flops() // 2)
