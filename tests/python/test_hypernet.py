"""lmfuse.hypernet against a PyTorch implementation of the ZeTT hypernetwork (_hypernet_reference.py).

Random weights (scaled like a trained network) are saved by hand as config.json + model.safetensors
in the released format, loaded by lmfuse, and the predictions compared with the PyTorch module run in
float64 on the same (rounded) weights. Tolerance: 5e-5 of the outputs' RMS (fp32 vs float64; measured
errors are 2e-6 to 8e-6 of it; tests/hypernet/test_hypernet_forward.c explains the budget).
"""

import json
import os

import pytest

torch = pytest.importorskip("torch")

import lmfuse  # noqa: E402
from lmfuse import hypernet as lh  # noqa: E402
from lmfuse.errors import LmfuseError  # noqa: E402

from _hypernet_reference import (ZettHypernetReference, config_json, random_state_dict,  # noqa: E402
                                 save_safetensors)

TOL = 5e-5

XLMR = {"hn_n_layers": 3, "hn_hidden_size": 768, "hn_intermediate_size": 1536,
        "hn_num_attention_heads": None, "n_embd": 768, "hn_surface_maxlen": 7, "pad_token_id": 1,
        "original_vocab_size": 1000, "hn_n_extra_tokens": 161, "separate_out_embeddings": False,
        "hn_rescale_embeddings": True, "hn_predict_bias": True, "hn_single_head": False,
        "hn_embed_lang_id": True, "n_langs": 26}
MISTRAL_SMALL = {"hn_n_layers": 3, "hn_hidden_size": 256, "hn_intermediate_size": 512,
                 "hn_num_attention_heads": 4, "n_embd": 128, "hn_surface_maxlen": 7,
                 "pad_token_id": 2, "original_vocab_size": 700, "hn_n_extra_tokens": 522,
                 "separate_out_embeddings": True, "hn_rescale_embeddings": True,
                 "hn_predict_bias": True, "hn_single_head": False, "hn_embed_lang_id": False}
SINGLE_HEAD = dict(MISTRAL_SMALL, hn_single_head=True, hn_rescale_embeddings=False,
                   hn_predict_bias=False, hn_n_layers=2)


def _rounded(sd, dtypes):
    """The state dict with tensor i stored as dtypes[i % len] (and the float32 values it then holds)."""
    stored, values = {}, {}
    for i, (k, v) in enumerate(sd.items()):
        dt = dtypes[i % len(dtypes)]
        stored[k] = v.to(dt)
        values[k] = stored[k].to(torch.float32)
    return stored, values


def _save(tmp_path, cfg, stored, langs=None):
    c = dict(cfg)
    if langs is not None:
        c["langs"] = langs
    (tmp_path / "config.json").write_text(config_json(c))
    save_safetensors(str(tmp_path / "model.safetensors"), stored)
    return tmp_path


def _inputs(cfg, U=8, L=7, seed=0):
    """Surface forms covering lengths 1 and 7, pads inside, fallback ids, an all-pad row, repeats."""
    g = torch.Generator().manual_seed(seed)
    V0, pad = cfg["original_vocab_size"], cfg["pad_token_id"]
    nfb = max(1, cfg["hn_n_extra_tokens"])
    S = torch.full((U, L), pad, dtype=torch.int64)
    for u in range(U):
        n = 1 + u % L
        ids = torch.randint(3, V0, (n,), generator=g)
        ids[ids == pad] = pad + 1
        S[u, :n] = ids
    S[2, 1] = pad
    S[3, 0] = V0 + nfb - 1
    S[4, 1] = V0
    S[6, :] = pad
    S[7, 2] = S[7, 0]
    return S


def _rel(got, want):
    want = want.to(torch.float64)
    rms = want.pow(2).mean().sqrt().item()
    return (got.to(torch.float64) - want).abs().max().item() / rms


def _reference(cfg, values, S, E_in, E_out, lang_index):
    ref = ZettHypernetReference(cfg)
    ref.load_state_dict(values, strict=True)  # the module's names are exactly the file's
    ref = ref.double().eval()
    src = E_in if E_out is None else torch.cat([E_in, E_out], dim=1)
    with torch.no_grad():
        return ref(S, src.double(), lang_index=lang_index)


@pytest.mark.parametrize("name,cfg,dtypes", [
    ("xlmr", XLMR, (torch.float32, torch.float16, torch.bfloat16)),
    ("mistral_small", MISTRAL_SMALL, (torch.float32,)),
    ("single_head", SINGLE_HEAD, (torch.bfloat16,)),
])
def test_forward_matches_pytorch(tmp_path, name, cfg, dtypes):
    ref_module = ZettHypernetReference(cfg)
    stored, values = _rounded(random_state_dict(ref_module, 1), dtypes)
    langs = ["l%02d" % i for i in range(cfg.get("n_langs") or 0)] or None
    hn = lh.Hypernet.load(_save(tmp_path, cfg, stored, langs))
    assert hn.param_count == sum(v.numel() for v in values.values())
    g = torch.Generator().manual_seed(2)
    V0, E = cfg["original_vocab_size"], cfg["n_embd"]
    E_in = 0.02 * torch.randn((V0, E), generator=g)
    E_out = 0.02 * torch.randn((V0, E), generator=g) if cfg["separate_out_embeddings"] else None
    S = _inputs(cfg)
    lang = hn.lang_index("l04") if langs else None
    out = hn.predict(S, E_in, E_out, lang_index=lang, bias=True)
    r_in, r_out, r_bias = _reference(cfg, values, S, E_in, E_out, lang)
    assert torch.isfinite(out.e_in).all()
    assert _rel(out.e_in, r_in) < TOL
    if E_out is not None:
        assert _rel(out.e_out, r_out) < TOL
    else:
        assert out.e_out is None
    if cfg["hn_predict_bias"]:
        assert _rel(out.bias, r_bias) < TOL
    else:
        assert (out.bias == 0).all()


def test_special_tokens_fallback_and_from_tensors(tmp_path):
    cfg = MISTRAL_SMALL
    module = ZettHypernetReference(cfg)
    sd = random_state_dict(module, 3)
    hn = lh.Hypernet.load(_save(tmp_path, cfg, sd))
    hn2 = lh.Hypernet.from_tensors(json.loads(config_json(cfg)), sd)
    g = torch.Generator().manual_seed(4)
    E_cat = 0.02 * torch.randn((700, 256), generator=g)
    E_in, E_out = E_cat[:, :128], E_cat[:, 128:]  # strided views of one [V0, 2 n_embd] matrix
    S = _inputs(cfg)
    copy = torch.tensor([-1, -1, -1, -1, -1, 5, -1, -1])
    a = hn.predict(S, E_in, E_out, copy_ids=copy, bias=True)
    b = hn2.predict(S, E_in.contiguous(), E_out.contiguous(), copy_ids=copy, bias=True)
    assert torch.equal(a.e_in, b.e_in) and torch.equal(a.e_out, b.e_out) and torch.equal(a.bias, b.bias)
    assert torch.equal(a.e_in[5], E_in[5]) and torch.equal(a.e_out[5], E_out[5])
    plain = hn.predict(S, E_in, E_out, bias=True)
    assert torch.equal(plain.bias, a.bias)  # a copied token keeps its predicted bias
    # Fallback-only tokens do not read the source embeddings.
    F = torch.full((2, 7), 2)
    F[0, 0], F[1, 0], F[1, 1] = 700, 700 + 521, 710
    x = hn.predict(F, E_in, E_out)
    y = hn.predict(F, torch.randn_like(E_in.contiguous()), torch.randn_like(E_out.contiguous()))
    assert torch.equal(x.e_in, y.e_in) and torch.equal(x.e_out, y.e_out)
    # The cache gives the same results and fills only the ids used.
    cache = hn.input_cache()
    c1 = hn.predict(S, E_in, E_out, cache=cache)
    c2 = hn.predict(S, E_in, E_out, cache=cache)
    assert torch.equal(c1.e_in, plain.e_in) and torch.equal(c2.e_in, plain.e_in)
    assert len(cache) == len(set(S.flatten().tolist()))


def test_param_counts_and_names():
    xlmr_full = dict(XLMR, original_vocab_size=250002, hn_embed_using_source_embeddings=True)
    mistral = dict(MISTRAL_SMALL, hn_hidden_size=4096, hn_intermediate_size=8192,
                   hn_num_attention_heads=32, n_embd=4096, original_vocab_size=32000,
                   hn_embed_using_source_embeddings=True)
    assert lh.param_count(lh.config_from_json(xlmr_full)) == 20634625
    assert lh.param_count(lh.config_from_json(mistral)) == 677740545
    # The library's name table is the PyTorch module's state_dict.
    module = ZettHypernetReference(XLMR)
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {name: shape for name, shape, _ in lh.tensor_table(lh.config_from_json(
        dict(XLMR, hn_embed_using_source_embeddings=True)))}
    assert got == want
    # V0 (1000 here) is not a parameter: the module has the released XLM-R count.
    assert sum(v.numel() for v in module.parameters()) == 20634625


def test_fvt_matches_torch():
    g = torch.Generator().manual_seed(5)
    E_in = torch.randn((40, 16), generator=g)
    E_out = torch.randn((40, 16), generator=g)
    dec = [[3, 7, 9], [5], [], [2, 99, -1], [1, 1]]
    e_in, e_out = lh.fvt(dec, E_in, E_out, unk_id=0, copy_ids=[-1, -1, -1, -1, 11])

    def mean(E, ids):
        if not ids:
            return E[0]
        return torch.stack([E[i if 0 <= i < 40 else 0] for i in ids]).mean(0)

    for u, ids in enumerate(dec[:4]):
        assert torch.allclose(e_in[u], mean(E_in, ids), rtol=1e-6, atol=1e-6)
        assert torch.allclose(e_out[u], mean(E_out, ids), rtol=1e-6, atol=1e-6)
    assert torch.equal(e_in[4], E_in[11])
    h_in, _ = lh.fvt(dec, E_in.to(torch.bfloat16), unk_id=0)
    assert torch.allclose(h_in[1], E_in[5].to(torch.bfloat16).float())


def test_errors(tmp_path):
    cfg = dict(MISTRAL_SMALL, hn_hidden_size=64, hn_intermediate_size=96, hn_num_attention_heads=2,
               n_embd=32, original_vocab_size=50, hn_n_extra_tokens=5, hn_n_layers=1)
    sd = random_state_dict(ZettHypernetReference(cfg), 6)
    victim = "model.encoder.layer.0.attention.self.value.weight"
    broken = {k: v for k, v in sd.items() if k != victim}
    _save(tmp_path, cfg, broken)
    with pytest.raises(LmfuseError) as e:
        lh.Hypernet.load(tmp_path)
    assert e.value.status_name == "LMF_ERR_INVALID_ARGUMENT" and victim in e.value.message
    wrong = dict(sd)
    wrong["scaler.w"] = torch.ones(32)
    _save(tmp_path, cfg, wrong)
    with pytest.raises(LmfuseError) as e:
        lh.Hypernet.load(tmp_path)
    assert "scaler.w" in e.value.message and "shape" in e.value.message
    with open(tmp_path / "model.safetensors", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "model.safetensors") - 3)
    with pytest.raises(LmfuseError) as e:
        lh.Hypernet.load(tmp_path)
    assert e.value.status_name == "LMF_ERR_IO"
    _save(tmp_path, cfg, sd)
    hn = lh.Hypernet.load(tmp_path)
    E = torch.zeros((50, 32))
    with pytest.raises(LmfuseError) as e:
        hn.predict(torch.full((1, 3), 56), E, E)
    assert "surface_forms[0][0]" in e.value.message
    with pytest.raises(ValueError):
        hn.predict(torch.full((1, 3), 3), E, E[:, :16])
    hn.close()
    with pytest.raises(ValueError):
        hn.predict(torch.full((1, 3), 3), E, E)
