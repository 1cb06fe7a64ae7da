"""SentencePiece tokenizers of the Mistral family (v1, v2, v3, v7), through nemo_ref.tokenizer.

Oracles nobody here wrote: `sentencepiece.SentencePieceProcessor` on the same model file (plain
encoding and decoding, byte-fallback pieces included) and an independently loaded mistral-common
`MistralTokenizer` (chat and tool prompts, `encode_chat_completion`). Test data: the tokenizer files
the mistral-common wheel ships in mistral_common/data; nothing is downloaded.
"""

from __future__ import annotations

import shutil
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("mistral_common")
spm = pytest.importorskip("sentencepiece")

from nemo_ref.tokenizer import (  # noqa: E402
    ChatFormatError,
    IncrementalDecoder,
    bundled_path,
    find_tokenizer_file,
    load_tokenizer,
)

FILES = {
    "v1": "tokenizer.model.v1",
    "v2": "mistral_instruct_tokenizer_240216.model.v2",
    "v3": "mistral_instruct_tokenizer_240323.model.v3",
    "v7": "mistral_instruct_tokenizer_241114.model.v7",
}
VOCAB = {"v1": 32000, "v2": 32768, "v3": 32768, "v7": 32768}
HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def toks():
    return {v: load_tokenizer(bundled_path(f)) for v, f in FILES.items()}


@pytest.fixture(scope="module")
def sps():
    return {v: spm.SentencePieceProcessor(model_file=str(bundled_path(f))) for v, f in FILES.items()}


@pytest.fixture(scope="module")
def mcs():
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    return {v: MistralTokenizer.from_file(str(bundled_path(f))) for v, f in FILES.items()}


def test_published_constants(toks, sps):
    for v, tok in toks.items():
        sp = sps[v]
        assert (tok.kind, tok.version, tok.vocab_size) == ("sentencepiece", v, VOCAB[v])
        assert (tok.bos_id, tok.eos_id) == (sp.bos_id(), sp.eos_id()) == (1, 2)
        assert [t for t in range(tok.vocab_size) if tok.is_special(t)] == [
            t for t in range(sp.get_piece_size()) if sp.IsControl(t)
        ]
        assert tok.describe() == f"sentencepiece {v}, {VOCAB[v]} ids"
        # The 256 byte-fallback pieces are single bytes, in order.
        byte_ids = [t for t in range(sp.get_piece_size()) if sp.IsByte(t)]
        assert [tok.token_bytes(t) for t in byte_ids] == [bytes([b]) for b in range(256)]
    # [TOOL_CALLS] is id 5 from v2 on; v1 has no tool calls at all.
    assert toks["v1"].tool_calls_id is None
    for v in ("v2", "v3", "v7"):
        assert toks[v].tool_calls_id == sps[v].piece_to_id("[TOOL_CALLS]") == 5
        assert toks[v].special_id("[INST]") == sps[v].piece_to_id("[INST]")


@pytest.mark.parametrize("version", list(FILES))
@HYP
@given(text=TEXT)
def test_encode_and_decode_equal_sentencepiece(toks, sps, version, text):
    tok, sp = toks[version], sps[version]
    ids = tok.encode(text, bos=True, eos=True)
    assert ids == [1, *sp.encode(text), 2]
    assert tok.decode(ids) == sp.decode(ids)
    assert tok.decode(ids[1:-1]) == sp.decode(ids[1:-1])


@pytest.mark.parametrize("version", ["v1", "v3"])
@HYP
@given(data=st.data())
def test_decode_arbitrary_ids_byte_exact(toks, sps, version, data):
    """Arbitrary ids (byte pieces, <unk>, controls, ordinary pieces): `decode` equals SentencePiece's
    own, and streaming through IncrementalDecoder gives the same text, token by token."""
    tok, sp = toks[version], sps[version]
    byte_ids = [t for t in range(1100) if sp.IsByte(t)]
    ident = st.one_of(
        st.sampled_from(byte_ids), st.integers(0, tok.vocab_size - 1), st.sampled_from([0, 1, 2, 3])
    )
    ids = data.draw(st.lists(ident, max_size=24))
    expected = sp.decode(ids)
    assert tok.decode(ids) == expected
    dec = IncrementalDecoder(tok)
    streamed = "".join(dec.push(t) for t in ids) + dec.flush()
    assert streamed == expected == dec.text


def test_incremental_decoding_holds_back_byte_fallback_pieces(toks, sps):
    tok, sp = toks["v3"], sps["v3"]
    ids = tok.encode("ok 🤖!", bos=False)  # the emoji has no piece: four <0xNN> pieces
    pieces = [sp.id_to_piece(t) for t in ids]
    assert pieces[-5:] == ["<0xF0>", "<0x9F>", "<0xA4>", "<0x96>", "!"]
    dec = IncrementalDecoder(tok)
    outs = [dec.push(t) for t in ids]
    assert outs[-5:] == ["", "", "", "🤖", "!"]
    assert dec.pending == b"" and "".join(outs) == sp.decode(ids) == "ok 🤖!"
    # Cut inside the emoji: the flush gives one U+FFFD per byte, as SentencePiece does.
    cut = ids[:-3]
    dec = IncrementalDecoder(tok)
    assert "".join(dec.push(t) for t in cut) == "ok "
    assert dec.pending == b"\xf0\x9f"
    assert dec.flush() == "\ufffd\ufffd" == sp.decode(cut)[3:]


def test_a_control_token_ends_a_byte_sequence(toks, sps):
    """SentencePiece decodes the text between control tokens separately: "é" split by `</s>` is two
    U+FFFD, skipped or not (Tekken, whose decoder joins the bytes, would give "é")."""
    tok, sp = toks["v3"], sps["v3"]
    ids = [sp.piece_to_id("<0xC3>"), tok.eos_id, sp.piece_to_id("<0xA9>")]
    assert tok.decode(ids) == sp.decode(ids) == "\ufffd\ufffd"
    assert tok.decode(ids[:1] + ids[2:]) == "é"
    dec = IncrementalDecoder(tok, skip_special=False)
    assert "".join(dec.push(t) for t in ids) + dec.flush() == "\ufffd</s>\ufffd"


def test_dummy_prefix_space_is_dropped_once(toks, sps):
    tok, sp = toks["v3"], sps["v3"]
    inst, hi, there = sp.piece_to_id("[INST]"), sp.piece_to_id("▁Hi"), sp.piece_to_id("▁there")
    assert tok.token_bytes(hi) == b" Hi"  # the raw token keeps its space (logprobs' bytes)
    for ids in ([hi, there], [inst, hi, there], [sp.piece_to_id("▁"), hi], [sp.piece_to_id("<0x20>"), hi]):
        assert tok.decode(ids) == sp.decode(ids)
        dec = IncrementalDecoder(tok)
        assert "".join(dec.push(t) for t in ids) == sp.decode(ids)
    assert tok.decode([inst, hi]) == "Hi" and tok.decode([hi, there]) == "Hi there"
    assert tok.decode([inst, hi], skip_special=False) == "[INST]Hi"


def test_control_spellings_in_text_stay_text(toks):
    for tok in toks.values():
        ids = tok.encode("[INST] [TOOL_CALLS] </s> <s>", bos=False)
        assert not any(tok.is_special(t) for t in ids)


def _mc_request(with_tools: bool):
    from mistral_common.protocol.instruct.messages import (
        AssistantMessage,
        SystemMessage,
        ToolMessage,
        UserMessage,
    )
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.tool_calls import Function, FunctionCall, Tool, ToolCall

    messages = [SystemMessage(content="Be brief."), UserMessage(content="Weather in Paris? ✓")]
    tools = None
    if with_tools:
        call = ToolCall(
            id="abcDEF123", function=FunctionCall(name="get_weather", arguments='{"city": "Paris"}')
        )
        messages += [
            AssistantMessage(tool_calls=[call]),
            ToolMessage(content="sunny, 21 C", tool_call_id="abcDEF123"),
            AssistantMessage(content="Sunny and 21 C."),
            UserMessage(content="And tomorrow?"),
        ]
        fn = WEATHER["function"]
        tools = [
            Tool(
                function=Function(name=fn["name"], description=fn["description"], parameters=fn["parameters"])
            )
        ]
    else:
        messages += [AssistantMessage(content="Sunny."), UserMessage(content="Thanks 日本")]
    return ChatCompletionRequest(messages=messages, tools=tools)


def _openai_messages(with_tools: bool) -> list[dict]:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris? ✓"},
    ]
    if with_tools:
        call = {
            "id": "abcDEF123",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
        return [
            *messages,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "abcDEF123", "content": "sunny, 21 C"},
            {"role": "assistant", "content": "Sunny and 21 C."},
            {"role": "user", "content": "And tomorrow?"},
        ]
    return [*messages, {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "Thanks 日本"}]


@pytest.mark.parametrize("version", list(FILES))
def test_chat_encoding_equals_mistral_common(toks, mcs, version):
    tok, mc = toks[version], mcs[version]
    expected = mc.encode_chat_completion(_mc_request(with_tools=False)).tokens
    assert tok.encode_chat(_openai_messages(with_tools=False)) == expected


@pytest.mark.parametrize("version", ["v2", "v3", "v7"])
def test_tool_encoding_equals_mistral_common(toks, mcs, version):
    tok, mc = toks[version], mcs[version]
    expected = mc.encode_chat_completion(_mc_request(with_tools=True)).tokens
    got = tok.encode_chat(_openai_messages(with_tools=True), tools=[WEATHER])
    assert got == expected
    assert tok.special_id("[AVAILABLE_TOOLS]") in got


def test_v1_refuses_tools_naming_the_version(toks):
    with pytest.raises(ChatFormatError, match=r"sentencepiece v1, 32000 ids.*no tool calls") as e:
        toks["v1"].encode_chat([{"role": "user", "content": "hi"}], tools=[WEATHER])
    assert e.value.param == "tools"


def test_load_tokenizer_picks_the_checkpoint_file(tmp_path, toks):
    v3 = tmp_path / "v3"
    v3.mkdir()
    shutil.copy(bundled_path(FILES["v3"]), v3 / "tokenizer.model.v3")
    (v3 / "params.json").write_text("{}")
    assert find_tokenizer_file(v3) == v3 / "tokenizer.model.v3"
    t = load_tokenizer(v3)
    assert (t.kind, t.version, t.path) == ("sentencepiece", "v3", (v3 / "tokenizer.model.v3").resolve())
    assert t.encode("Hello") == toks["v3"].encode("Hello")
    # Mistral 7B v0.1 ships an unversioned tokenizer.model: SentencePiece v1.
    v1 = tmp_path / "v1"
    v1.mkdir()
    shutil.copy(bundled_path(FILES["v1"]), v1 / "tokenizer.model")
    assert load_tokenizer(v1).version == "v1"
    # A v3 model under the bare name is read as v1 (mistral-common goes by the name): a warning.
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    shutil.copy(bundled_path(FILES["v3"]), renamed / "tokenizer.model")
    with pytest.warns(UserWarning, match=r"read as SentencePiece v1 .* has 32768 ids"):
        assert load_tokenizer(renamed).version == "v1"
    # tekken.json wins when both are there (Nemo's repository layout).
    shutil.copy(bundled_path("tekken_240718.json"), v3 / "tekken.json")
    assert load_tokenizer(v3).kind == "tekken"
    # No tokenizer file: the bundled one for the model's vocabulary, with a warning.
    empty = tmp_path / "empty"
    empty.mkdir()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert load_tokenizer(empty, vocab_size=32768) is toks["v3"]
        assert load_tokenizer(empty, vocab_size=32000) is toks["v1"]
    assert any("using the bundled mistral_instruct_tokenizer_240323.model.v3" in str(x.message) for x in w)
    with pytest.raises(ValueError, match="no bundled tokenizer has 50000 ids"):
        load_tokenizer(None, vocab_size=50000)
    with pytest.raises(ValueError, match=r"expected a Tekken file .* or a SentencePiece model"):
        load_tokenizer(v3 / "params.json")
