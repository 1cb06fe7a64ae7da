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
    # Built in the target dtype: init_random draws float32 and casts per parameter (the same values
    # as a float32 model cast afterwards), so a 7B preset in bf16 never needs its float32 copy.
    model = Transformer(args, attn_backend=attn_backend, dtype=dtype).init_random(seed)
    model.random_weights = True  # read by the CLI and the server to label their outputs
    return model.to(device=device).eval()


def notice(preset: str = DEFAULT_PRESET, seed: int = 0) -> str:
    return RANDOM_WEIGHTS_NOTICE.format(preset=preset, seed=seed)
