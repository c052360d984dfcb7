"""MACs of a model, counted from the ops PyTorch actually runs (so pruned windows are not counted)."""

from __future__ import annotations


def count_macs(module, example) -> int:
    """MACs of one forward of `module` on `example`: a batch of images (tensor or array), or an int
    side for one zero image of that size (the MACs of one image)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, example, example) if isinstance(example, int) else torch.as_tensor(example)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        module(x)
    return int(fc.get_total_flops() // 2)
