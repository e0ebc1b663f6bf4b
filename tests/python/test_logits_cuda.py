"""combine_logits / verify_draft on CUDA tensors against the same calls on CPU tensors (the CPU
backend is the reference the CUDA backend is checked against): log-probs within 1e-5, greedy and
sampled tokens equal (the Gumbel noise is a pure function of seed, offset and token id), GeDi's
state updated on the device, work enqueued on torch's current stream. Skipped, not passed,
without a GPU visible to torch and a CUDA build of liblmfuse."""

import math

import pytest
import torch

import lmfuse

import _logits_reference as R

pytestmark = pytest.mark.cuda


def cuda(x):
    if isinstance(x, torch.Tensor):
        return x.cuda()
    if isinstance(x, lmfuse.LogitsInput):
        ch = {k: cuda(getattr(x, k)) for k in ("logits", "row_index", "coeff_rows")}
        if x.sparse:
            ch["indices"] = cuda(x.indices)
        return x.replace(**ch)
    if isinstance(x, dict):
        return {k: cuda(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (torch.Tensor, lmfuse.LogitsInput)):
        return type(x)(cuda(v) for v in x)
    return x


def compare(kw, **call):
    host = lmfuse.combine_logits(**kw, **call, return_logprobs=True)
    dev = lmfuse.combine_logits(**cuda(kw), **cuda(call), return_logprobs=True)
    torch.cuda.synchronize()
    assert dev.tokens.is_cuda and dev.logprobs.is_cuda
    assert torch.equal(dev.status.cpu(), host.status)
    assert torch.equal(dev.tokens.cpu(), host.tokens), (dev.tokens.cpu(), host.tokens)
    ok = host.status == 0
    lp_h, lp_d = host.logprobs[ok], dev.logprobs.cpu()[ok]
    assert torch.equal(torch.isfinite(lp_h), torch.isfinite(lp_d))
    torch.testing.assert_close(lp_d[torch.isfinite(lp_d)], lp_h[torch.isfinite(lp_h)], atol=1e-5,
                               rtol=1e-6)
    torch.testing.assert_close(dev.lse.cpu()[ok], host.lse[ok], atol=1e-5, rtol=1e-6)
    return host, dev


SAMPLING = [dict(temperature=0), dict(temperature=0.8, top_p=0.9, seeds=list(range(16)),
                                      offsets=5),
            dict(temperature=1.2, top_k=50, min_p=0.01, seeds=3)]


@pytest.mark.parametrize("B,V", [(1, 128256), (16, 32000), (16, 1000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_methods_match_cpu(B, V, dtype):
    zs = [R.randn(B, V, seed=s, dtype=dtype) for s in (1, 2, 3)]
    for samp in SAMPLING:
        samp = dict(samp)
        if isinstance(samp.get("seeds"), list):
            samp["seeds"] = samp["seeds"][:B]
        compare(lmfuse.eft(*zs), **samp)
        compare(lmfuse.proxy_tune(*zs, alpha=1.5), **samp)
        compare(lmfuse.contrastive(zs[0], zs[1]), **samp)
        compare(lmfuse.dexperts(*zs), **samp)
        compare(lmfuse.cfg(zs[0], zs[1], 1.5), bias=R.randn(1, V, seed=9)[0], **samp)


def test_vocab_mismatch_sparse_and_row_index_match_cpu():
    B, V = 8, 5000
    base, exp, anti = R.randn(B, V, seed=1), R.randn(B, V + 64, seed=2), R.randn(B, V - 10, seed=3)
    compare(lmfuse.proxy_tune(base, exp, anti), vocab_out=V, temperature=0)
    vals, idx = torch.topk(base, 5, dim=1)
    sp = lmfuse.SparseLogitsInput(idx, vals, fill=-50000.0)
    ri = torch.tensor([3, 3, 0, 1, 7, 6, 5, 4], dtype=torch.int32)
    compare({"models": [lmfuse.LogitsInput(exp[:, :V], row_index=ri), sp]}, temperature=0.9,
            seeds=list(range(B)))


def test_gedi_state_on_device():
    B, V = 4, 3000
    st_h, st_d = lmfuse.GeDiState.zeros(B), lmfuse.GeDiState.zeros(B, device="cuda")
    for step in range(5):
        zs = [R.randn(B, V, seed=10 * step + s) for s in range(3)]
        h = lmfuse.combine_logits(**lmfuse.gedi(*zs, st_h), temperature=0)
        d = lmfuse.combine_logits(**lmfuse.gedi(*[z.cuda() for z in zs], st_d), temperature=0)
        torch.cuda.synchronize()
        assert torch.equal(d.tokens.cpu(), h.tokens)
        torch.testing.assert_close(d.gedi_logp_desired.cpu(), h.gedi_logp_desired, atol=1e-5,
                                   rtol=1e-6)
    torch.testing.assert_close(st_d.L_pos.cpu(), st_h.L_pos, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(st_d.L_neg.cpu(), st_h.L_neg, atol=1e-4, rtol=1e-6)
    assert torch.equal(st_d.n.cpu(), st_h.n)


def test_runs_on_the_current_stream():
    B, V = 64, 50000
    zs = [R.randn(B, V, seed=s).cuda() for s in (4, 5, 6)]
    ref = lmfuse.combine_logits(**lmfuse.eft(*zs), temperature=0.7, seeds=list(range(B)))
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        # produced and consumed on s, no host sync in between
        zz = [z * 1.0 for z in zs]
        out = lmfuse.combine_logits(**lmfuse.eft(*zz), temperature=0.7, seeds=list(range(B)))
        tok = out.tokens.long() + 0
    s.synchronize()
    assert torch.equal(tok.cpu(), ref.tokens.cpu().long())


@pytest.mark.parametrize("B,V", [(1, 128256), (8, 32000)])
def test_replays_from_a_cuda_graph(B, V):
    """torch.cuda.graph captures the call (it only enqueues kernels on torch's current stream; seeds
    and offsets given as device tensors, so nothing is copied from the host), and each replay reads
    the inputs' current values: after the logits and offsets change in place, a replay equals a
    direct call on the new values, bit for bit."""
    zs = [R.randn(B, V, seed=s, dtype=torch.bfloat16).cuda() for s in (21, 22, 23)]
    seeds = torch.arange(500, 500 + B, dtype=torch.int64, device="cuda")
    offsets = torch.zeros(B, dtype=torch.int64, device="cuda")

    def step():
        return lmfuse.combine_logits(**lmfuse.eft(*zs), temperature=0.8, top_p=0.9, seeds=seeds,
                                     offsets=offsets)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up outside the capture, as torch.cuda.graph asks
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    gen = torch.Generator(device="cuda").manual_seed(3)
    for _ in range(3):
        graph.replay()
        direct = step()
        torch.cuda.synchronize()
        assert torch.equal(captured.status, direct.status)
        assert torch.equal(captured.tokens, direct.tokens), (captured.tokens, direct.tokens)
        assert torch.equal(captured.lse, direct.lse)
        assert torch.equal(captured.token_logprob, direct.token_logprob)
        for z in zs:
            z.add_(torch.randn(z.shape, device="cuda", generator=gen).to(z.dtype))
        offsets.add_(1)


def test_nonfinite_rows_on_device():
    z = R.randn(4, 100, seed=1)
    z[1, 3] = math.nan
    z[2] = -math.inf
    r = lmfuse.combine_logits([z.cuda()], temperature=0.5, seeds=[1, 2, 3, 4])
    assert r.status.cpu().tolist() == [0, 2, 1, 0] and r.tokens.cpu()[1:3].tolist() == [-1, -1]


def test_verify_draft_matches_cpu():
    S, L, V = 32, 3, 1000
    zs = [R.randn(S * (L + 1), V, seed=s) for s in (1, 2, 3)]
    g = torch.Generator().manual_seed(0)
    d = torch.randint(0, V, (S, L), generator=g, dtype=torch.int32)
    seeds = torch.arange(S, dtype=torch.int64)            # per sequence
    h = lmfuse.verify_draft(lmfuse.eft(*zs)["models"], d, draft_model=1, temperature=1.0,
                            seeds=seeds)
    dv = lmfuse.verify_draft(cuda(lmfuse.eft(*zs)["models"]), d.cuda(), draft_model=1,
                             temperature=1.0, seeds=seeds.cuda())
    torch.cuda.synchronize()
    assert torch.equal(dv.accepted.cpu(), h.accepted)
    assert torch.equal(dv.next_token.cpu(), h.next_token)


def test_device_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="one device"):
        lmfuse.combine_logits([torch.zeros(1, 5), torch.zeros(1, 5, device="cuda")],
                              temperature=0)
