"""The GPU an engine is built for or run on: name and compute capability, through NVML (nvidia-ml-py).

NVML needs only the driver (no CUDA runtime, no TensorRT), answers in microseconds, and numbers
devices in PCI bus order; CUDA numbers them fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, so
the device is taken from CUDA_VISIBLE_DEVICES (an index or a GPU UUID) when set, else NVML device 0.
"""

from __future__ import annotations

import os
from typing import Tuple

from vitdeploy import optional
from vitdeploy.errors import CheckFailed


def _handle(nvml):
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible.startswith("GPU-") or visible.startswith("MIG-"):
        return nvml.nvmlDeviceGetHandleByUUID(visible)
    return nvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)


def current_gpu() -> Tuple[str, str]:
    """(GPU name, "major.minor" compute capability) of the device CUDA would use first."""
    nvml = optional.nvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        raise CheckFailed(f"NVML cannot query the GPU ({e}): no NVIDIA GPU or driver here") from None
    try:
        handle = _handle(nvml)
        name = nvml.nvmlDeviceGetName(handle)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    except nvml.NVMLError as e:
        raise CheckFailed(f"NVML cannot query the GPU ({e})") from None
    finally:
        nvml.nvmlShutdown()
    return (name.decode() if isinstance(name, bytes) else str(name)), f"{major}.{minor}"


def gpu_present() -> bool:
    """Whether this host has an NVIDIA GPU with its driver loaded, asked without CUDA: NVML when
    nvidia-ml-py is installed, else the driver's /proc and /dev entries."""
    if optional.available("nvidia-ml-py"):
        nvml = optional.nvml()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError:
            return False
        try:
            return nvml.nvmlDeviceGetCount() > 0
        except nvml.NVMLError:
            return False
        finally:
            nvml.nvmlShutdown()
    return os.path.exists("/proc/driver/nvidia/version") and os.path.exists("/dev/nvidia0")
