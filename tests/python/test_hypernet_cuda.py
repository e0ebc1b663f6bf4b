"""lmfuse.Hypernet on a CUDA context against the same hypernetwork on a CPU context (the CPU backend is
the reference the CUDA backend is checked against), as a PyTorch script would use it: weights loaded
from the released format or given as CUDA tensors, CUDA source embeddings, outputs as CUDA tensors
enqueued on torch's current stream. Skipped, not passed, without a GPU visible to torch and a CUDA
build of liblmfuse.

Tolerances (max |CUDA - CPU| / RMS of the CPU outputs): 5e-5 in fp32 (both backends are fp32 with
different GEMM summation orders, each within 2e-6 .. 8e-6 of a float64 reference), 3e-2 with TF32
(10-bit mantissa GEMM inputs; tests/cuda/test_hypernet_cuda.c gives the budget). Copied rows are exact.
"""

import json

import pytest

torch = pytest.importorskip("torch")

import lmfuse  # noqa: E402
from lmfuse import hypernet as lh  # noqa: E402
from lmfuse.errors import LmfuseError  # noqa: E402

from _hypernet_reference import ZettHypernetReference, config_json, random_state_dict  # noqa: E402
from test_hypernet import MISTRAL_SMALL, SINGLE_HEAD, XLMR, _inputs, _rounded, _save  # noqa: E402

pytestmark = pytest.mark.cuda

TOL = 5e-5
TOL_TF32 = 3e-2


def _rel(got, want):
    want = want.to(torch.float64)
    rms = want.pow(2).mean().sqrt().item()
    return (got.cpu().to(torch.float64) - want).abs().max().item() / rms


@pytest.fixture
def cuda_ctx():
    with lmfuse.Context("cuda") as c:
        yield c


def _pair(tmp_path, cfg, dtypes, cuda_ctx, seed=1):
    stored, _ = _rounded(random_state_dict(ZettHypernetReference(cfg), seed), dtypes)
    langs = ["l%02d" % i for i in range(cfg.get("n_langs") or 0)] or None
    path = _save(tmp_path, cfg, stored, langs)
    return lh.Hypernet.load(path), lh.Hypernet.load(path, context=cuda_ctx), stored


def _sources(cfg, seed=2):
    g = torch.Generator().manual_seed(seed)
    V0, E = cfg["original_vocab_size"], cfg["n_embd"]
    E_in = 0.02 * torch.randn((V0, E), generator=g)
    E_out = 0.02 * torch.randn((V0, E), generator=g) if cfg["separate_out_embeddings"] else None
    return E_in, E_out


def _compare(a, b, tol, copy=None):
    """a: CUDA output, b: CPU output."""
    assert a.e_in.is_cuda
    keep = torch.ones(b.e_in.shape[0], dtype=torch.bool)
    if copy is not None:
        keep = torch.as_tensor(copy) < 0
        assert torch.equal(a.e_in.cpu()[~keep], b.e_in[~keep])
        if b.e_out is not None:
            assert torch.equal(a.e_out.cpu()[~keep], b.e_out[~keep])
    assert torch.isfinite(a.e_in).all()
    assert _rel(a.e_in[keep.cuda()], b.e_in[keep]) < tol
    if b.e_out is not None:
        assert _rel(a.e_out[keep.cuda()], b.e_out[keep]) < tol
    if b.bias is not None:
        if b.bias.abs().max() == 0:
            assert (a.bias == 0).all()
        else:
            assert _rel(a.bias, b.bias) < tol


@pytest.mark.parametrize("name,cfg,dtypes", [
    ("xlmr", XLMR, (torch.float32, torch.float16, torch.bfloat16)),
    ("mistral_small", MISTRAL_SMALL, (torch.float32,)),
    ("single_head", SINGLE_HEAD, (torch.bfloat16,)),
])
def test_cuda_matches_cpu(tmp_path, cuda_ctx, name, cfg, dtypes):
    cpu, gpu, _ = _pair(tmp_path, cfg, dtypes, cuda_ctx)
    E_in, E_out = _sources(cfg)
    S = torch.cat([_inputs(cfg, 8, 7, seed) for seed in range(40)])  # 320 tokens
    lang = cpu.lang_index("l04") if cfg.get("hn_embed_lang_id") else None
    copy = torch.full((S.shape[0],), -1)
    special = 3 + torch.arange(S[5::13].shape[0])  # special tokens [id, pad, ...], copied
    S[5::13, 0] = special
    S[5::13, 1:] = cfg["pad_token_id"]
    copy[5::13] = special
    want = cpu.predict(S, E_in, E_out, lang_index=lang, copy_ids=copy, bias=True)
    got = gpu.predict(S, E_in.cuda(), None if E_out is None else E_out.cuda(), lang_index=lang,
                      copy_ids=copy, bias=True)
    torch.cuda.synchronize()
    _compare(got, want, TOL, copy)
    for dt in (torch.float16, torch.bfloat16):  # 16-bit sources: the same values on both sides
        w = cpu.predict(S, E_in.to(dt), None if E_out is None else E_out.to(dt), lang_index=lang,
                        bias=True)
        g = gpu.predict(S.cuda(), E_in.to(dt).cuda(), None if E_out is None else E_out.to(dt).cuda(),
                        lang_index=lang, bias=True)
        _compare(g, w, TOL)
    g = gpu.predict(S, E_in.cuda(), None if E_out is None else E_out.cuda(), lang_index=lang,
                    copy_ids=copy, bias=True, tf32=True)
    _compare(g, want, TOL_TF32, copy)


def test_cuda_from_device_tensors_cache_and_stream(tmp_path, cuda_ctx):
    cfg = MISTRAL_SMALL
    sd = random_state_dict(ZettHypernetReference(cfg), 3)
    cpu = lh.Hypernet.from_tensors(json.loads(config_json(cfg)), sd)
    host = lh.Hypernet.from_tensors(json.loads(config_json(cfg)), sd, context=cuda_ctx)
    dev = lh.Hypernet.from_tensors(json.loads(config_json(cfg)),
                                   {k: v.to(torch.bfloat16).cuda() if i % 2 else v.cuda()
                                    for i, (k, v) in enumerate(sd.items())}, context=cuda_ctx)
    dev_ref = lh.Hypernet.from_tensors(json.loads(config_json(cfg)),
                                       {k: v.to(torch.bfloat16) if i % 2 else v
                                        for i, (k, v) in enumerate(sd.items())}, context=cuda_ctx)
    g = torch.Generator().manual_seed(4)
    E_cat = 0.02 * torch.randn((700, 256), generator=g)
    E_in, E_out = E_cat[:, :128], E_cat[:, 128:]  # strided views of one [V0, 2 n_embd] matrix
    D_cat = E_cat.cuda()
    D_in, D_out = D_cat[:, :128], D_cat[:, 128:]
    S = torch.cat([_inputs(cfg, 8, 7, seed) for seed in range(12)])
    want = cpu.predict(S, E_in, E_out, bias=True)
    a = host.predict(S, D_in, D_out, bias=True)
    _compare(a, want, TOL)
    # Device tensors (f32 copied, bf16 converted on the device) give the bits host tensors give.
    b = dev.predict(S, D_in, D_out, bias=True)
    r = dev_ref.predict(S, D_in, D_out, bias=True)
    assert torch.equal(b.e_in, r.e_in) and torch.equal(b.e_out, r.e_out) and torch.equal(b.bias, r.bias)
    # The input cache: rows on the device, flags on the host; the same results.
    cache = host.input_cache()
    assert cache.rows.is_cuda and not cache.valid.is_cuda
    c1 = host.predict(S, D_in, D_out, bias=True, cache=cache)
    c2 = host.predict(S, D_in, D_out, bias=True, cache=cache)
    assert torch.equal(c1.e_in, a.e_in) and torch.equal(c2.e_in, a.e_in)
    assert torch.equal(c2.bias, a.bias)
    used = set(S[:, 0].tolist()) | set(S[S != cfg["pad_token_id"]].tolist())
    assert len(cache) == len(used)
    # On a side stream: the call enqueues on torch's current stream.
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        x = host.predict(S, D_in, D_out, bias=True)
    s.synchronize()
    assert torch.equal(x.e_in, a.e_in)


def test_cuda_errors(tmp_path, cuda_ctx):
    cfg = dict(MISTRAL_SMALL, hn_hidden_size=64, hn_intermediate_size=96, hn_num_attention_heads=2,
               n_embd=32, original_vocab_size=50, hn_n_extra_tokens=5, hn_n_layers=1)
    _, gpu, _ = _pair(tmp_path, cfg, (torch.float32,), cuda_ctx, seed=6)
    E = torch.zeros((50, 32))
    with pytest.raises(ValueError):  # source embeddings must be on the device
        gpu.predict(torch.full((1, 3), 3), E, E)
    with pytest.raises(LmfuseError) as e:
        gpu.predict(torch.full((1, 3), 56), E.cuda(), E.cuda())
    assert "surface_forms[0][0]" in e.value.message
    with pytest.raises(ValueError):  # FVT on a CUDA context takes its sources on the device too
        lh.fvt([[1]], E, unk_id=0, context=cuda_ctx)


def test_cuda_fvt_matches_cpu(cuda_ctx):
    """FVT on the device: the CPU's rows bit for bit, every source dtype, copies and unk ids."""
    g = torch.Generator().manual_seed(5)
    dec = [[3, 4], [7], [], [2, 2, 9, 60], [11, 12, 13]]
    offsets = torch.tensor([0, 2, 3, 3, 7, 10], dtype=torch.int64)
    ids = torch.tensor([i for d in dec for i in d], dtype=torch.int32)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        E_in = torch.randn((50, 24), generator=g).to(dtype)
        E_out = torch.randn((50, 24), generator=g).to(dtype)
        want_in, want_out = lh.fvt(dec, E_in, E_out, unk_id=1, copy_ids=[-1, 5, -1, -1, -1])
        got_in, got_out = lh.fvt((offsets.cuda(), ids.cuda()), E_in.cuda(), E_out.cuda(), unk_id=1,
                                 copy_ids=torch.tensor([-1, 5, -1, -1, -1]).cuda(), context=cuda_ctx)
        assert got_in.device.type == "cuda" and got_out.device.type == "cuda"
        assert torch.equal(got_in.cpu(), want_in) and torch.equal(got_out.cpu(), want_out)
