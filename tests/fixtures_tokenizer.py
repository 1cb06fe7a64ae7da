"""Session fixtures for the tokenizer and structured-output tests (import them by name).

Loading Tekken takes about a second and building llguidance's tokenizer half a second more, so
each happens once per test process.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tok():
    """nemo_ref's Tokenizer on the bundled tekken_240718.json."""
    pytest.importorskip("mistral_common")
    from nemo_ref.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def oracle():
    """An independently loaded mistral-common MistralTokenizer (Nemo's published tokenizer)."""
    pytest.importorskip("mistral_common")
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    return MistralTokenizer.v3(is_tekken=True)
