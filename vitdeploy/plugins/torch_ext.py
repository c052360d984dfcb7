"""The window kernels as a PyTorch extension, for the GPU tests and the bandwidth benchmark.

Built by torch.utils.cpp_extension from the same csrc/common/windowOpsKernel.cu the plugin library
links, so both consumers run the plugins' exact kernels. One name and one build directory
(``default_build_dir()/torch_ext``): the tests and the benchmark of one `make gpu-check` compile once.
"""

from __future__ import annotations

from vitdeploy.plugins import csrc_dir, default_build_dir

EXTENSION_NAME = "vitdeploy_window_ops_torch"


def load_extension():
    """The compiled extension module (gather, scatter, scatter_, scatter_map, scatter_map_, vector_bytes)."""
    from torch.utils.cpp_extension import load

    csrc = csrc_dir()
    build = default_build_dir() / "torch_ext"
    build.mkdir(parents=True, exist_ok=True)
    return load(name=EXTENSION_NAME,
                sources=[str(csrc / "tests" / "torchWindowOps.cpp"), str(csrc / "common" / "windowOpsKernel.cu")],
                extra_include_paths=[str(csrc / "common")], extra_cflags=["-O2"], extra_cuda_cflags=["-O3"],
                build_directory=str(build), verbose=False)
