"""Mistral tokenizers (Tekken and SentencePiece), chat encoding and byte-exact incremental decoding.

Mistral Nemo uses Tekken v3: a tiktoken-style byte-level BPE (`tekken_240718.json`, shipped inside
the mistral-common wheel) with 131,072 ids. The first 1,000 ids are control tokens (0 `<unk>`,
1 `<s>`, 2 `</s>`, 3 `[INST]`, 4 `[/INST]`, 5/6 `[AVAILABLE_TOOLS]`, 7/8 `[TOOL_RESULTS]`,
9 `[TOOL_CALLS]`, 11 `<pad>`, ...); ids 1000..1255 are the 256 single bytes; the rest are merges.

The rest of the dense family (Mistral 7B, Mathstral, Small, Codestral, Large) uses SentencePiece
models (`tokenizer.model.v1` with 32,000 ids, `.v2`/`.v3`/`.v7` with 32,768): pieces spell a space
as U+2581 "▁", 256 byte-fallback pieces `<0x00>`..`<0xFF>` cover what the vocabulary does not, and
control tokens (`[INST]`, `[TOOL_CALLS]`, ...) are scattered ids that `is_special` knows. Encoding
adds a "dummy prefix" space, which decoding removes again from the first piece (SentencePiece's
rule, reproduced here byte for byte). mistral-common loads both kinds; `load_tokenizer` picks the
file (`tekken.json` or `tokenizer.model.v*`).

Everything that defines a prompt format is delegated to mistral-common (the reference Mistral
publishes): `encode_chat` only translates OpenAI-style messages into mistral-common's request model
and calls `encode_chat_completion`. What this module adds:

- OpenAI-compatible leniency where the format is stricter than OpenAI's (tool-call ids that are
  not 9 alphanumerics are mapped, content may be a list of text parts, a final assistant message is
  continued; nemo_ref/chat_messages.py), and one error type, `ChatFormatError`, with the request
  field to blame.
- Raw token bytes (`token_bytes`), never U+FFFD-replaced, for logprobs and for streaming.
- `IncrementalDecoder`: 1,435 Tekken tokens (and every SentencePiece byte piece) are not valid
  UTF-8 on their own (an emoji can take four byte tokens), so streamed text must hold back
  incomplete UTF-8 sequences.

mistral-common is imported lazily so that `import nemo_ref` works with torch/safetensors/numpy only.
"""

from __future__ import annotations

import codecs
import re
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from .chat_messages import ChatFormatError, convert_messages, convert_tools, nemo_tool_call_id, short_error

__all__ = [
    "BUNDLED_TEKKEN",
    "ChatFormatError",
    "IncrementalDecoder",
    "Tokenizer",
    "bundled_tekken_path",
    "checkpoint_tokenizer_name",
    "find_tokenizer_file",
    "load_tokenizer",
    "nemo_tool_call_id",
]

BUNDLED_TEKKEN = "tekken_240718.json"  # Nemo 2407's tokenizer, inside mistral_common/data/


def _require_mistral_common() -> None:
    try:
        import mistral_common  # noqa: F401
    except ImportError as e:
        raise ImportError("the tokenizer needs mistral-common: pip install 'nemo_ref[tokenizer]'") from e


def bundled_tekken_path() -> Path:
    """Path of the Tekken v3 file bundled with mistral-common (works offline)."""
    return bundled_path(BUNDLED_TEKKEN)


def bundled_path(name: str) -> Path:
    """Path of a tokenizer file bundled with mistral-common (``mistral_common/data/<name>``)."""
    _require_mistral_common()
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / name


_SPM_NAME_RE = re.compile(r".*\.model(\.v\d+(m\d+)?)?")


def is_tokenizer_file(path: Path) -> bool:
    """A Tekken json (named like `*tekken*.json`) or a SentencePiece model (`*.model[.vN]`)."""
    name = path.name
    return ("tekken" in name and name.endswith(".json")) or bool(_SPM_NAME_RE.fullmatch(name))


def find_tokenizer_file(directory: str | Path) -> Path | None:
    """The tokenizer file of a checkpoint directory, or None.

    Preference: `tekken.json`, another `*tekken*.json`, `tokenizer.model.vN` (the highest N),
    another `*.model.vN`, a bare `tokenizer.model` (SentencePiece v1, as Mistral 7B v0.1 ships it).
    """
    d = Path(directory)
    if (d / "tekken.json").is_file():
        return d / "tekken.json"
    files = sorted(p for p in d.iterdir() if p.is_file() and is_tokenizer_file(p)) if d.is_dir() else []
    tekken = [p for p in files if p.name.endswith(".json")]
    if tekken:
        return tekken[0]

    def version(p: Path) -> int:
        m = re.search(r"\.model\.v(\d+)", p.name)
        return int(m.group(1)) if m else 1

    versioned = sorted(
        (p for p in files if ".model.v" in p.name),
        key=lambda p: (not p.name.startswith("tokenizer."), -version(p), p.name),
    )
    if versioned:
        return versioned[0]
    return d / "tokenizer.model" if (d / "tokenizer.model").is_file() else None


def checkpoint_tokenizer_name(path: str | Path) -> str:
    """The name a tokenizer file takes inside a checkpoint directory, as Mistral's repositories
    name it: `tekken.json`, or `tokenizer.model.vN` for a SentencePiece model (mistral-common's
    `mistral_instruct_tokenizer_240323.model.v3` becomes `tokenizer.model.v3`)."""
    name = Path(path).name
    if m := re.fullmatch(r".*\.model(\.v\d+(m\d+)?)?", name):
        return "tokenizer.model" + (m.group(1) or "")
    return "tekken.json"


def load_tokenizer(path: str | Path | None = None, *, vocab_size: int | None = None) -> Tokenizer:
    """Load a Mistral tokenizer (Tekken or SentencePiece).

    `path` may be a tokenizer file (`*tekken*.json` or `*.model[.vN]`) or a checkpoint directory:
    its own tokenizer file is used when present (see `find_tokenizer_file`). A directory without
    one falls back, with a warning, to the file mistral-common bundles for the model's vocabulary
    (`vocab_size`: 131072 Tekken v3, 32768 SentencePiece v3, 32000 SentencePiece v1; default Tekken).
    `None` loads the bundled `tekken_240718.json` (or the bundled file for `vocab_size`). Loading
    takes about a second, so tokenizers are cached per resolved file (they are immutable); every
    caller gets the same object.
    """
    _require_mistral_common()
    if path is None:
        file = _bundled_for(vocab_size)
    else:
        p = Path(path).expanduser()
        if p.is_dir():
            found = find_tokenizer_file(p)
            if found is not None:
                file = found
            else:
                file = _bundled_for(vocab_size)
                warnings.warn(
                    f"{p} has no tokenizer file (no tekken.json or tokenizer.model.v*); using the "
                    f"bundled {file.name}",
                    stacklevel=2,
                )
        elif p.is_file():
            file = p
        else:
            raise FileNotFoundError(f"no tokenizer file or directory at {p}")
    file = file.resolve()
    tokenizer = _load_file(str(file), file.stat().st_mtime_ns)
    if tokenizer.version == "v1" and tokenizer.vocab_size != 32000:
        # mistral-common reads the version from the file name; a bare `tokenizer.model` is v1.
        warnings.warn(
            f"{file.name} is read as SentencePiece v1 (no .vN suffix) but has {tokenizer.vocab_size} ids "
            "(v1 has 32000): if it is a later version, name it tokenizer.model.v3 (or its version)",
            stacklevel=2,
        )
    return tokenizer


def _bundled_for(vocab_size: int | None) -> Path:
    from .family import bundled_tokenizer_for_vocab

    if vocab_size is None:
        return bundled_tekken_path()
    name = bundled_tokenizer_for_vocab(vocab_size)
    if name is None:
        raise ValueError(
            f"no bundled tokenizer has {vocab_size} ids (Tekken 131072, SentencePiece v3 32768, v1 "
            "32000): put the model's tokenizer file in its checkpoint directory"
        )
    return bundled_path(name)


@lru_cache(maxsize=8)
def _load_file(file: str, _mtime_ns: int) -> Tokenizer:
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    if not is_tokenizer_file(Path(file)):
        # mistral-common recognises the kind of tokenizer by the file name.
        raise ValueError(
            f"{file}: expected a Tekken file named like 'tekken*.json' or a SentencePiece model "
            "named like 'tokenizer.model.v3'"
        )
    return Tokenizer(MistralTokenizer.from_file(file), path=Path(file))


class Tokenizer:
    """A Mistral tokenizer (Tekken or SentencePiece), wrapping a mistral-common `MistralTokenizer`.

    Attributes: `kind` ("tekken" or "sentencepiece"), `version` (e.g. "v3"), `vocab_size`
    (131072 for Nemo's Tekken, 32768 or 32000 for SentencePiece), `bos_id` (1), `eos_id` (2),
    `n_special` (how many control tokens), `tool_calls_id` (the `[TOOL_CALLS]` id, or None where
    the version has no tool calls), `mistral` (the `MistralTokenizer`), `inner` (its Tekkenizer or
    SentencePieceTokenizer; `tekken` is the same for Tekken, else None), `path` (the file loaded).
    """

    def __init__(self, mistral: Any, path: Path | None = None):
        inner = mistral.instruct_tokenizer.tokenizer
        self.mistral = mistral
        self.inner = inner
        self.path = path
        self.kind = "tekken" if hasattr(inner, "id_to_byte_piece") else "sentencepiece"
        self.tekken = inner if self.kind == "tekken" else None
        self.version: str = inner.version.value
        self.vocab_size: int = inner.n_words
        self.bos_id: int = inner.bos_id
        self.eos_id: int = inner.eos_id
        self.pad_id: int = inner.pad_id
        self.unk_id: int = inner.unk_id
        # Raw bytes of every id: control tokens as their text ("[INST]"), others as the bytes they
        # stand for. Built once (~0.1 s); decoding is a byte join plus one UTF-8 decode.
        if self.kind == "tekken":
            self._special = [i < inner.num_special_tokens for i in range(self.vocab_size)]
            self._bytes: list[bytes] = [
                inner.id_to_byte_piece(i, special_token_policy=_keep()) for i in range(self.vocab_size)
            ]
            self._errors = "replace"
            self._dummy_prefix: list[bool] = []
        else:
            self._special, self._bytes, self._dummy_prefix = _sentencepiece_table(inner._model)
            # SentencePiece writes one U+FFFD per byte of an invalid sequence (Python: one per
            # maximal invalid subsequence); the decoders here follow whichever reference applies.
            self._errors = _PER_BYTE_REPLACE
        self.n_special: int = sum(self._special)
        self._special_ids = {self._bytes[i].decode(): i for i in range(self.vocab_size) if self._special[i]}
        calls = self._special_ids.get("[TOOL_CALLS]")
        self.tool_calls_id: int | None = calls if self.version != "v1" else None

    def __repr__(self) -> str:
        return f"Tokenizer({self.describe()}, path={self.path})"

    def describe(self) -> str:
        """E.g. "sentencepiece v3, 32768 ids" (what `/tokenize` and `inspect` report)."""
        return f"{self.kind} {self.version}, {self.vocab_size} ids"

    # ----------------------------------------------------------------------------------------------
    # ids <-> text
    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Plain text to ids. Control-token spellings in `text` (e.g. "[INST]") are encoded as
        ordinary text, never as control tokens, so user text cannot inject prompt structure.
        SentencePiece adds its dummy prefix: "Hi" encodes as "▁Hi"."""
        return self.inner.encode(text, bos=bos, eos=eos)

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Ids to text: `decode_bytes` decoded as UTF-8, invalid or incomplete sequences replaced
        by U+FFFD as the format's own decoder does (Tekken: one per maximal invalid subsequence,
        as `bytes.decode(errors="replace")`; SentencePiece: one per invalid byte). Control tokens
        are dropped, or written as their text ("[TOOL_CALLS]") when `skip_special` is False.
        SentencePiece decodes the text between control tokens separately, so a control token ends
        an incomplete UTF-8 sequence even when it is skipped. Equal to feeding the ids to an
        `IncrementalDecoder` and flushing."""
        if self.kind == "tekken":
            return self.decode_bytes(ids, skip_special).decode("utf-8", errors=self._errors)
        dec = IncrementalDecoder(self, skip_special)
        return "".join([dec.push(t) for t in ids]) + dec.flush()

    def decode_bytes(self, ids: Sequence[int], skip_special: bool = True) -> bytes:
        """Raw bytes of a sequence of ids (control tokens dropped or spelled out). SentencePiece:
        the dummy-prefix space of the first non-control piece is dropped, as SentencePiece does.
        (Decoding these bytes is `decode` except where SentencePiece splits at control tokens.)"""
        out = []
        first = True
        for t in ids:
            t = self._check(t)
            if self._special[t]:
                if not skip_special:
                    out.append(self._bytes[t])
                continue
            out.append(self.piece_bytes(t, first))
            first = False
        return b"".join(out)

    def piece_bytes(self, token_id: int, first: bool) -> bytes:
        """Bytes a non-control token adds to decoded text; `first`: it is the first non-control
        token of the text (SentencePiece then drops the leading space its encoder added)."""
        if first and self._dummy_prefix and self._dummy_prefix[token_id]:
            return self._bytes[token_id][1:]
        return self._bytes[token_id]

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token (never U+FFFD-replaced). Tekken's byte tokens 1000..1255 and
        SentencePiece's `<0xNN>` pieces are single bytes; "▁" is a space; control tokens give their
        text form, e.g. b"[INST]", b"</s>"."""
        return self._bytes[self._check(token_id)]

    def token_str(self, token_id: int) -> str:
        """Display form of one token (logprobs' `token`): its bytes decoded with U+FFFD for
        bytes that are not valid UTF-8 on their own (for Tekken the same as mistral-common's
        `id_to_piece`); control tokens as their text. Lossy: use `token_bytes` for the truth."""
        return self._bytes[self._check(token_id)].decode("utf-8", errors="replace")

    def is_special(self, token_id: int) -> bool:
        """True for control tokens (Tekken: ids below 1000; SentencePiece: its control pieces)."""
        t = int(token_id)
        return 0 <= t < self.vocab_size and self._special[t]

    def llguidance_view(self) -> Any:
        """What `llguidance.TokenizerWrapper` needs of a SentencePiece tokenizer (structured.py).

        Control tokens (and <unk>) are special, named `<NAME>` as mistral-common names Tekken's
        (`[TOOL_CALLS]` -> `<TOOL_CALLS>`), so grammars refer to them by name; every other id is
        its bytes. Strings are tokenized without the dummy prefix: after a "\\n" that is a lone
        byte piece and never merges, and whose tokens are then dropped.
        """
        if self.kind != "sentencepiece":
            raise ValueError("llguidance_view is for SentencePiece tokenizers (Tekken: mistral-common's)")
        return _LLGView(self)

    def special_id(self, text: str) -> int:
        """Id of a control token from its text form, e.g. "[TOOL_CALLS]" -> 9 (Tekken) or 5 (v3)."""
        try:
            return self._special_ids[text]
        except KeyError:
            raise ValueError(f"unknown control token {text!r}") from None

    def _check(self, token_id: int) -> int:
        t = int(token_id)
        if not 0 <= t < self.vocab_size:
            raise ValueError(f"token id {t} out of range [0, {self.vocab_size})")
        return t

    # ----------------------------------------------------------------------------------------------
    # chat
    def encode_chat(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """Encode an OpenAI-style conversation into Nemo's prompt, via mistral-common.

        messages: dicts with `role` in system | developer (treated as system) | user | assistant |
        tool. `content` is a string or a list of `{"type": "text", "text": ...}` parts (Nemo reads
        text only: other part types are rejected). Assistant messages may carry `tool_calls`
        (`[{"id", "type": "function", "function": {"name", "arguments"}}]`, arguments a JSON string
        or an object); tool messages need `tool_call_id`.

        tools: OpenAI-style `[{"type": "function", "function": {"name", "description",
        "parameters"}}]`. They are shown to the model (before the last `[INST]`); tool_choice is not
        part of the prompt (enforcing it is the grammar's job, see nemo_ref.structured).

        Leniency, where Nemo's format is stricter than the OpenAI API:
        - tool-call ids not of Nemo's 9-alphanumeric form (OpenAI's `call_...`) are mapped with
          `nemo_tool_call_id`, identically in the call and in its result;
        - an assistant message with both text and tool calls keeps only the calls (Tekken v3 has
          no way to write both: the text is dropped);
        - a final assistant message (or any with `"prefix": true`, which must be last) is
          continued: it is encoded without `</s>` and the model goes on from its last token.

        Returns the token ids (starting with `<s>`). Raises `ChatFormatError` (a ValueError, with
        `.param` "messages" or "tools") for anything malformed.
        """
        from mistral_common.exceptions import MistralCommonException
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        if tools and self.tool_calls_id is None:
            raise ChatFormatError(
                f"tools are not supported by this model's tokenizer ({self.describe()}): its prompt "
                "format has no tool calls",
                "tools",
            )
        mc_messages = convert_messages(messages)
        mc_tools = convert_tools(tools) if tools else None
        try:
            request = ChatCompletionRequest(messages=mc_messages, tools=mc_tools)
            return list(self.mistral.encode_chat_completion(request).tokens)
        except (MistralCommonException, ValueError, AssertionError) as e:
            raise ChatFormatError(f"invalid messages: {short_error(e)}", "messages") from e

    def encode_chat_text(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """The chat prompt with control tokens spelled out (for display and debugging)."""
        return self.decode(self.encode_chat(messages, tools), skip_special=False)


class _LLGView:
    def __init__(self, tok: Tokenizer):
        self.eos_token_id, self.bos_token_id = tok.eos_id, tok.bos_id
        special = [i for i in range(tok.vocab_size) if tok._special[i] or i == tok.unk_id]
        names = {i: re.sub(r"^\[(.*)\]$", r"<\1>", tok._bytes[i].decode()) for i in special}
        names[tok.unk_id] = "<unk>"
        self.special_token_ids = special
        self.tokens = [names[i].encode() if i in names else tok._bytes[i] for i in range(tok.vocab_size)]
        self._encode = tok.inner.encode
        self._prefix = len(self._encode("\n", bos=False, eos=False))

    def __call__(self, s: str) -> list[int]:
        return self._encode("\n" + s, bos=False, eos=False)[self._prefix :]


def _keep():
    from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

    return SpecialTokenPolicy.KEEP


_PER_BYTE_REPLACE = "nemo_ref.replace_per_byte"
codecs.register_error(_PER_BYTE_REPLACE, lambda e: ("\ufffd" * (e.end - e.start), e.end))


def _sentencepiece_table(sp: Any) -> tuple[list[bool], list[bytes], list[bool]]:
    """(is control, bytes, starts with the dummy-prefix space) for every SentencePiece id.

    Control pieces are their text; `<0xNN>` byte-fallback pieces the byte NN; the unknown piece
    SentencePiece's surface " \u2047 "; every other piece its text with "▁" read as a space. Only
    ordinary pieces lose a leading space at the start of a text (byte pieces and <unk> never do).
    """
    special, table, prefix = [], [], []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        control, ordinary = sp.IsControl(i), False
        if control:
            raw = piece.encode()
        elif sp.IsByte(i):
            raw = bytes([int(piece[3:5], 16)])
        elif sp.IsUnknown(i):
            raw = " \u2047 ".encode()
        else:
            raw, ordinary = piece.replace("\u2581", " ").encode(), True
        special.append(control)
        table.append(raw)
        prefix.append(ordinary and raw.startswith(b" "))
    return special, table, prefix


class IncrementalDecoder:
    """Byte-exact streaming detokenizer.

    `push(id)` returns the text completed by that token: bytes of an incomplete UTF-8 sequence
    are held back until a later token completes them. `flush()` ends the stream, emitting what is
    held (as U+FFFD where it is not valid UTF-8). For any ids, the concatenation of all pushes and
    the flush equals `tokenizer.decode(ids, skip_special)` (Python's incremental UTF-8 decoder
    guarantees this, with the tokenizer's own replacement rule), SentencePiece's dropped
    dummy-prefix space included. `text` is all text emitted so far; `pending` the bytes held back.
    The pieces are kept in a list and joined when `text` is read: a push copies only its own
    characters, however long the text already is.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._dec = codecs.getincrementaldecoder("utf-8")(errors=tokenizer._errors)
        self._first = True  # no non-control token seen yet
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def push(self, token_id: int) -> str:
        t = int(token_id)
        tok = self.tokenizer
        if tok.is_special(t):
            # SentencePiece decodes the text between control tokens separately: a control token ends
            # an incomplete byte sequence, even a skipped one. Tekken joins the bytes across it.
            new = self._dec.decode(b"", final=True) if tok.kind == "sentencepiece" else ""
            if not self.skip_special:
                new += self._dec.decode(tok.token_bytes(t), final=False)
        else:
            new = self._dec.decode(tok.piece_bytes(tok._check(t), self._first), final=False)
            self._first = False
        if new:
            self._parts.append(new)
        return new

    def flush(self) -> str:
        new = self._dec.decode(b"", final=True)
        if new:
            self._parts.append(new)
        return new

    @property
    def pending(self) -> bytes:
        return self._dec.getstate()[0]
