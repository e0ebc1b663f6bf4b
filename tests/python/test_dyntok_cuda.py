"""lmfuse.merge_batch on a CUDA context against the same call on a CPU context (the CPU backend is the
reference the CUDA backend is checked against): merge lists, merged sequences, spans, new tokens and
decompositions equal, on the real multilingual data with both real tokenizers, in every boundary mode
and budget; ids given as CUDA tensors; a custom pre-tokenizer pattern refused on CUDA. Skipped, not
passed, without a GPU visible to torch and a CUDA build of liblmfuse."""

import json
import os

import numpy as np
import pytest

import lmfuse

pytestmark = pytest.mark.cuda

_REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(_REPO, "data")
TOKENIZERS = ["mistral-7b", "gpt-4o"]


def _batches(name, per_lang=32):
    """The first per_lang lines of each language: {lang: [ids, ...]}."""
    by = {}
    with open(os.path.join(DATA, "multilingual", name + ".jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            rows = by.setdefault(row["lang"], [])
            if len(rows) < per_lang:
                rows.append(row["ids"])
    return by


def _words(vocab, seqs):
    """Word ids from the bytes: a word starts at a token beginning with a space (or after a special
    token, or at a sequence's start); special tokens get -1."""
    out, nxt = [], 0
    for seq in seqs:
        row, cur = [], -1
        for i in seq:
            if vocab.flags(i) & lmfuse.dyntok.FLAG_SPECIAL:
                row.append(-1)
                cur = -1
                continue
            b = vocab.token_bytes(i)
            if cur < 0 or b[:1] == b" ":
                cur, nxt = nxt, nxt + 1
            row.append(cur)
        out.append(row)
    return out


@pytest.fixture(scope="module")
def gpu():
    import torch
    with lmfuse.Context("cuda", device=torch.cuda.current_device()) as c:
        yield c


@pytest.fixture(scope="module", params=TOKENIZERS)
def tok(request):
    name = request.param
    vocab = lmfuse.Vocab.from_tokenizer_json(os.path.join(DATA, "tokenizers", name, "tokenizer.json"))
    yield name, vocab, _batches(name)
    vocab.close()


def _same(dev, host, what):
    assert dev.merges == host.merges, what
    assert np.array_equal(dev.offsets, host.offsets), what
    assert np.array_equal(dev.ids, host.ids), what
    assert np.array_equal(dev.span_start, host.span_start), what
    assert np.array_equal(dev.span_len, host.span_len), what
    assert dev.new_tokens == host.new_tokens, what
    assert dev.decompositions == host.decompositions, what


@pytest.mark.parametrize("boundary", ["pretokens", "words", "whitespace"])
@pytest.mark.parametrize("m", [0, 10, 200, 100000])
def test_cuda_matches_cpu_every_language(tok, gpu, boundary, m):
    name, vocab, batches = tok
    for lang, seqs in batches.items():
        kw = dict(max_merges=m, boundary=boundary)
        if boundary == "words":
            kw["word_ids"] = _words(vocab, seqs)
        host = lmfuse.merge_batch(vocab, seqs, **kw)
        dev = lmfuse.merge_batch(vocab, seqs, context=gpu, **kw)
        _same(dev, host, (name, lang, boundary, m))
        if m == 0:
            assert dev.sequences() == seqs


def test_cuda_32x128_batch_from_cuda_tensors(tok, gpu):
    """The issue's shape: 32 sequences of 128 tokens (a language's lines concatenated and cut), ids
    given as a CUDA tensor (read on the host by the bindings)."""
    import torch
    name, vocab, _ = tok
    by = _batches(name, per_lang=300)
    for lang in ("en", "pl", "zh"):
        flat = [i for row in by[lang] for i in row][:32 * 128]
        ids = torch.tensor(flat, dtype=torch.int32).view(32, 128)
        host = lmfuse.merge_batch(vocab, ids, max_merges=200)
        dev = lmfuse.merge_batch(vocab, ids.cuda(), max_merges=200, context=gpu)
        _same(dev, host, (name, lang))
        assert dev.num_merges == 200


def test_cuda_custom_pattern_refused(tok, gpu):
    _, vocab, batches = tok
    seqs = batches["en"]
    with pytest.raises(lmfuse.LmfuseError) as err:
        lmfuse.merge_batch(vocab, seqs, pattern=r" ?\w+", context=gpu)
    assert err.value.status_name == "LMF_ERR_INVALID_ARGUMENT"
    assert "CPU" in err.value.message
    # The default pattern spelled out is the default; the context still works after the refusal.
    host = lmfuse.merge_batch(vocab, seqs, max_merges=50)
    dev = lmfuse.merge_batch(vocab, seqs, max_merges=50, context=gpu,
                             pattern=r"'s|'t|'re|'ve|'m|'ll|'d| ?[\p{L}\p{M}]+| ?\p{N}+"
                                     r"| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
    _same(dev, host, "explicit default pattern")
