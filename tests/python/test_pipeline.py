"""lmfuse.embed_batch (merge + embed in one call) on the real multilingual data with the real Mistral
vocabulary: the m = 0 identity with the embedding lookup, FVT rows against a torch mean, a small
random hypernetwork with and without the EmbedCache, target_reduction, and bad inputs."""

import json
import os
import sys

import pytest
import torch

import lmfuse

_HERE = os.path.dirname(__file__)
_REPO = os.path.abspath(os.path.join(_HERE, "..", ".."))
sys.path.insert(0, _HERE)
from _hypernet_reference import ZettHypernetReference, config_json, random_state_dict  # noqa: E402

DATA = os.path.join(_REPO, "data")
V0, D = 32000, 32
SMALL = {"hn_n_layers": 2, "hn_hidden_size": 64, "hn_intermediate_size": 128,
         "hn_num_attention_heads": 2, "n_embd": D, "hn_surface_maxlen": 7, "pad_token_id": 2,
         "original_vocab_size": V0, "hn_n_extra_tokens": 522, "separate_out_embeddings": True,
         "hn_rescale_embeddings": True, "hn_predict_bias": True, "hn_single_head": False,
         "hn_embed_lang_id": False}


@pytest.fixture(scope="module")
def setup():
    vocab = lmfuse.Vocab.from_tokenizer_json(os.path.join(DATA, "tokenizers", "mistral-7b",
                                                          "tokenizer.json"))
    rows = {}
    with open(os.path.join(DATA, "multilingual", "mistral-7b.jsonl"), encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            rows.setdefault(r["lang"], [])
            if len(rows[r["lang"]]) < 32:
                rows[r["lang"]].append(r["ids"])
    g = torch.Generator().manual_seed(7)
    E_in = 0.3 * torch.randn((V0, D), generator=g)
    E_out = 0.3 * torch.randn((V0, D), generator=g)
    module = ZettHypernetReference(SMALL)
    hn = lmfuse.Hypernet.from_tensors(json.loads(config_json(SMALL)), random_state_dict(module, 5))
    return vocab, rows, E_in, E_out, hn


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_m0_is_the_embedding_lookup(setup, side, dtype):
    vocab, rows, E_in, _, _ = setup
    seqs = rows["de"]
    src = E_in.to(dtype)
    out = lmfuse.embed_batch(vocab, seqs, src, method="fvt", max_merges=0, pad_side=side, pad_id=0)
    L = max(map(len, seqs))
    assert out.inputs_embeds.shape == (len(seqs), L, D) and out.inputs_embeds.dtype == dtype
    for b, s in enumerate(seqs):
        pad = L - len(s)
        ids = torch.tensor(s + [0] * pad if side == "right" else [0] * pad + s)
        assert torch.equal(out.ids[b], ids)
        assert torch.equal(out.inputs_embeds[b], src[ids])
        mask = torch.tensor([1] * len(s) + [0] * pad if side == "right" else [0] * pad + [1] * len(s))
        assert torch.equal(out.attention_mask[b], mask)


def test_fvt_rows_are_decomposition_means(setup):
    vocab, rows, E_in, E_out, _ = setup
    seqs = rows["pl"]
    out = lmfuse.embed_batch(vocab, seqs, E_in, source_out=E_out, method="fvt", max_merges=150,
                             new_outputs=True)
    m = out.merges
    assert m.num_merges == 150 and len(m.new_tokens) > 0
    for k, dec in enumerate(m.decompositions):
        want_in = E_in[dec].mean(0)
        want_out = E_out[dec].mean(0)
        assert torch.allclose(out.new_out[k], want_out, rtol=0, atol=1e-6)
        hits = (out.ids == V0 + k).nonzero()
        for b, t in hits.tolist():
            assert torch.allclose(out.inputs_embeds[b, t], want_in, rtol=0, atol=1e-6)
    assert torch.equal(out.new_bias, torch.zeros(len(m.new_tokens)))
    # Tokens left alone keep their exact row.
    base = (out.ids >= 0) & (out.ids < V0)
    assert torch.equal(out.inputs_embeds[base], E_in[out.ids[base]])
    # Every token's span covers input positions whose bytes are its bytes.
    for b, s in enumerate(seqs):
        n = int(out.attention_mask[b].sum())
        got = b"".join(m.token_bytes(vocab, int(i)) for i in out.ids[b, :n])
        assert got == b"".join(vocab.token_bytes(i) for i in s)
        assert int(out.span_len[b, :n].sum()) == len(s)


def test_hypernet_path_and_cache(setup):
    vocab, rows, E_in, E_out, hn = setup
    seqs = rows["cs"]
    plain = lmfuse.embed_batch(vocab, seqs, E_in, source_out=E_out, hypernet=hn, max_merges=120,
                               new_outputs=True)
    new = plain.ids >= V0
    assert new.any()
    assert torch.isfinite(plain.inputs_embeds).all()
    base = (plain.ids >= 0) & ~new
    assert torch.equal(plain.inputs_embeds[base], E_in[plain.ids[base]])
    # Two occurrences of one new token get the same row.
    k = int(plain.ids[new][0])
    rows_k = plain.inputs_embeds[plain.ids == k]
    assert torch.equal(rows_k, rows_k[:1].expand_as(rows_k))
    with lmfuse.EmbedCache(D, capacity=1000, with_out=True) as cache:
        first = lmfuse.embed_batch(vocab, seqs, E_in, source_out=E_out, hypernet=hn, max_merges=120,
                                   cache=cache, new_outputs=True)
        s1 = cache.stats()
        second = lmfuse.embed_batch(vocab, seqs, E_in, source_out=E_out, hypernet=hn,
                                    max_merges=120, cache=cache, new_outputs=True)
        s2 = cache.stats()
    for o in (first, second):
        assert torch.equal(o.inputs_embeds, plain.inputs_embeds)
        assert torch.equal(o.new_out, plain.new_out) and torch.equal(o.new_bias, plain.new_bias)
    assert s1["rows"] == len(plain.merges.new_tokens) and s2["hits"] - s1["hits"] == s1["rows"]


def test_target_reduction(setup):
    vocab, rows, E_in, _, _ = setup
    seqs = rows["ru"]
    n = sum(map(len, seqs))
    out = lmfuse.embed_batch(vocab, seqs, E_in, method="fvt", max_merges=100000,
                             target_reduction=0.2)
    kept = int(out.attention_mask.sum())
    assert kept <= 0.8 * n
    # One merge fewer would not have reached the target.
    fewer = lmfuse.merge_batch(vocab, seqs, max_merges=out.merges.num_merges - 1)
    assert fewer.num_tokens > 0.8 * n


def test_bad_inputs(setup):
    vocab, rows, E_in, _, hn = setup
    seqs = rows["en"][:4]
    with pytest.raises(ValueError):
        lmfuse.embed_batch(vocab, seqs, E_in, method="hypernet")
    with pytest.raises(ValueError):
        lmfuse.embed_batch(vocab, seqs, E_in, method="fvt", pad_side="middle")
    with pytest.raises(lmfuse.LmfuseError) as e:  # ids beyond the source matrix
        lmfuse.embed_batch(vocab, seqs, E_in[:100], method="fvt", max_merges=0)
    assert e.value.status_name == "LMF_ERR_INVALID_ARGUMENT"
    with pytest.raises(lmfuse.LmfuseError):  # this hypernetwork needs E_out
        lmfuse.embed_batch(vocab, seqs, E_in, hypernet=hn)
    with pytest.raises(lmfuse.LmfuseError):
        lmfuse.embed_batch(vocab, seqs, E_in, method="fvt", target_reduction=1.5)
    with pytest.raises(TypeError):
        lmfuse.embed_batch(vocab, seqs, E_in, method="fvt", out_dtype=torch.int32)


@pytest.mark.cuda
def test_cuda_context_matches_cpu(setup):
    vocab, rows, E_in, E_out, _ = setup
    seqs = rows["it"]
    cpu = lmfuse.embed_batch(vocab, seqs, E_in, source_out=E_out, method="fvt", max_merges=100,
                             new_outputs=True, pad_side="left", pad_id=2)
    with lmfuse.Context("cuda") as ctx:
        gpu = lmfuse.embed_batch(vocab, seqs, E_in.cuda(), source_out=E_out.cuda(), method="fvt",
                                 max_merges=100, new_outputs=True, pad_side="left", pad_id=2,
                                 context=ctx)
    assert gpu.inputs_embeds.is_cuda
    assert torch.equal(gpu.inputs_embeds.cpu(), cpu.inputs_embeds)
    assert torch.equal(gpu.new_out.cpu(), cpu.new_out)
    assert torch.equal(gpu.ids, cpu.ids) and torch.equal(gpu.attention_mask, cpu.attention_mask)
