"""`nemo_ref.compare` and `nemo-ref compare`: engines side by side on one position's logits.

The expected cells of the disagreement cases are derived by hand below from each engine's documented
order (docs/engines.md), not computed by the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nemo_ref.cli import main
from nemo_ref.compare import Comparison, compare, load_logits, next_token_logits, save_logits

# Temperature before or after top_p. z = [3, 2, 1], T = 0.5, top_p = 0.8, everything else unset.
#  - vLLM, HF, SGLang, nemo_ref: T first: z / T = [6, 4, 2] -> p = [.8668, .1173, .0159]; the mass
#    above token 1 is .8668 >= 0.8, so top_p keeps token 0 alone: [1, 0, 0].
#  - llama.cpp: top_p first, on the untempered p = [.6652, .2447, .0900]: the smallest prefix reaching
#    0.8 is {0, 1}; its default min_p 0.05 keeps both (z >= 3 + ln .05 = 0.004); T = 0.5 last:
#    softmax([6, 4]) = [1 / (1 + e^-2), e^-2 / (1 + e^-2)] = [.880797, .119203].
ORDER_Z = [3.0, 2.0, 1.0]
ORDER_REQUEST = {"temperature": 0.5, "top_p": 0.8}
LLAMA_P0 = 1 / (1 + math.exp(-2))

# Ties at the top_k cut. z = [2, 1, 1, 0], top_k = 2, T = 1, top_p = 1, min_p = 0.
#  - vLLM, HF keep every token tied with the k-th value: {0, 1, 2}: [e^2, e, e] / (e^2 + 2e).
#  - nemo_ref, llama.cpp, SGLang keep exactly k by rank (lower id first): {0, 1}: [e^2, e] / (e^2 + e).
TIES_Z = [2.0, 1.0, 1.0, 0.0]
TIES_REQUEST = {"top_k": 2, "temperature": 1.0, "top_p": 1.0, "min_p": 0.0}
E = math.e
TIES_KEEP = [E**2 / (E**2 + 2 * E), E / (E**2 + 2 * E), E / (E**2 + 2 * E), 0.0]
TIES_EXACT = [E**2 / (E**2 + E), E / (E**2 + E), 0.0, 0.0]

EXACT_PROBS = {
    "order": {
        "nemo_ref": [1.0, 0.0, 0.0],
        "vllm": [1.0, 0.0, 0.0],
        "hf": [1.0, 0.0, 0.0],
        "sglang": [1.0, 0.0, 0.0],
        "llama.cpp": [LLAMA_P0, 1 - LLAMA_P0, 0.0],
    },
    "ties": {
        "nemo_ref": TIES_EXACT,
        "llama.cpp": TIES_EXACT,
        "sglang": TIES_EXACT,
        "vllm": TIES_KEEP,
        "hf": TIES_KEEP,
    },
}


def _cells(data: dict) -> dict[int, dict]:
    return {row["id"]: row for row in data["tokens"]}


def test_temperature_order_disagreement_hand_derived():
    names = ["nemo_ref", "vllm", "hf", "sglang", "llama.cpp"]
    c = compare(ORDER_Z, ORDER_REQUEST, engines=names)
    assert isinstance(c, Comparison)
    data = c.to_json()
    assert [e["name"] for e in data["engines"]] == names and all(e["ok"] for e in data["engines"])
    rows = _cells(data)
    assert list(rows) == [0, 1, 2]  # by raw logit
    for name, want in EXACT_PROBS["order"].items():
        got = [rows[t]["engines"][name]["prob"] for t in range(3)]
        assert got == pytest.approx(want, abs=1e-6), name
    for name in ("nemo_ref", "vllm", "hf", "sglang"):
        assert "top_p" in rows[1]["engines"][name]["dropped_by"], name
        assert not rows[1]["engines"][name]["kept"]
    assert rows[1]["engines"]["llama.cpp"]["kept"] and rows[1]["engines"]["llama.cpp"]["dropped_by"] is None
    assert "top_p" in rows[2]["engines"]["llama.cpp"]["dropped_by"]
    # differences are flagged against the first engine (nemo_ref): llama.cpp on tokens 0 and 1 only
    assert data["baseline"] == "nemo_ref"
    flagged = {(t, n) for t, row in rows.items() for n, cell in row["engines"].items() if cell["differs"]}
    assert flagged == {(0, "llama.cpp"), (1, "llama.cpp")}
    assert [rows[t]["differs"] for t in range(3)] == [True, True, False]
    assert c.disagreements() == [0, 1]
    tv = {e["name"]: e["total_variation"] for e in data["engines"]}
    assert tv["vllm"] == pytest.approx(0.0, abs=1e-12)
    assert tv["llama.cpp"] == pytest.approx(1 - LLAMA_P0, abs=1e-6)  # 0.5 * (0.1192 + 0.1192)
    assert {e["name"]: e["kept"] for e in data["engines"]} == {n: 1 for n in names} | {"llama.cpp": 2}

    table = c.table()
    assert str(c) == table and "5 engines (5 answered)" in repr(c)
    line0 = next(line for line in table.splitlines() if line.split()[:2] == ["≠", "0"])
    line1 = next(line for line in table.splitlines() if line.split()[:2] == ["≠", "1"])
    assert [cell.strip() for cell in line0.split("|")[1:]] == ["1.0000"] * 4 + ["0.8808 *"]
    cells1 = [cell.strip() for cell in line1.split("|")[1:]]
    assert cells1[:4] == [f"✗ {c.results[i].dropper(1)}" for i in range(4)]
    assert cells1[4] == "0.1192 *"
    colored = c.table(color=True)
    assert colored.count("\x1b[1;31m") == 2 and "\x1b[1;31m0.8808 *" in colored  # the two differing cells
    assert colored.replace("\x1b[1;31m", "").replace("\x1b[0m", "") == table


def test_top_k_ties_hand_derived():
    names = ["nemo_ref", "llama.cpp", "sglang", "vllm", "hf"]
    c = compare(TIES_Z, TIES_REQUEST, engines=names)
    rows = _cells(c.to_json())
    for name, want in EXACT_PROBS["ties"].items():
        assert [rows[t]["engines"][name]["prob"] for t in range(4)] == pytest.approx(want, abs=1e-9), name
    for name in ("nemo_ref", "llama.cpp", "sglang"):
        assert "top_k" in rows[2]["engines"][name]["dropped_by"], name
    for name in ("vllm", "hf"):
        assert rows[2]["engines"][name]["kept"] and rows[2]["engines"][name]["differs"]
    assert c.disagreements() == [0, 1, 2]


def test_small_probabilities_are_compared_relatively():
    # 10,000 equal logits; token 0 was generated 3 times; frequency_penalty 0.5.
    #  - nemo_ref (OpenAI's formula over the output): z_0 = -1.5 -> p_0 = e^-1.5 / (e^-1.5 + 9999)
    #  - TGI (count / sequence length, 3 / 3): z_0 = -0.5     -> p_0 = e^-0.5 / (e^-0.5 + 9999)
    # 2.23e-5 against 6.07e-5: apart by far less than 1e-4 in absolute terms, yet 2.7x.
    c = compare(np.zeros(10_000), {"frequency_penalty": 0.5, "temperature": 1.0}, engines=["nemo_ref", "tgi"],
                output_tokens=[0, 0, 0])  # fmt: skip
    p_nemo, p_tgi = math.exp(-1.5) / (math.exp(-1.5) + 9999), math.exp(-0.5) / (math.exp(-0.5) + 9999)
    assert c.results[0].probs[0] == pytest.approx(p_nemo, rel=1e-9)
    assert c.results[1].probs[0] == pytest.approx(p_tgi, rel=1e-9)
    # every other token: 1 / (9999 + e^-z_0) under both, equal to 4e-5 relative: not a difference
    assert c.disagreements() == [0]
    row = _cells(c.to_json(top=1))[0]
    assert row["differs"] and row["engines"]["tgi"]["differs"] and not row["engines"]["nemo_ref"]["differs"]


def test_rejecting_engine_is_shown_with_its_error():
    # vLLM rejects temperature > 2 (vllm/sampling_params.py); nemo_ref accepts T up to its own bound.
    c = compare([1.0, 0.5, 0.0], {"temperature": 2.5}, engines=["hf", "vllm"])
    data = c.to_json()
    vllm = next(e for e in data["engines"] if e["name"] == "vllm")
    assert vllm["ok"] is False and vllm["error"]["param"] == "temperature"
    assert vllm["error"]["message"]
    assert all("vllm" not in row["engines"] for row in data["tokens"])
    assert "hf" in data["tokens"][0]["engines"]
    table = c.table()
    assert "rejects temperature:" in table and vllm["error"]["message"] in table


def test_what_an_engine_silently_does_is_noted():
    # TGI's chat route turns presence_penalty into repetition_penalty = presence + 2
    # (huggingface/text-generation-inference#1796); Ollama's OpenAI route does not read min_p.
    c = compare([1.0, 0.5, 0.0], {"presence_penalty": 0.5, "min_p": 0.1, "temperature": 1.0},
                engines=["vllm", "tgi", "ollama"])  # fmt: skip
    notes = {e["name"]: e["notes"] for e in c.to_json()["engines"]}
    assert notes["vllm"] == []
    assert any("repetition_penalty" in n for n in notes["tgi"])
    assert any(n.startswith("min_p") for n in notes["ollama"])
    assert c.table().count("note: ") == len(notes["tgi"]) + len(notes["ollama"])


def test_every_engine_rejecting_is_not_a_crash():
    c = compare([1.0, 0.0], {"temperature": 2.5}, engines=["vllm"])
    assert c.baseline is None and c.disagreements() == []
    assert "every engine rejected the request" in c.table()
    assert c.to_json()["tokens"][0]["engines"] == {}


def test_rows_include_a_token_lifted_by_logit_bias():
    z = np.linspace(5.0, 0.0, 50)
    c = compare(z, {"logit_bias": {"49": 100}, "temperature": 1.0}, engines=["nemo_ref", "vllm"])
    ids = [row["id"] for row in c.to_json(top=3)["tokens"]]
    assert ids[:3] == [0, 1, 2] and 49 in ids


def test_bad_python_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown engines.*choose from"):
        compare([1.0, 0.0], {}, engines=["vllm", "tensorrt"])
    with pytest.raises(ValueError, match=r"unknown request fields.*top_a"):
        compare([1.0, 0.0], {"top_a": 0.1})
    with pytest.raises(ValueError, match=r"shape \[V\]"):
        compare(np.zeros((2, 3)), {})
    with pytest.raises(ValueError, match="finite or -inf"):
        compare([1.0, float("nan")], {})
    with pytest.raises(ValueError, match=r"prompt_tokens: token ids must lie in \[0, 2\)"):
        compare([1.0, 0.0], {}, prompt_tokens=[5])


def test_logits_files_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    z = np.array([0.5, -1.0, 2.0, -np.inf])
    path = save_logits(tmp_path / "z.npz", z, [1, 2], [3], notice="NOTE: random weights (test)")
    saved = load_logits(path)
    assert np.array_equal(saved.logits, z) and saved.prompt_tokens == (1, 2) and saved.output_tokens == (3,)
    assert saved.notice == "NOTE: random weights (test)"
    np.save(tmp_path / "z.npy", z)
    assert np.array_equal(load_logits(tmp_path / "z.npy").logits, z)
    torch.save({"logits": torch.tensor(z), "prompt_tokens": torch.tensor([2])}, tmp_path / "z.pt")
    pt = load_logits(tmp_path / "z.pt")
    assert np.array_equal(pt.logits, z) and pt.prompt_tokens == (2,)
    with pytest.raises(ValueError, match=r"\.npz, \.npy or \.pt"):
        (tmp_path / "z.txt").write_text("1 2 3")
        load_logits(tmp_path / "z.txt")
    with pytest.raises(ValueError, match=r"writes a \.npz"):
        save_logits(tmp_path / "z.npy", z)


# ---- the command, end to end, in-process ----------------------------------------------------------


@pytest.mark.slow
def test_cli_prompt_json_says_random_weights_and_matches_the_library(tmp_path, capsys):
    from nemo_ref.demo import embedded_model
    from nemo_ref.tokenizer import load_tokenizer

    saved = tmp_path / "logits.npz"
    argv = ["compare", "The sea", "--preset", "nemo-tiny", "--generated", " is", "--engines",
            "nemo_ref,vllm,llama.cpp,tgi", "--temperature", "0.7", "--top-p", "0.9", "--frequency-penalty",
            "0.5", "--logit-bias", "5=2.5", "--top", "4", "--json", "--save-logits", str(saved)]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "random weights" in err
    data = json.loads(out)
    assert "random weights" in data["warning"]
    assert set(data) == {"warning", "request", "vocab_size", "prompt_tokens", "output_tokens", "baseline",
                         "engines", "tokens"}  # fmt: skip
    assert data["request"] == {
        "temperature": 0.7,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "logit_bias": {"5": 2.5},
    }
    assert data["vocab_size"] == 131072 and data["baseline"] == "nemo_ref"
    assert [e["name"] for e in data["engines"]] == ["nemo_ref", "vllm", "llama.cpp", "tgi"]
    for e in data["engines"]:
        assert set(e) >= {"name", "version", "logprobs_mode", "ok"}
        assert set(e) >= ({"resolved", "steps", "kept", "total_variation", "notes"} if e["ok"] else {"error"})
    assert len(data["tokens"]) >= 4
    for row in data["tokens"]:
        assert set(row) == {"id", "text", "logit", "raw_prob", "differs", "engines"}
        for cell in row["engines"].values():
            assert set(cell) == {"prob", "kept", "dropped_by", "differs"}

    tok = load_tokenizer()
    prompt_ids, gen_ids = tok.encode("The sea", bos=True), tok.encode(" is", bos=False)
    assert (data["prompt_tokens"], data["output_tokens"]) == (len(prompt_ids), len(gen_ids))
    z = next_token_logits(embedded_model("nemo-tiny"), prompt_ids + gen_ids)
    lib = compare(z, data["request"], engines=["nemo_ref", "vllm", "llama.cpp", "tgi"],
                  prompt_tokens=prompt_ids, output_tokens=gen_ids, token_str=tok.token_str)  # fmt: skip
    lib_json = lib.to_json(top=4)
    assert data["tokens"] == lib_json["tokens"] and data["engines"] == lib_json["engines"]
    assert data["tokens"][0]["text"] == tok.token_str(data["tokens"][0]["id"])

    # the saved file replays the same comparison without the model (no token text without a tokenizer)
    saved_data = load_logits(saved)
    assert saved_data.prompt_tokens == tuple(prompt_ids) and saved_data.output_tokens == tuple(gen_ids)
    assert main(["compare", "--logits", str(saved), *argv[6:-2]]) == 0
    replay = json.loads(capsys.readouterr().out)
    assert "random weights" in replay["warning"]
    assert [{**row, "text": None} for row in data["tokens"]] == replay["tokens"]


def test_cli_chat_prompt_goes_through_the_chat_template(capsys):
    from nemo_ref.tokenizer import load_tokenizer

    argv = ["compare", "Hi", "--chat", "--system", "Be brief.", "--preset", "nemo-tiny", "--engines", "vllm",
            "--top", "1", "--json"]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert data["prompt_tokens"] == len(load_tokenizer().encode_chat(messages)) and data["output_tokens"] == 0
    assert data["engines"][0]["resolved"]["temperature"] == 1.0  # vLLM's default for an unset field


def test_cli_table_from_a_logits_file(tmp_path, capsys):
    np.save(tmp_path / "z.npy", np.array(ORDER_Z))
    argv = ["compare", "--logits", str(tmp_path / "z.npy"), "--engines", "nemo_ref,llama.cpp,vllm",
            "--temperature", "0.5", "--top-p", "0.8", "--prompt-tokens", "0,2"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 prompt and 0 output tokens" in out
    assert "0.8808 *" in out and "0.1192 *" in out
    assert "random weights" not in out  # a bare .npy says nothing about where it came from


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare"], "give a prompt"),
        (["compare", "hi", "--logits", "x.npz"], "not both"),
        (["compare", "--logits", "missing.npz"], "does not exist"),
        (["compare", "--logits", "{npy}", "--engines", "vllm,trt"], "unknown engines ['trt']; choose from"),
        (["compare", "--logits", "{npy}", "--top", "0"], "--top must be >= 1"),
        (["compare", "--logits", "{npy}", "--prompt-tokens", "7"], "token ids must lie in [0, 3)"),
        (["compare", "--logits", "{nan}"], "finite or -inf"),
        (["compare", "hi", "--prompt-tokens", "1"], "go with --logits"),
        (["compare", "--logits", "{npy}", "--save-logits", "out.npy"], "writes a .npz"),
    ],
)
def test_cli_bad_input_is_a_clear_error(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "z.npy", np.array(ORDER_Z))
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan]))
    argv = [a.replace("{npy}", "z.npy").replace("{nan}", "nan.npy") for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_logit_bias_flag_format_is_checked(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--logits", "z.npy", "--logit-bias", "42"])
    assert exc.value.code == 2
    assert "ID=BIAS" in capsys.readouterr().err
