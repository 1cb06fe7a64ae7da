"""The one rule for the default backends: Triton's kernels on a CUDA device, PyTorch elsewhere.

Both the attention backend (``load_model``, ``embedded_model``, the CLI) and the sampler
(``Engine.__init__`` binds ``nemo_ref.sampling.sampler.make_sampler``'s backend once, hence
``generate`` and the server) follow it, so a model and its sampler never disagree about where
the kernels run. Off CUDA the kernels only run in Triton's interpreter (tests).
"""

from __future__ import annotations

import torch


def triton_by_default(device: torch.device | str) -> bool:
    """True where the Triton kernels are the default: CUDA devices."""
    return torch.device(device).type == "cuda"


def default_attn_backend(device: torch.device | str) -> str:
    """``"triton"`` on CUDA, PyTorch's ``"sdpa"`` elsewhere."""
    return "triton" if triton_by_default(device) else "sdpa"


def default_sampler(device: torch.device | str) -> str:
    """``"triton"`` (the fused sampler kernel) on CUDA, ``"torch"`` elsewhere."""
    return "triton" if triton_by_default(device) else "torch"
