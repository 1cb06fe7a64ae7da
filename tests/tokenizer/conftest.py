"""The tokenizer tests' oracle (the tokenizer itself is tests/conftest.py's ``tok``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def oracle():
    """An independently loaded mistral-common MistralTokenizer (Nemo's published tokenizer)."""
    pytest.importorskip("mistral_common")
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    return MistralTokenizer.v3(is_tekken=True)
