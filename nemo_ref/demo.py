"""The embedded default model: Nemo-shaped, small, with deterministic RANDOM weights.

It needs no download, so the demo, the tests and the notebooks run anywhere. Its outputs are noise
over the real Tekken vocabulary; everything produced with it says so.
"""

from __future__ import annotations

import torch

from .config import ModelArgs
from .model import Transformer

DEFAULT_PRESET = "nemo-small"
RANDOM_WEIGHTS_NOTICE = (
    "NOTE: random weights (embedded default model '{preset}', seed {seed}); the text is noise. "
    "Use --checkpoint DIR for real weights."
)


def embedded_model(
    preset: str = DEFAULT_PRESET,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_backend: str = "sdpa",
) -> Transformer:
    """A preset model with ``init_random(seed)`` weights: identical on every machine."""
    args = ModelArgs.preset(preset)
    model = Transformer(args, attn_backend=attn_backend, dtype=torch.float32).init_random(seed)
    model.random_weights = True  # read by the CLI and the server to label their outputs
    return model.to(device=device, dtype=dtype).eval()


def notice(preset: str = DEFAULT_PRESET, seed: int = 0) -> str:
    return RANDOM_WEIGHTS_NOTICE.format(preset=preset, seed=seed)
