"""lmfuse.Vocab and lmfuse.merge_batch against a straightforward Python implementation of the spec
(bench/python/dyntok_reference.py: its own tokenizer.json reader, per-step full recount, the `regex`
module for the pre-tokenizer), on the real multilingual data with both real tokenizers."""

import os
import sys

import numpy as np
import pytest
import torch

import lmfuse

pytest.importorskip("regex")  # Debian's python3-regex: the reference's Unicode-aware regex engine

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(_REPO, "bench", "python"))
import dyntok_reference as ref  # noqa: E402

DATA = os.path.join(_REPO, "data")
TOKENIZERS = ["mistral-7b", "gpt-4o"]


def _tj(name):
    return os.path.join(DATA, "tokenizers", name, "tokenizer.json")


@pytest.fixture(scope="module", params=TOKENIZERS)
def tok(request):
    name = request.param
    return (name, lmfuse.Vocab.from_tokenizer_json(_tj(name)), ref.Vocab.from_tokenizer_json(_tj(name)),
            ref.batches_by_language(ref.load_jsonl(os.path.join(DATA, "multilingual", name + ".jsonl")),
                                    32))


def _compare(res, want):
    assert res.sequences() == want["ids"]
    assert res.spans() == [[tuple(s) for s in seq] for seq in want["spans"]]
    assert res.merges == [tuple(m) for m in want["merges"]]
    assert res.new_tokens == want["new_tokens"]
    assert res.decompositions == want["decompositions"]


def test_vocab_matches_independent_loader(tok):
    name, v, rv, _ = tok
    assert v.size == len(rv.token_bytes)
    assert v.format == ("byte_level" if name == "gpt-4o" else "metaspace")
    for i, b in enumerate(rv.token_bytes):
        if b is None:
            assert v.flags(i) & lmfuse.dyntok.FLAG_UNUSED
            continue
        assert v.token_bytes(i) == b, i
        assert bool(v.flags(i) & lmfuse.dyntok.FLAG_SPECIAL) == bool(rv.flags[i] & ref.SPECIAL), i
    for b, i in list(rv.find.items())[::97]:
        assert v.find(b) == i


@pytest.mark.parametrize("m", [0, 10, 200])
def test_merge_matches_reference_every_language(tok, m):
    _, v, rv, batches = tok
    for lang, seqs in batches.items():
        res = lmfuse.merge_batch(v, seqs, max_merges=m)
        want = ref.merge_batch(rv, seqs, m)
        _compare(res, want)
        if m == 0:
            assert res.sequences() == seqs, lang


def test_word_level_saturation_and_bytes(tok):
    """With m large, merging stops early, no valid pair is left, and every sequence's bytes are
    unchanged."""
    _, v, rv, batches = tok
    for lang in ("en", "pl", "zh"):
        seqs = batches[lang]
        res = lmfuse.merge_batch(v, seqs, max_merges=100000)
        want = ref.merge_batch(rv, seqs, 100000)
        _compare(res, want)
        assert res.num_merges < 100000
        for s, out in zip(seqs, res.sequences()):
            assert b"".join(res.token_bytes(v, i) for i in out) == b"".join(v.token_bytes(i) for i in s)


def test_custom_pattern_gpt4o_split_regex():
    v = lmfuse.Vocab.from_tokenizer_json(_tj("gpt-4o"))
    rv = ref.Vocab.from_tokenizer_json(_tj("gpt-4o"))
    pattern = v.pretokenizer_pattern
    assert pattern and "\\p{N}{1,3}" in pattern
    batches = ref.batches_by_language(ref.load_jsonl(os.path.join(DATA, "multilingual",
                                                                  "gpt-4o.jsonl")), 32)
    for lang in ("en", "de", "ru"):
        res = lmfuse.merge_batch(v, batches[lang], max_merges=150, pattern=pattern)
        _compare(res, ref.merge_batch(rv, batches[lang], 150, pattern=pattern))


def _word_ids(v, seqs):
    """A word id per token: a new word starts at a token whose bytes start with a space."""
    out = []
    for s in seqs:
        w, ids = -1, []
        for i in s:
            if v.token_bytes(i)[:1] == b" " or w < 0:
                w += 1
            ids.append(w)
        out.append(ids)
    return out


def test_words_and_whitespace_modes(tok):
    _, v, rv, batches = tok
    for lang in ("en", "cs"):
        seqs = batches[lang]
        words = _word_ids(v, seqs)
        res = lmfuse.merge_batch(v, seqs, max_merges=120, boundary="words", word_ids=words)
        _compare(res, ref.merge_batch(rv, seqs, 120, mode="words", word_ids=words))
        res = lmfuse.merge_batch(v, seqs, max_merges=120, boundary="whitespace")
        _compare(res, ref.merge_batch(rv, seqs, 120, mode="whitespace"))


def test_thread_counts_and_tensor_inputs_agree():
    v = lmfuse.Vocab.from_tokenizer_json(_tj("mistral-7b"))
    rows = [r for r in ref.load_jsonl(os.path.join(DATA, "multilingual", "mistral-7b.jsonl"))
            if r["lang"] == "bg"][:32]
    seqs = [r["ids"] for r in rows]
    base = lmfuse.merge_batch(v, seqs, max_merges=200)
    flat = torch.tensor([i for s in seqs for i in s], dtype=torch.int64)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum([len(s) for s in seqs])]))
    for threads in (1, 2, 3):
        with lmfuse.Context("cpu", cpu_threads=threads) as ctx:
            res = lmfuse.merge_batch(v, flat, offsets=offsets, max_merges=200, context=ctx)
        assert res.sequences() == base.sequences()
        assert res.merges == base.merges


def test_spec_t1_through_python_api():
    u2b = ref._gpt2_unicode_to_byte()
    seqs_s = ["<s> ĠR ib on uc le op rote in Ġparticles Ġreg ulate Ġm R NA Ġstability . </s>",
              "<s> Ġm R NA Ġstability Ġis Ġmod ulated Ġby Ġrib on uc le op rote in Ġfactors . </s>"]
    names = []
    for s in seqs_s:
        for t in s.split():
            if t not in names:
                names.append(t)
    special = {"<s>", "</s>"}
    tokens = [n.encode() if n in special else bytes(u2b[c] for c in n) for n in names]
    flags = [lmfuse.dyntok.FLAG_SPECIAL if n in special else 0 for n in names]
    v = lmfuse.Vocab.from_tokens(tokens, flags=flags)
    seqs = [[names.index(t) for t in s.split()] for s in seqs_s]
    res = lmfuse.merge_batch(v, seqs, max_merges=10)
    assert [c for *_, c in res.merges] == [2, 2, 2, 2, 2, 2, 2, 1, 1, 1]
    assert res.num_tokens == 20
    text = [b"".join(res.token_bytes(v, i) for i in s) for s in res.sequences()]
    assert text[0] == b"<s> Ribonucleoprotein particles regulate mRNA stability.</s>"
    assert res.token_bytes(v, res.sequences()[0][1]) == b" Ribonucleoprotein"
    res = lmfuse.merge_batch(v, seqs, max_merges=100)
    assert res.num_merges == 12 and res.num_tokens == 18
    ids, mask = res.padded(pad_id=-1, side="left")
    assert ids.shape == (2, 10) and mask.sum().item() == 18
    assert ids[0, 0].item() == -1 and mask[0, 0].item() == 0 and mask[1].all()


def test_bad_inputs_raise_and_name_the_problem():
    v = lmfuse.Vocab.from_tokens([b"a", b"b", b" "], flags=[0, 0, 0])
    with pytest.raises(lmfuse.LmfuseError) as e:
        lmfuse.merge_batch(v, [[0, 1, 7]])
    assert e.value.status_name == "LMF_ERR_INVALID_ARGUMENT"
    with pytest.raises(lmfuse.LmfuseError) as e:
        lmfuse.merge_batch(v, [[0, 1]], max_merges=-1)
    assert e.value.status_name == "LMF_ERR_INVALID_ARGUMENT"
    with pytest.raises(lmfuse.LmfuseError) as e:
        lmfuse.merge_batch(v, [[0, 1]], pattern="(unclosed")
    assert e.value.status_name == "LMF_ERR_INVALID_ARGUMENT"
    with pytest.raises(lmfuse.LmfuseError) as e:
        lmfuse.merge_batch(v, [])
    assert e.value.status_name == "LMF_ERR_INVALID_SIZE"
    with pytest.raises(lmfuse.LmfuseError):
        lmfuse.merge_batch(v, [0, 1], offsets=[0, 2, 1])
    with pytest.raises(ValueError):
        lmfuse.merge_batch(v, [[0, 1]], boundary="sentences")
    with pytest.raises(TypeError):
        lmfuse.merge_batch(v, [[0.5, 1.0]])
    with pytest.raises(lmfuse.LmfuseError) as e:
        lmfuse.Vocab.from_tokenizer_json(os.path.join(DATA, "no-such-tokenizer.json"))
    assert e.value.status_name == "LMF_ERR_IO"
    with pytest.raises(lmfuse.LmfuseError) as e:
        lmfuse.Vocab.from_json_string('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ')
    assert e.value.status_name == "LMF_ERR_PARSE"
