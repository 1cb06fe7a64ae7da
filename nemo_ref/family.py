"""The dense Mistral family: which published model a config describes, and which tokenizer it uses.

Nemo 12B is one member of a family that shares one architecture (pre-norm RMSNorm, GQA with 8 KV
heads of 128, SwiGLU, RoPE, untied output) and differs in shape, vocabulary, RoPE base and, for
Mistral 7B v0.1 only, a sliding attention window. The shapes are the presets of nemo_ref/config.py;
this table adds what a config file does not say: the member's name, its Hugging Face repository,
its tokenizer file, and its published parameter count (docs/architecture.md has the comparison).

Members with the same architecture (Mistral 7B v0.3 and Mathstral 7B; Mistral Small 2409 and
Codestral 22B) cannot be told apart from their configs: :func:`identify` names both.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import PRESETS, ModelArgs

__all__ = ["MEMBERS", "Member", "bundled_tokenizer_for_vocab", "describe", "identify"]

# Tokenizer files inside mistral-common's wheel (mistral_common/data/), loadable offline.
TEKKEN_V3 = "tekken_240718.json"
SPM_V1 = "tokenizer.model.v1"
SPM_V3 = "mistral_instruct_tokenizer_240323.model.v3"


@dataclass(frozen=True)
class Member:
    """One published model of the family. ``name`` is its preset in ``nemo_ref.config.PRESETS``."""

    name: str
    title: str
    repo: str  # Hugging Face repository of the published weights
    tokenizer: str  # tokenizer file name in that repository
    bundled_tokenizer: str  # the same tokenizer as shipped inside mistral-common
    parameters: int  # published parameter count

    @property
    def args(self) -> ModelArgs:
        return PRESETS[self.name]


MEMBERS: dict[str, Member] = {
    m.name: m
    for m in (
        Member("nemo-12b", "Mistral Nemo 12B (2407)", "mistralai/Mistral-Nemo-Instruct-2407",
               "tekken.json", TEKKEN_V3, 12_247_782_400),
        Member("mistral-7b-v0.1", "Mistral 7B v0.1", "mistralai/Mistral-7B-v0.1",
               "tokenizer.model", SPM_V1, 7_241_732_096),
        Member("mistral-7b-v0.3", "Mistral 7B v0.3", "mistralai/Mistral-7B-Instruct-v0.3",
               "tokenizer.model.v3", SPM_V3, 7_248_023_552),
        Member("mathstral-7b", "Mathstral 7B v0.1", "mistralai/Mathstral-7B-v0.1",
               "tokenizer.model.v3", SPM_V3, 7_248_023_552),
        Member("mistral-small-2409", "Mistral Small (2409)", "mistralai/Mistral-Small-Instruct-2409",
               "tokenizer.model.v3", SPM_V3, 22_247_282_688),
        Member("codestral-22b", "Codestral 22B v0.1", "mistralai/Codestral-22B-v0.1",
               "tokenizer.model.v3", SPM_V3, 22_247_282_688),
        Member("mistral-large-2407", "Mistral Large 2 (2407)", "mistralai/Mistral-Large-Instruct-2407",
               "tokenizer.model.v3", SPM_V3, 122_610_069_504),
    )
}  # fmt: skip

# What identifies a member: everything but the context length, which checkpoints state differently
# (params.json often omits it; HF configs round it or write placeholders).
_ARCH_FIELDS = (
    "dim", "n_layers", "head_dim", "hidden_dim", "n_heads", "n_kv_heads", "vocab_size", "norm_eps",
    "rope_theta", "tied_embeddings", "sliding_window", "rope_scaling", "llama4_beta",
)  # fmt: skip


def _arch(args: ModelArgs) -> tuple:
    return tuple(getattr(args, f) for f in _ARCH_FIELDS)


def identify(args: ModelArgs) -> list[str]:
    """Names of the published members whose architecture ``args`` describes (empty if none)."""
    key = _arch(args)
    return [name for name, m in MEMBERS.items() if _arch(m.args) == key]


def describe(args: ModelArgs) -> str:
    """A human name for ``args``: e.g. "Mistral 7B v0.3 or Mathstral 7B v0.1 (same architecture)"."""
    names = identify(args)
    if not names:
        return "no published family member (a custom shape)"
    titles = [MEMBERS[n].title for n in names]
    return titles[0] if len(titles) == 1 else " or ".join(titles) + " (same architecture)"


def bundled_tokenizer_for_vocab(vocab_size: int) -> str | None:
    """The mistral-common data file for a model without a tokenizer of its own, chosen by vocabulary.

    131072 ids: Tekken v3 (Nemo); 32768: SentencePiece v3 (7B v0.3 and every 2024 member);
    32000: SentencePiece v1 (7B v0.1). None for any other vocabulary size.
    """
    return {131072: TEKKEN_V3, 32768: SPM_V3, 32000: SPM_V1}.get(vocab_size)
