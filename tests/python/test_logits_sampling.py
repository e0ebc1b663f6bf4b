"""Sampling through the bindings: determinism (a row's token depends only on its own inputs, seed
and offset: not on batch position, batch size, other rows or thread count), the statistics of the
Gumbel-max sampler (token frequencies against p within 5 sigma, chi-square), and speculative
verification (verify_draft: the spec's T10 acceptance and the emitted tokens' distribution)."""

import math

import pytest
import torch

import lmfuse

import _logits_reference as R


def t(values):
    return torch.tensor(values, dtype=torch.float32)


ZL, ZSF, ZSB = t([2, 1, 0.5, -1, 0]), t([1, 3, 0, -2, 0.5]), t([1.5, 1, 0.5, -1, 0])
P_T1 = [0.163857, 0.734354, 0.036561, 0.004948, 0.060279]


def check_frequencies(tokens, p, what, sigmas=5.0, chi2_max=None):
    """Counts of each token against N p: within ``sigmas`` binomial sigmas, tokens with p = 0
    never drawn, and (if chi2_max) the chi-square statistic over tokens with p > 0 below it."""
    tokens = tokens.cpu().long()
    n = tokens.numel()
    counts = torch.bincount(tokens, minlength=len(p)).double()
    p = torch.tensor(p, dtype=torch.float64)
    exp = n * p
    sd = torch.sqrt(n * p * (1 - p))
    for v in range(len(p)):
        if p[v] == 0:
            assert counts[v] == 0, "%s: token %d has p = 0 but was drawn %d times" % (
                what, v, counts[v])
        else:
            assert abs(counts[v] - exp[v]) <= sigmas * sd[v], \
                "%s: token %d drawn %d times, expected %.1f +- %.1f" % (what, v, counts[v],
                                                                      exp[v], sd[v])
    if chi2_max is not None:
        nz = p > 0
        chi2 = (((counts - exp) ** 2)[nz] / exp[nz]).sum().item()
        assert chi2 < chi2_max, "%s: chi-square %.2f >= %.2f" % (what, chi2, chi2_max)


def one_row_models(n, zs=(ZL, ZSF, ZSB), coeffs=(1.0, 1.0, -1.0)):
    """The T1 models as single rows read by n output rows (row_index: no n x V copy)."""
    idx = torch.zeros(n, dtype=torch.int32)
    return [lmfuse.LogitsInput(z, c, row_index=idx) for z, c in zip(zs, coeffs)]


# chi-square with 4 degrees of freedom exceeds 35.0 with probability ~ 4.6e-7
CHI2_4DOF = 35.0


def test_statistics_over_seeds():
    n = 1_000_000
    r = lmfuse.combine_logits(one_row_models(n), temperature=1.0,
                              seeds=torch.arange(n, dtype=torch.int64), validate_indices=False)
    assert (r.status == 0).all()
    check_frequencies(r.tokens, P_T1, "T1 over seeds", chi2_max=CHI2_4DOF)
    torch.testing.assert_close(r.token_logprob[:5].double(),
                               torch.log(torch.tensor(P_T1, dtype=torch.float64))[
                                   r.tokens[:5].long()], atol=1e-5, rtol=0)


def test_statistics_over_offsets():
    """One seed, the offset advancing as a decoding loop advances it."""
    n = 400_000
    r = lmfuse.combine_logits(one_row_models(n), temperature=1.0, seeds=12345,
                              offsets=torch.arange(n, dtype=torch.int64), validate_indices=False)
    check_frequencies(r.tokens, P_T1, "T1 over offsets", chi2_max=CHI2_4DOF)


def test_statistics_with_temperature_and_filters():
    n = 400_000
    p9 = [0.101138, 0.862077, 0.011865, 0.000681, 0.024238]
    r = lmfuse.combine_logits(one_row_models(n), temperature=0.7,
                              seeds=torch.arange(n, dtype=torch.int64), validate_indices=False)
    check_frequencies(r.tokens, p9, "T9 T=0.7", chi2_max=CHI2_4DOF)
    r = lmfuse.combine_logits(one_row_models(n), temperature=0.7, top_p=0.9,
                              seeds=torch.arange(n, dtype=torch.int64), validate_indices=False)
    check_frequencies(r.tokens, [0.105001, 0.894999, 0, 0, 0], "T9 top-p 0.9")
    r = lmfuse.combine_logits(one_row_models(n), temperature=0.7, top_k=3,
                              seeds=torch.arange(n, dtype=torch.int64), validate_indices=False)
    keep = torch.tensor([p9[0], p9[1], 0, 0, p9[4]])
    check_frequencies(r.tokens, (keep / keep.sum()).tolist(), "T9 top-k 3")


def test_statistics_larger_vocab():
    """V = 64, a random distribution; 200k draws over seeds (5 sigma per token)."""
    n, V = 200_000, 64
    z = R.randn(1, V, seed=7, scale=1.0)[0]
    p = torch.softmax(z.double(), 0).tolist()
    r = lmfuse.combine_logits([lmfuse.LogitsInput(z, row_index=torch.zeros(n, dtype=torch.int32))],
                              temperature=1.0, seeds=torch.arange(n, dtype=torch.int64) * 7 + 3,
                              validate_indices=False)
    check_frequencies(r.tokens, p, "V=64")


def _batch(B, V, seed):
    return [R.randn(B, V, seed=seed + i) for i in range(3)]


def test_same_seed_offset_same_token_whatever_the_batch():
    B, V = 32, 2000
    zs = _batch(B, V, 10)
    seeds = torch.arange(1000, 1000 + B, dtype=torch.int64)
    offsets = torch.arange(B, dtype=torch.int64) * 3
    kw = dict(temperature=1.0, top_p=0.95)
    full = lmfuse.combine_logits(**lmfuse.eft(*zs), seeds=seeds, offsets=offsets, **kw)
    again = lmfuse.combine_logits(**lmfuse.eft(*zs), seeds=seeds, offsets=offsets, **kw)
    assert torch.equal(full.tokens, again.tokens)
    # another batch order
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(0))
    p = lmfuse.combine_logits(**lmfuse.eft(*[z[perm] for z in zs]), seeds=seeds[perm],
                              offsets=offsets[perm], **kw)
    assert torch.equal(p.tokens, full.tokens[perm])
    # alone, and in smaller batches
    for b in (0, 5, B - 1):
        one = lmfuse.combine_logits(**lmfuse.eft(*[z[b] for z in zs]), seeds=[int(seeds[b])],
                                    offsets=[int(offsets[b])], **kw)
        assert one.tokens.item() == full.tokens[b].item()
    sub = lmfuse.combine_logits(**lmfuse.eft(*[z[3:10] for z in zs]), seeds=seeds[3:10],
                                offsets=offsets[3:10], **kw)
    assert torch.equal(sub.tokens, full.tokens[3:10])
    # other rows' parameters and inputs changed: even rows untouched keep their tokens
    odd = torch.arange(B) % 2 == 1
    zs2 = [z.clone() for z in zs]
    zs2[0][odd] = torch.randn(int(odd.sum()), V)
    zs2[1][1, 5] = math.nan
    temps = torch.where(odd, torch.full((B,), 0.3), torch.ones(B))
    other = lmfuse.combine_logits(**lmfuse.eft(*zs2), seeds=seeds, offsets=offsets,
                                  temperature=temps, top_p=0.95)
    assert other.status[1].item() == lmfuse.logits.ROW_NONFINITE
    assert torch.equal(other.tokens[~odd], full.tokens[~odd])
    # the offset changes the noise: over steps a flat row does not repeat one token
    flat = torch.zeros(1, 1000)
    toks = {lmfuse.combine_logits([flat], temperature=1.0, seeds=[42], offsets=[k]).tokens.item()
            for k in range(20)}
    assert len(toks) > 10
    # and so does the seed; greedy ignores both
    toks = {lmfuse.combine_logits([flat], temperature=1.0, seeds=[k]).tokens.item()
            for k in range(20)}
    assert len(toks) > 10
    g1 = lmfuse.combine_logits(**lmfuse.eft(*zs), temperature=0, seeds=seeds)
    g2 = lmfuse.combine_logits(**lmfuse.eft(*zs), temperature=0)
    assert torch.equal(g1.tokens, g2.tokens)


def test_same_token_whatever_the_thread_count():
    """The vocabulary split over threads (one big row and a batch) does not change the tokens."""
    zs = _batch(3, 152064, 20)
    seeds, offsets = [7, 8, 9], [1, 2, 3]
    results = []
    for threads in (1, 2, 3):
        with lmfuse.Context("cpu", cpu_threads=threads) as c:
            r = lmfuse.combine_logits(**lmfuse.eft(*zs), temperature=1.0, top_p=0.9,
                                      seeds=seeds, offsets=offsets, return_logprobs=True,
                                      context=c)
            results.append(r)
    for r in results[1:]:
        assert torch.equal(r.tokens, results[0].tokens)
        torch.testing.assert_close(r.logprobs, results[0].logprobs, atol=2e-6, rtol=0)


# ---- speculative verification (EFT up-scaling's speculative decoding) ------------------------------

def _draft(S, L, q, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(q.expand(S, -1), L, replacement=True, generator=g).to(torch.int32)


def test_T10_speculative_acceptance_statistics():
    S, L = 200_000, 1
    p = torch.softmax(ZL.double() + ZSF.double() - ZSB.double(), 0)
    q = torch.softmax(ZSF.double(), 0)
    acc_p, residual, total = R.speculative_accept(p, q)
    assert total.item() == pytest.approx(0.942377, abs=1e-6)
    torch.testing.assert_close(acc_p, torch.tensor([1, 0.935527, 0.935527, 0.935527, 0.935527],
                                                   dtype=torch.float64), atol=1e-6, rtol=0)
    d = _draft(S, L, q.float(), 0)
    rows = S * (L + 1)
    seeds = torch.arange(S, dtype=torch.int64)           # one per sequence
    r = lmfuse.verify_draft(one_row_models(rows), d, draft_model=1, temperature=1.0, seeds=seeds,
                            offsets=0, validate_indices=False)
    acc, nxt = r.accepted.long(), r.next_token.long()
    assert ((acc >= 0) & (acc <= L)).all() and ((nxt >= 0) & (nxt < 5)).all()
    d0 = d[:, 0].long()
    assert (acc[d0 == 0] == 1).all(), "p(0) > q(0): a drafted 0 is always accepted"
    # overall acceptance sum min(p, q), per drafted token min(1, p/q)
    rate = acc.double().mean().item()
    sd = math.sqrt(total.item() * (1 - total.item()) / S)
    assert abs(rate - total.item()) <= 5 * sd, (rate, total.item())
    for v in range(1, 5):
        sel = d0 == v
        m = int(sel.sum())
        if m > 1000:
            rv = acc[sel].double().mean().item()
            assert abs(rv - acc_p[v].item()) <= 5 * math.sqrt(acc_p[v] * (1 - acc_p[v]) / m), v
    # the correction comes from normalise(max(0, p - q)) = [1, 0, 0, 0, 0]
    assert (nxt[acc == 0] == 0).all()
    # what is emitted first is distributed as p; the bonus token too
    first = torch.where(acc >= 1, d0, nxt)
    check_frequencies(first, P_T1, "first emitted token")
    check_frequencies(nxt[acc == L], P_T1, "bonus token")


def test_verify_draft_exact_cases():
    # the draft model is the target: every draft token is accepted
    S, L = 50, 4
    z = R.randn(1, 20, seed=3)[0]
    rows = S * (L + 1)
    d = _draft(S, L, torch.softmax(z, 0), 1)
    idx = torch.zeros(rows, dtype=torch.int32)
    r = lmfuse.verify_draft([lmfuse.LogitsInput(z, row_index=idx)], d, draft_model=0,
                            temperature=1.0, seeds=torch.arange(S, dtype=torch.int64))
    assert (r.accepted == L).all() and (r.status == 0).all() and r.status.shape == (S,)
    # p is one token (top_k 1): drafts of any other token are rejected at once, the correction is
    # that token; drafts of it are accepted
    m = one_row_models(2 * 3)
    d = torch.tensor([[0, 1], [1, 1]], dtype=torch.int32)
    r = lmfuse.verify_draft(m, d, draft_model=1, temperature=1.0, top_k=1, seeds=5)
    assert r.accepted.tolist() == [0, 2] and r.next_token.tolist() == [1, 1]
    # deterministic for the same seeds
    d = _draft(64, 3, torch.softmax(ZSF, 0), 2)
    kw = dict(draft_model=1, temperature=1.0, seeds=torch.arange(64, dtype=torch.int64), offsets=9)
    a = lmfuse.verify_draft(one_row_models(256), d, **kw)
    b = lmfuse.verify_draft(one_row_models(256), d, **kw)
    assert torch.equal(a.accepted, b.accepted) and torch.equal(a.next_token, b.next_token)
    # a sequence's outcome depends on its own seed and rows only: sequence 5 alone
    c = lmfuse.verify_draft(one_row_models(4), d[5:6], draft_model=1, temperature=1.0,
                            seeds=[5], offsets=9)
    assert c.accepted.item() == a.accepted[5].item()
    assert c.next_token.item() == a.next_token[5].item()
    with pytest.raises(ValueError, match="for 64 sequences"):
        lmfuse.verify_draft(one_row_models(256), d, draft_model=1, temperature=1.0,
                            seeds=torch.arange(256, dtype=torch.int64))
    # greedy: accept iff the draft token is p's argmax (token 1 for T1)
    r = lmfuse.verify_draft(one_row_models(2 * 3), torch.tensor([[1, 1], [1, 4]],
                                                                dtype=torch.int32),
                            draft_model=1, temperature=0)
    assert r.accepted.tolist() == [2, 1] and r.next_token.tolist() == [1, 1]
    # a draft token outside the vocabulary ends its sequence with a status, next_token -1
    r = lmfuse.verify_draft(one_row_models(2 * 3), torch.tensor([[1, 9], [1, 1]],
                                                                dtype=torch.int32),
                            draft_model=1, temperature=1.0, seeds=[1, 2])
    assert r.status[0].item() != 0 and r.next_token[0].item() == -1 and r.accepted[0].item() == 1
    assert r.status[1].item() == 0 and r.accepted[1].item() == 2
