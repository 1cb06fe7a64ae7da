"""Tekken tokenizer: ids and chat prompts equal mistral-common's; byte-exact streaming decode.

Oracles: an independently loaded mistral-common MistralTokenizer (Mistral's own reference for
Nemo's prompt format), the facts in docs/architecture.md "Nemo's tokenizer" (ids, 1,435 tokens that are not UTF-8
alone), Python's `bytes.decode`, and the literal prompt layout of docs/serving.md.
"""

from __future__ import annotations

import re
import shutil
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("mistral_common")

from nemo_ref.tokenizer import (
    ChatFormatError,
    IncrementalDecoder,
    bundled_tekken_path,
    load_tokenizer,
    nemo_tool_call_id,
)

HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

TEXTS = [
    "Hello, world!",
    "",
    " leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\n",
    "Ünïcödé façade, naïve café; Ελληνικά; русский текст",
    "日本語のテキストと中文文本，한국어 텍스트",
    "emoji 👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and 🤖",
    "def f(x):\n    return {'a': [1, 2.5e-3, None]}  # code",
    "literal control spellings [INST] [TOOL_CALLS] </s> <s> stay text",
    "a" * 300,
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}


def _mc():
    """mistral-common's own request classes (the oracle side of the chat tests)."""
    from mistral_common.protocol.instruct.chunk import TextChunk
    from mistral_common.protocol.instruct.messages import (
        AssistantMessage,
        SystemMessage,
        ToolMessage,
        UserMessage,
    )
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.tool_calls import Function, FunctionCall, Tool, ToolCall

    return dict(
        TextChunk=TextChunk,
        AssistantMessage=AssistantMessage,
        SystemMessage=SystemMessage,
        ToolMessage=ToolMessage,
        UserMessage=UserMessage,
        ChatCompletionRequest=ChatCompletionRequest,
        Function=Function,
        FunctionCall=FunctionCall,
        Tool=Tool,
        ToolCall=ToolCall,
    )


def _oracle_ids(oracle, messages, tools=None):
    mc = _mc()
    req = mc["ChatCompletionRequest"](messages=messages, tools=tools)
    return oracle.encode_chat_completion(req).tokens


def _mc_weather_tool():
    mc = _mc()
    f = WEATHER_TOOL["function"]
    return mc["Tool"](
        function=mc["Function"](name=f["name"], description=f["description"], parameters=f["parameters"])
    )


# --------------------------------------------------------------------------------------------------
# constants and plain text


def test_published_constants(tok):
    assert tok.vocab_size == 131072
    assert (tok.bos_id, tok.eos_id, tok.n_special) == (1, 2, 1000)
    assert tok.version == "v3"
    names = {0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 5: "[AVAILABLE_TOOLS]"}
    names |= {6: "[/AVAILABLE_TOOLS]", 7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]"}
    names |= {9: "[TOOL_CALLS]", 11: "<pad>"}
    for i, name in names.items():
        assert tok.token_bytes(i) == name.encode()
        assert tok.token_str(i) == name
        assert tok.is_special(i)
        assert tok.special_id(name) == i
    assert not tok.is_special(1000) and tok.is_special(999)
    assert type(tok.mistral).__name__ == "MistralTokenizer"


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_mistral_common(tok, oracle, text):
    tekken = oracle.instruct_tokenizer.tokenizer
    for bos, eos in [(True, False), (False, False), (True, True)]:
        assert tok.encode(text, bos=bos, eos=eos) == tekken.encode(text, bos=bos, eos=eos)
    ids = tok.encode(text, bos=False)
    assert tok.decode(ids) == text == tekken.decode(ids)
    assert all(t >= tok.n_special for t in ids)  # control spellings in text are never control ids


@HYP
@given(text=st.text(max_size=60))
def test_encode_decode_random_text(tok, oracle, text):
    tekken = oracle.instruct_tokenizer.tokenizer
    ids = tok.encode(text, bos=True)
    assert ids == tekken.encode(text, bos=True, eos=False)
    assert tok.decode(ids) == text


def test_decode_special_tokens(tok, oracle):
    ids = [1, 3, *tok.encode("hi", bos=False), 4, *tok.encode("yo", bos=False), 2]
    assert tok.decode(ids) == "hiyo"
    assert tok.decode(ids, skip_special=False) == "<s>[INST]hi[/INST]yo</s>"
    assert tok.decode(ids, skip_special=False) == oracle.instruct_tokenizer.tokenizer._to_string(ids)
    with pytest.raises(ValueError):
        tok.decode([131072])
    with pytest.raises(ValueError):
        tok.token_bytes(-1)


def test_byte_tokens_are_single_bytes(tok):
    for b in range(256):
        assert tok.token_bytes(1000 + b) == bytes([b])
    # token_str is lossy only where the bytes are not UTF-8 alone
    assert tok.token_str(1000 + ord("A")) == "A"
    assert tok.token_str(1000 + 0xF0) == "\ufffd"


def test_token_bytes_match_tekken_table(tok, oracle):
    tekken = oracle.instruct_tokenizer.tokenizer
    for i in list(range(1000, 1400)) + list(range(1400, 131072, 97)):
        assert tok.token_bytes(i) == tekken.id_to_byte_piece(i)
        assert tok.token_str(i) == tekken.id_to_piece(i)


# --------------------------------------------------------------------------------------------------
# incremental decoding


@pytest.fixture(scope="module")
def not_utf8_alone(tok):
    """Ids whose bytes are not valid UTF-8 on their own."""
    out = []
    for i in range(tok.n_special, tok.vocab_size):
        try:
            tok.token_bytes(i).decode("utf-8")
        except UnicodeDecodeError:
            out.append(i)
    return out


def test_count_of_tokens_not_utf8_alone(not_utf8_alone):
    assert len(not_utf8_alone) == 1435  # docs/architecture.md


def _stream(tok, ids, skip_special=True):
    dec = IncrementalDecoder(tok, skip_special=skip_special)
    pieces = [dec.push(t) for t in ids]
    tail = dec.flush()
    assert dec.text == "".join(pieces) + tail
    return pieces, tail


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_decode_is_byte_exact(tok, text):
    ids = tok.encode(text, bos=True, eos=True)
    pieces, tail = _stream(tok, ids)
    assert "".join(pieces) == text and tail == ""
    assert all("\ufffd" not in p for p in pieces)  # valid text never shows a replacement char


def test_emoji_split_across_tokens_is_held_back(tok, not_utf8_alone):
    bad = set(not_utf8_alone)
    for text in ["👍🏽👨‍👩‍👧‍👦🇫🇷🤖🦜🫠", "𝄞 𓀀 𠜎 𪚥 🀄", "ꙮ ᚠᛇᚻ ⵣ 〄 ゟ 🫶🏾"]:
        ids = tok.encode(text, bos=False)
        assert any(t in bad for t in ids), "the text should need tokens that are not UTF-8 alone"
        pieces, tail = _stream(tok, ids)
        shown = ""
        for piece in pieces:
            shown += piece
            assert text.startswith(shown)  # never a replacement char, never a broken character
        assert shown == text and tail == ""
        # a token that ends mid-character emits nothing yet
        assert any(p == "" for t, p in zip(ids, pieces, strict=True) if t in bad)


@HYP
@given(data=st.data())
def test_incremental_equals_bytes_decode_on_arbitrary_ids(tok, not_utf8_alone, data):
    pool = st.one_of(
        st.sampled_from(not_utf8_alone),
        st.integers(1000, 1255),
        st.integers(0, 20),
        st.integers(0, tok.vocab_size - 1),
    )
    ids = data.draw(st.lists(pool, max_size=30))
    for skip in (True, False):
        pieces, tail = _stream(tok, ids, skip_special=skip)
        raw = b"".join(tok.token_bytes(t) for t in ids if not (skip and t < tok.n_special))  # the truth
        assert "".join(pieces) + tail == raw.decode("utf-8", errors="replace")
        assert tok.decode(ids, skip_special=skip) == raw.decode("utf-8", errors="replace")


def test_incremental_flush_of_truncated_character(tok):
    ids = [1000 + 0xF0, 1000 + 0x9F]  # first two bytes of a 4-byte emoji
    dec = IncrementalDecoder(tok)
    assert dec.push(ids[0]) == "" and dec.push(ids[1]) == ""
    assert dec.pending == b"\xf0\x9f"
    assert dec.flush() == b"\xf0\x9f".decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------------
# chat prompts


def test_chat_single_user_literal_layout(tok, oracle):
    msgs = [{"role": "user", "content": "Hello"}]
    ids = tok.encode_chat(msgs)
    assert tok.decode(ids, skip_special=False) == "<s>[INST]Hello[/INST]"
    mc = _mc()
    assert ids == _oracle_ids(oracle, [mc["UserMessage"](content="Hello")])


def test_chat_system_multiturn_matches_mistral_common(tok, oracle):
    mc = _mc()
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Tell me "}, {"type": "text", "text": "a joke"}],
        },
    ]
    expected = _oracle_ids(
        oracle,
        [
            mc["SystemMessage"](content="You are terse."),
            mc["UserMessage"](content="Hi"),
            mc["AssistantMessage"](content="Hello."),
            mc["UserMessage"](content=[mc["TextChunk"](text="Tell me "), mc["TextChunk"](text="a joke")]),
        ],
    )
    ids = tok.encode_chat(msgs)
    assert ids == expected
    text = tok.decode(ids, skip_special=False)
    # docs/serving.md: the system prompt is prepended to the last user message
    assert text.startswith("<s>[INST]Hi[/INST]Hello.</s>[INST]You are terse.\n\n")
    assert text.endswith("[/INST]")


def test_chat_tools_calls_results_match_mistral_common(tok, oracle):
    mc = _mc()
    msgs = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "abcDEF123",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "XYZ987abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Rome"}},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "abcDEF123", "content": "22C"},
        {"role": "tool", "tool_call_id": "XYZ987abc", "content": [{"type": "text", "text": "25C"}]},
        {"role": "user", "content": "Thanks"},
    ]
    expected = _oracle_ids(
        oracle,
        [
            mc["UserMessage"](content="Weather in Paris and Rome?"),
            mc["AssistantMessage"](
                tool_calls=[
                    mc["ToolCall"](
                        id="abcDEF123",
                        function=mc["FunctionCall"](name="get_weather", arguments='{"city": "Paris"}'),
                    ),
                    mc["ToolCall"](
                        id="XYZ987abc",
                        function=mc["FunctionCall"](name="get_weather", arguments='{"city": "Rome"}'),
                    ),
                ]
            ),
            mc["ToolMessage"](tool_call_id="abcDEF123", content="22C"),
            mc["ToolMessage"](tool_call_id="XYZ987abc", content=[mc["TextChunk"](text="25C")]),
            mc["UserMessage"](content="Thanks"),
        ],
        tools=[_mc_weather_tool()],
    )
    ids = tok.encode_chat(msgs, tools=[WEATHER_TOOL])
    assert ids == expected
    text = tok.decode(ids, skip_special=False)
    assert '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcDEF123"}' in text
    assert '[TOOL_RESULTS]{"content": "22C", "call_id": "abcDEF123"}[/TOOL_RESULTS]' in text
    # the tools sit right before the last [INST]
    assert re.search(r"\[/AVAILABLE_TOOLS\]\[INST\]Thanks\[/INST\]$", text)


def _call_msgs(call_id, result_id=None):
    return [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "",  # OpenAI clients send "" or None next to tool_calls
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": result_id or call_id, "content": "-3C"},
    ]


def test_client_tool_call_ids_are_mapped(tok, oracle):
    ids = tok.encode_chat(_call_msgs("call_abc"), tools=[WEATHER_TOOL])
    text = tok.decode(ids, skip_special=False)
    assert "call_abc" not in text
    call_ids = re.findall(r'"id": "([^"]*)"', text)
    result_ids = re.findall(r'"call_id": "([^"]*)"', text)
    assert len(call_ids) == 1 and call_ids == result_ids
    assert re.fullmatch(r"[A-Za-z0-9]{9}", call_ids[0])
    assert call_ids[0] == nemo_tool_call_id("call_abc")
    # the same prompt as if the client had used that 9-character id itself
    assert ids == tok.encode_chat(_call_msgs(call_ids[0]), tools=[WEATHER_TOOL])
    # deterministic, and different client ids stay different
    assert ids == tok.encode_chat(_call_msgs("call_abc"), tools=[WEATHER_TOOL])
    other = tok.decode(tok.encode_chat(_call_msgs("call_abd"), tools=[WEATHER_TOOL]), False)
    assert re.findall(r'"id": "([^"]*)"', other) != call_ids
    # a result answering an unknown id still encodes (the id is mapped the same way)
    assert nemo_tool_call_id("abcDEF123") == "abcDEF123"


def test_final_assistant_message_is_continued(tok, oracle):
    mc = _mc()
    msgs = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi the"}]
    ids = tok.encode_chat(msgs)
    assert ids == _oracle_ids(
        oracle,
        [mc["UserMessage"](content="Say hi"), mc["AssistantMessage"](content="Hi the", prefix=True)],
    )
    assert tok.decode(ids, skip_special=False) == "<s>[INST]Say hi[/INST]Hi the"


@pytest.mark.parametrize(
    "messages, tools, param",
    [
        ([], None, "messages"),
        ("hello", None, "messages"),
        ([{"role": "bot", "content": "x"}], None, "messages"),
        ([{"role": "user"}], None, "messages"),
        ([{"role": "user", "content": 3}], None, "messages"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], None, "messages"),
        ([{"role": "user", "content": "a"}, {"role": "tool", "content": "r"}], None, "messages"),
        (
            [{"role": "user", "content": "a"}, {"role": "tool", "tool_call_id": "abcDEF123", "content": "r"}],
            None,
            "messages",
        ),
        ([{"role": "user", "content": "a"}, {"role": "assistant"}], None, "messages"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]},
            ],
            None,
            "messages",
        ),
        (
            [{"role": "user", "content": "a"}],
            [{"type": "function", "function": {"name": "bad name"}}],
            "tools",
        ),
        ([{"role": "user", "content": "a"}], [{"type": "retrieval"}], "tools"),
        ([{"role": "user", "content": "a"}], "nope", "tools"),
    ],
)
def test_chat_errors_name_the_field(tok, messages, tools, param):
    with pytest.raises(ChatFormatError) as err:
        tok.encode_chat(messages, tools=tools)
    assert err.value.param == param
    assert isinstance(err.value, ValueError)


# --------------------------------------------------------------------------------------------------
# loading


def test_load_bundled_and_cached(tok):
    assert tok.path == bundled_tekken_path().resolve()
    assert load_tokenizer() is tok
    assert load_tokenizer(bundled_tekken_path()) is tok


def test_load_from_checkpoint_directory(tmp_path, tok):
    shutil.copy(bundled_tekken_path(), tmp_path / "tekken.json")
    t2 = load_tokenizer(tmp_path)
    assert t2.path == (tmp_path / "tekken.json").resolve()
    assert t2 is not tok
    text = "Checkpoint-local tokenizer ✓ 日本"
    assert t2.encode(text) == tok.encode(text)
    msgs = [{"role": "user", "content": text}]
    assert t2.encode_chat(msgs) == tok.encode_chat(msgs)
    assert load_tokenizer(tmp_path / "tekken.json") is t2


def test_load_directory_without_tekken_falls_back(tmp_path, tok):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert load_tokenizer(tmp_path) is tok
    assert any("using the bundled tekken_240718.json" in str(x.message) for x in w)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")
