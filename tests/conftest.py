"""Shared fixtures: small random Nemo-shaped models and their checkpoints in both published layouts.

Nothing here downloads anything: transformers runs offline, and every checkpoint is synthetic,
written by the test session into a temporary directory.
"""

from __future__ import annotations

import os

# transformers is used as an oracle; it must never reach for the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Triton kernels run through the interpreter in the tests (no GPU on CI). It must be set before
# anything imports triton (transformers may), or @triton.jit functions bind in compiled mode and
# the kernel tests fail depending on which test modules a worker ran first. The sm_90 compile test
# unsets it in its own subprocess. Set TRITON_INTERPRET=0 explicitly to test on a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from nemo_ref.config import ModelArgs
from nemo_ref.model import Transformer


def random_model(
    args: ModelArgs | str = "nemo-tiny",
    seed: int = 0,
    std: float = 0.1,
    dtype: torch.dtype = torch.float32,
    attn_backend: str = "sdpa",
) -> Transformer:
    """A model with random weights large enough that attention is far from uniform.

    ``init_random``'s default std (0.02) leaves attention nearly uniform at these sizes, so RoPE or
    q/k-permutation bugs would barely move the logits; std 0.1 makes them visible. The norm weights
    are randomised too (1 + 0.1 N(0,1)) so that a norm loaded into the wrong place shows.
    """
    if isinstance(args, str):
        args = ModelArgs.preset(args)
    model = Transformer(args, attn_backend=attn_backend, dtype=dtype).init_random(seed, std=std)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="session")
def make_model():
    """The factory :func:`random_model` (args or preset name, seed, std, dtype, attn_backend)."""
    return random_model


@pytest.fixture(scope="session")
def tiny_model() -> Transformer:
    """``nemo-tiny`` (vocab 131072, dim 96, 4 heads of 32 over 1 KV head), float32, random weights."""
    return random_model("nemo-tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_model, tmp_path_factory) -> dict[str, object]:
    """``tiny_model`` saved in float32 in both layouts: {"mistral": dir, "hf": dir}.

    The HF one is split into several ``model-0000N-of-0000M.safetensors`` shards.
    """
    from nemo_ref.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("tiny_checkpoints")
    return {
        "mistral": save_checkpoint(tiny_model, root / "mistral", "mistral", dtype=torch.float32),
        "hf": save_checkpoint(tiny_model, root / "hf", "hf", dtype=torch.float32, max_shard_bytes=40_000_000),
    }
