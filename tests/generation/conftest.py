"""The generation tests' model: the embedded ``nemo-tiny`` (random weights shaped like a trained
model's, nemo_ref/demo.py), one per test module, as each module had it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def model():
    from nemo_ref.demo import embedded_model

    return embedded_model("nemo-tiny", seed=0)
