"""Fixtures of several parts: small random Nemo-shaped models, their checkpoints in both published
layouts, and the Tekken tokenizer. One part's own fixtures are in its folder's conftest.py; the helper
functions behind them are in tests/support.py.

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

from nemo_ref.model import Transformer
from tests.support import random_model


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


@pytest.fixture(scope="module")
def tok():
    """nemo_ref's Tokenizer on the bundled tekken_240718.json.

    ``load_tokenizer`` caches what it loaded (about a second for Tekken), so this costs nothing after
    the first module. Module scope, not session: the cache keeps the last 8 files, and a module that
    loads others (tokenizer/test_sentencepiece.py: four bundled files and copies in temporary
    directories) may evict Tekken; tokenizer/test_tokenizer.py checks that ``load_tokenizer()``
    returns this very object.
    """
    pytest.importorskip("mistral_common")
    from nemo_ref.tokenizer import load_tokenizer

    return load_tokenizer()
