#!/usr/bin/python3
"""Dynamic tokenization end to end: real multilingual text already tokenized by Mistral-7B's real
tokenizer (data/multilingual/mistral-7b.jsonl, with data/tokenizers/mistral-7b/tokenizer.json),
batch-level BPE merging, embeddings for the new tokens from a ZeTT-style hypernetwork, and the
shorter `inputs_embeds` fed to a small randomly initialised torch transformer. On the CPU in seconds.

    PYTHONPATH=python_bindings LMFUSE_LIBRARY=build/host/liblmfuse.so \\
        /usr/bin/python3 python_bindings/examples/dynamic_tokenization.py [--merges 200]
                                                                         [--langs en,de,pl,zh]

What one batch looks like:

    vocab = lmfuse.Vocab.from_tokenizer_json(".../tokenizer.json")
    out = lmfuse.embed_batch(vocab, batch_ids, model.embed.weight, source_out=model.lm_head.weight,
                             hypernet=hn, max_merges=200, pad_side="right", cache=cache)
    hidden = model(out.inputs_embeds, out.attention_mask)          # [B, L', d], L' < L

The hypernetwork here has random weights (no released checkpoint can be downloaded on this machine;
lmfuse.Hypernet.load reads a real one, config.json + model.safetensors), and so does the model: what
the script shows is the plumbing and the shorter sequences, not accuracy. main() returns per-language
(tokens before, tokens after, merges, the model's output shape); tests/python/test_pipeline_example.py
runs it.
"""

import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "python_bindings"))
sys.path.insert(0, os.path.join(REPO, "tests", "python"))  # the spec's architecture, as a module

import lmfuse  # noqa: E402
from _hypernet_reference import ZettHypernetReference, config_json, random_state_dict  # noqa: E402

DATA = os.path.join(REPO, "data")
V0, D = 32000, 64


class TinyEncoder(torch.nn.Module):
    """A 2-layer transformer over inputs_embeds, with its own (random) embedding matrices."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V0, D)
        self.lm_head = torch.nn.Linear(D, V0, bias=False)
        layer = torch.nn.TransformerEncoderLayer(D, nhead=4, dim_feedforward=4 * D, batch_first=True)
        self.body = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    def forward(self, inputs_embeds, attention_mask):
        return self.body(inputs_embeds, src_key_padding_mask=attention_mask == 0)


def hypernetwork():
    """A small ZeTT hypernetwork for this model (separate output embeddings, Mistral's pad id 2)."""
    cfg = {"hn_n_layers": 2, "hn_hidden_size": 128, "hn_intermediate_size": 256,
           "hn_num_attention_heads": 4, "n_embd": D, "hn_surface_maxlen": 7, "pad_token_id": 2,
           "original_vocab_size": V0, "hn_n_extra_tokens": 522, "separate_out_embeddings": True,
           "hn_rescale_embeddings": True, "hn_predict_bias": True, "hn_single_head": False,
           "hn_embed_lang_id": False}
    weights = random_state_dict(ZettHypernetReference(cfg), seed=0)
    return lmfuse.Hypernet.from_tensors(json.loads(config_json(cfg)), weights)


def batches(langs, size=32):
    out = {l: [] for l in langs}
    with open(os.path.join(DATA, "multilingual", "mistral-7b.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["lang"] in out and len(out[row["lang"]]) < size:
                out[row["lang"]].append(row["ids"])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--merges", type=int, default=200)
    ap.add_argument("--langs", default="en,de,pl,zh")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    vocab = lmfuse.Vocab.from_tokenizer_json(os.path.join(DATA, "tokenizers", "mistral-7b",
                                                          "tokenizer.json"))
    model = TinyEncoder().eval()
    hn = hypernetwork()
    cache = lmfuse.EmbedCache(D, capacity=5000, with_out=True)
    results = {}
    print("lang  tokens  after  merges  new  padded L -> L'  model output     ms")
    with torch.no_grad():
        E_in, E_out = model.embed.weight, model.lm_head.weight
        for lang, ids in batches(args.langs.split(",")).items():
            t0 = time.perf_counter()
            out = lmfuse.embed_batch(vocab, ids, E_in, source_out=E_out, hypernet=hn,
                                     max_merges=args.merges, cache=cache, new_outputs=True)
            hidden = model(out.inputs_embeds, out.attention_mask)
            ms = 1e3 * (time.perf_counter() - t0)
            before, after = sum(map(len, ids)), int(out.attention_mask.sum())
            L0, L1 = max(map(len, ids)), out.inputs_embeds.shape[1]
            print("%-4s %7d %6d %7d %4d %8d -> %-4d %-14s %6.1f" % (
                lang, before, after, out.merges.num_merges, len(out.merges.new_tokens), L0, L1,
                tuple(hidden.shape), ms))
            results[lang] = (before, after, out.merges.num_merges, tuple(hidden.shape))
    print("cache:", cache.stats())
    cache.close()
    return results


if __name__ == "__main__":
    main()
