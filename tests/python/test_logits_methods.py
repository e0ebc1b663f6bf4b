"""lmfuse.combine_logits against the float64 PyTorch reference (tests/python/_logits_reference.py,
written from the spec) on every method of the spec's table and the spec's test vectors T1-T9:
log-probs and lse within 1e-5 in fp32, the masks equal, greedy tokens equal, sampled tokens inside
the surviving set; GeDi's filter and state over several decoding steps."""

import math

import pytest
import torch

import lmfuse

import _logits_reference as R
from _logits_reference import assert_matches

B, V = 8, 1000


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def both(kw, **call):
    """lmfuse's result and the reference's for the helper kwargs ``kw`` plus ``call`` (not for
    GeDi, whose state the call updates: see gedi_run)."""
    out = lmfuse.combine_logits(**kw, **call, return_logprobs=True)
    ref_kw = {k: v for k, v in dict(kw, **call).items() if k not in ("seeds", "offsets")}
    models = [m if isinstance(m, lmfuse.LogitsInput) else lmfuse.LogitsInput(m)
              for m in ref_kw.pop("models")]
    return out, R.combine(models, **ref_kw)


def rand3(seed, dtype=torch.float32, vocab=V, rows=B):
    return [R.randn(rows, vocab, seed=seed + i, dtype=dtype) for i in range(3)]


SAMPLING = [dict(temperature=0), dict(temperature=0.7, seeds=list(range(B)), offsets=3),
            dict(temperature=1.3, top_k=40, top_p=0.9, min_p=0.02, seeds=11)]


# ---- the spec's test vectors -----------------------------------------------------------------------

ZL, ZSF, ZSB = t([2, 1, 0.5, -1, 0]), t([1, 3, 0, -2, 0.5]), t([1.5, 1, 0.5, -1, 0])
T1 = {1.0: [-1.808763, -0.308763, -3.308763, -5.308763, -2.808763],
      0.5: [-1.018508, -0.768508, -2.518508, -4.268508, -2.518508],
      2.0: [-4.040233, -0.040233, -5.540233, -8.040233, -4.040233]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("beta", sorted(T1))
def test_T1_eft_proxy(beta, dtype):
    for log_softmax_inputs in (False, True):
        zs = [z.to(dtype) for z in (ZL, ZSF, ZSB)]
        if log_softmax_inputs:
            zs = [torch.log_softmax(z.float(), 0) for z in zs]
        r = lmfuse.combine_logits(**lmfuse.eft(*zs, beta=beta), temperature=0,
                                  return_logprobs=True)
        torch.testing.assert_close(r.logprobs[0], t(T1[beta]), atol=2e-6, rtol=0)
        assert r.tokens.item() == 1 and r.status.item() == lmfuse.logits.ROW_OK
        assert r.token_logprob.item() == pytest.approx(T1[beta][1], abs=2e-6)
        if beta == 1.0:
            torch.testing.assert_close(r.logprobs[0].exp(),
                                       t([0.163857, 0.734354, 0.036561, 0.004948, 0.060279]),
                                       atol=1e-6, rtol=0)
            if log_softmax_inputs:
                assert r.lse.item() == pytest.approx(-0.183782, abs=2e-6)
    # proxy-tuning's helper is the same call
    r = lmfuse.combine_logits(**lmfuse.proxy_tune(ZL, ZSF, ZSB, alpha=beta), temperature=0,
                              return_logprobs=True)
    torch.testing.assert_close(r.logprobs[0], t(T1[beta]), atol=2e-6, rtol=0)


def test_T2_interpolation():
    r = lmfuse.combine_logits(**lmfuse.eft(ZL, [ZSF, t([0, 0.5, 2.5, -1, 1])], ZSB,
                                           weights=[0.3, 0.7]), temperature=0,
                              return_logprobs=True)
    torch.testing.assert_close(r.logprobs[0], t([-1.844945, -1.394945, -0.894945, -3.944945,
                                                 -1.794945]), atol=2e-6, rtol=0)


def test_T3_contrastive():
    zE, zA = t([3, 2.5, 0, -1, 1]), t([3, 1, -2, -1, 2])
    r = lmfuse.combine_logits(**lmfuse.contrastive(zE, zA, st_coef=1.0, amateur_temperature=1.0,
                                                   alpha=0.1), temperature=0, return_logprobs=True)
    exp = t([-1.766368, -0.266368, -math.inf, -math.inf, -2.766368])
    torch.testing.assert_close(r.logprobs[0], exp, atol=2e-6, rtol=0)
    assert r.tokens.item() == 1
    r = lmfuse.combine_logits(**lmfuse.contrastive(zE, zA, st_coef=0.5, amateur_temperature=1.0,
                                                   expert_coeff=1.5), temperature=0,
                              return_logprobs=True)
    torch.testing.assert_close(r.logprobs[0], t([-0.861247, -0.611247, -math.inf, -math.inf,
                                                 -3.361247]), atol=2e-6, rtol=0)


def test_T4_dexperts():
    r = lmfuse.combine_logits(**lmfuse.dexperts(t([2, 1, 0.5, -1, 0]), t([1, 0, 2, -1, 0]),
                                                t([1, 2, 0, -1, 0]), alpha=2.0, nucleus_p=0.9),
                              temperature=0, return_logprobs=True)
    torch.testing.assert_close(r.logprobs[0], t([-2.589609, -7.589609, -0.089609, -math.inf,
                                                 -4.589609]), atol=2e-6, rtol=0)
    assert r.tokens.item() == 2


ZLM, ZPOS, ZNEG = t([2, 1.5, 1, 0, -1]), t([0, 1, 2, 0, -1]), t([1, 2, 0, 0, -1])


def t5_state():
    return lmfuse.GeDiState(t([-12.0]), t([-13.0]), torch.tensor([4], dtype=torch.int32))


def test_T5_gedi_step():
    # 5a: omega 30, filter_p 0.8, target_p 0.8: removes {0, 1, 3, 4}; greedy 2
    st = t5_state()
    r = lmfuse.combine_logits(**lmfuse.gedi(ZLM, ZPOS, ZNEG, st, omega=30, filter_p=0.8,
                                            target_p=0.8), temperature=0, return_logprobs=True)
    assert r.tokens.item() == 2
    assert torch.isinf(r.logprobs[0, [0, 1, 3, 4]]).all() and r.logprobs[0, 2].item() == 0.0
    assert st.L_pos.item() == pytest.approx(-12.523744, abs=2e-6)
    assert st.L_neg.item() == pytest.approx(-15.523744, abs=2e-6)
    assert st.n.item() == 5
    assert r.gedi_logp_desired.item() == pytest.approx(-0.437488, abs=2e-6)
    # 5c / 5d: omega 5, target_p 0.54, filter_p 0.5 and 0.58: both remove {0, 1} only
    for fp in (0.5, 0.58):
        st = t5_state()
        r = lmfuse.combine_logits(**lmfuse.gedi(ZLM, ZPOS, ZNEG, st, omega=5, filter_p=fp,
                                                target_p=0.54), temperature=0,
                                  return_logprobs=True)
        torch.testing.assert_close(r.logprobs[0].exp(), t([0, 0, 0.816077, 0.134458, 0.049464]),
                                   atol=1e-6, rtol=0)
        assert r.tokens.item() == 2 and st.n.item() == 5
        assert st.L_pos.item() == pytest.approx(-12.523744, abs=2e-6)
        assert r.gedi_logp_desired.item() == pytest.approx(-0.437488, abs=2e-6)
    # P(desired | v) through filter_p = 0 (no filter) and omega = 1: logprobs = l_LM + logP - lse
    st = t5_state()
    r = lmfuse.combine_logits(**lmfuse.gedi(ZLM, ZPOS, ZNEG, st, omega=1.0, filter_p=0.0),
                              temperature=0, return_logprobs=True)
    s = torch.log_softmax(ZLM.double(), 0) + torch.log(torch.tensor(
        [0.5, 0.5, 0.645656, 0.549834, 0.549834], dtype=torch.float64))
    torch.testing.assert_close(r.logprobs[0].double(), torch.log_softmax(s, 0), atol=3e-6, rtol=0)


def test_T6_gedi_empty_prefix():
    st = lmfuse.GeDiState.zeros(1)
    r = lmfuse.combine_logits(**lmfuse.gedi(ZLM, ZPOS, ZNEG, st, omega=1.0, filter_p=0.0),
                              temperature=0, return_logprobs=True)
    lpd = t([-1.313262, -1.313262, -0.126928, -0.693147, -0.693147])
    exp = torch.log_softmax(torch.log_softmax(ZLM, 0) + lpd, 0)
    torch.testing.assert_close(r.logprobs[0], exp, atol=3e-6, rtol=0)
    assert r.tokens.item() == 2
    assert r.gedi_logp_desired.item() == pytest.approx(-0.126928, abs=2e-6)
    assert st.n.item() == 1


def test_T7_nonfinite():
    zE, zA = t([1, 0.5, 0, 0.2]), t([0, 0, 0, -math.inf])
    r = lmfuse.combine_logits([zE, lmfuse.LogitsInput(zA, -1.0)], temperature=0,
                              return_logprobs=True)
    assert r.status.item() == lmfuse.logits.ROW_OK and r.logprobs[0, 3].item() == -math.inf
    assert r.tokens.item() == 0
    r = lmfuse.combine_logits([t([-math.inf] * 4)], temperature=0)
    assert r.status.item() == lmfuse.logits.ROW_ALL_MASKED and r.tokens.item() == -1
    for bad in (math.nan, math.inf):
        r = lmfuse.combine_logits([t([1, bad, 0, 0])], temperature=0)
        assert r.status.item() == lmfuse.logits.ROW_NONFINITE and r.tokens.item() == -1
        r = lmfuse.combine_logits([t([1, bad, 0, 0])], temperature=0.8, seeds=1)
        assert r.status.item() == lmfuse.logits.ROW_NONFINITE and r.tokens.item() == -1
    # a row's problem stays in that row
    z = R.randn(4, 30, seed=5)
    z[1, 7] = math.nan
    z[2] = -math.inf
    r = lmfuse.combine_logits([z], temperature=0.9, seeds=[1, 2, 3, 4], return_logprobs=True)
    assert r.status.tolist() == [0, 2, 1, 0] and r.tokens[1:3].tolist() == [-1, -1]
    assert_matches(r, R.combine([lmfuse.LogitsInput(z)], temperature=0.9), what="T7 rows")
    # -inf in a model with c = 0 does nothing; NaN there does nothing either (not used)
    r = lmfuse.combine_logits([zE, lmfuse.LogitsInput(t([math.nan] * 4), 0.0)], temperature=0)
    assert r.status.item() == lmfuse.logits.ROW_OK and r.tokens.item() == 0


def test_T8_large_row():
    Vb = 152064
    v = torch.arange(Vb, dtype=torch.float64)
    z = (8 * torch.sin(0.7 * v) + 0.1 * (v % 7)).to(torch.float32)
    z[123457] = 20.0
    r = lmfuse.combine_logits([z], temperature=0, return_logprobs=True)
    assert r.tokens.item() == 123457
    assert r.lse.item() == pytest.approx(20.169345619, abs=1e-4)
    assert r.logprobs[0, 123457].item() == pytest.approx(-0.169345619, abs=1e-4)
    assert r.logprobs[0, -1].item() == pytest.approx(-15.078889531, abs=1e-4)
    # the same row among others, and as row 3 of 4: the same result
    zz = torch.stack([z.roll(s) for s in (1, 2, 3)] + [z])
    rr = lmfuse.combine_logits([zz], temperature=0, return_logprobs=True)
    assert rr.tokens[3].item() == 123457 and torch.equal(rr.logprobs[3], r.logprobs[0])


T9_PROBS = [0.101138, 0.862077, 0.011865, 0.000681, 0.024238]


def test_T9_filters():
    base = lmfuse.eft(ZL, ZSF, ZSB)
    r = lmfuse.combine_logits(**base, temperature=0.7, seeds=0, return_logprobs=True)
    torch.testing.assert_close(r.logprobs[0].exp(), t(T9_PROBS), atol=1e-6, rtol=0)
    for kw, keep in ((dict(top_k=3), {0, 1, 4}), (dict(top_p=0.9), {0, 1}),
                     (dict(min_p=0.05), {0, 1})):
        r = lmfuse.combine_logits(**base, temperature=0.7, seeds=0, return_logprobs=True, **kw)
        got = set(torch.isfinite(r.logprobs[0]).nonzero().flatten().tolist())
        assert got == keep, kw
        p = t(T9_PROBS)
        mask = torch.tensor([i in keep for i in range(5)])
        torch.testing.assert_close(r.logprobs[0].exp(), torch.where(mask, p / p[mask].sum(),
                                                                    torch.zeros(5)),
                                   atol=1e-6, rtol=0)
        assert int(r.tokens) in keep


# ---- every method on random inputs -----------------------------------------------------------------

@pytest.mark.parametrize("samp", range(len(SAMPLING)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_eft_random(samp, dtype):
    for beta in (0.5, 1.0, 2.0):
        out, ref = both(lmfuse.eft(*rand3(10, dtype), beta=beta), **SAMPLING[samp])
        assert_matches(out, ref, greedy=samp == 0, what="eft beta %g" % beta)
    zs = rand3(20, dtype) + [R.randn(B, V, seed=99, dtype=dtype)]
    out, ref = both(lmfuse.eft(zs[0], [zs[1], zs[3]], zs[2], weights=[0.3, 0.7]), **SAMPLING[samp])
    assert_matches(out, ref, greedy=samp == 0, what="eft interpolation")


@pytest.mark.parametrize("samp", range(len(SAMPLING)))
def test_proxy_tuning_random_and_vocab_mismatch(samp):
    out, ref = both(lmfuse.proxy_tune(*rand3(30), alpha=1.0), **SAMPLING[samp])
    assert_matches(out, ref, greedy=samp == 0, what="proxy")
    # a padded expert (1024 columns, read up to vocab_out) and a narrower anti-expert (990: the
    # columns past its width are -inf for it, so -inf in s whatever the coefficient's sign)
    base = R.randn(B, V, seed=31)
    expert = R.randn(B, 1024, seed=32)
    anti = R.randn(B, 990, seed=33)
    out, ref = both(lmfuse.proxy_tune(base, expert, anti, alpha=1.5), vocab_out=V,
                    **SAMPLING[samp])
    assert_matches(out, ref, greedy=samp == 0, what="proxy vocab mismatch")
    assert torch.isinf(out.logprobs[:, 990:]).all()
    # proxy-tuning's own code truncates the expert to the base width: the same as vocab_out
    out2 = lmfuse.combine_logits(**lmfuse.proxy_tune(base, expert[:, :V], anti, alpha=1.5),
                                 vocab_out=V, return_logprobs=True, **SAMPLING[samp])
    assert torch.equal(out.logprobs, out2.logprobs) and torch.equal(out.tokens, out2.tokens)


@pytest.mark.parametrize("samp", range(len(SAMPLING)))
def test_contrastive_random(samp):
    e, a = R.randn(B, V, seed=40), R.randn(B, V, seed=41)
    for st_coef, tau, alpha in ((1.0, 0.5, 0.1), (0.8, 1.0, 0.01), (1.0, 0.5, 1.0)):
        out, ref = both(lmfuse.contrastive(e, a, st_coef=st_coef, amateur_temperature=tau,
                                           alpha=alpha), **SAMPLING[samp])
        assert_matches(out, ref, greedy=samp == 0, what="contrastive %g %g %g" % (st_coef, tau,
                                                                                 alpha))
    # the amateur's -inf (a token it cannot produce) is -inf in s too, not +inf
    a2 = a.clone()
    a2[:, :5] = -math.inf
    out, ref = both(lmfuse.contrastive(e, a2), **SAMPLING[samp])
    assert_matches(out, ref, greedy=samp == 0, what="contrastive -inf amateur")
    assert torch.isinf(out.logprobs[:, :5]).all()


@pytest.mark.parametrize("samp", range(len(SAMPLING)))
def test_dexperts_random(samp):
    for alpha, p in ((2.0, 0.9), (3.2, 0.5), (1.0, 1.0)):
        out, ref = both(lmfuse.dexperts(*rand3(50), alpha=alpha, nucleus_p=p), **SAMPLING[samp])
        assert_matches(out, ref, greedy=samp == 0, what="dexperts %g %g" % (alpha, p))


@pytest.mark.parametrize("samp", range(len(SAMPLING)))
def test_cfg_and_disalignment_random(samp):
    c, u = R.randn(B, V, seed=60), R.randn(B, V, seed=61)
    for gamma in (1.0, 1.5, 3.0):
        out, ref = both(lmfuse.cfg(c, u, gamma=gamma), **SAMPLING[samp])
        assert_matches(out, ref, greedy=samp == 0, what="cfg %g" % gamma)
    out, ref = both(lmfuse.emulated_disalignment(c, u, alpha=0.3), **SAMPLING[samp])
    assert_matches(out, ref, greedy=samp == 0, what="ed")


def test_filters_and_bias_random():
    zs = rand3(70)
    for kw in (dict(top_k=1), dict(top_k=5), dict(top_k=V + 3), dict(top_p=0.5),
               dict(top_p=0.999), dict(min_p=0.1), dict(min_p=1.0),
               dict(top_k=50, top_p=0.8, min_p=0.05), dict(temperature=0.3, top_p=0.7),
               dict(temperature=2.5, top_k=200)):
        kw = dict(dict(temperature=1.0, seeds=list(range(B))), **kw)
        out, ref = both(lmfuse.eft(*zs), **kw)
        assert_matches(out, ref, what="filters %s" % kw)
    bias1 = R.randn(1, V, seed=71)[0]
    bias2 = R.randn(B, V, seed=72)
    bias2[:, 100:110] = -math.inf     # a bias can ban tokens
    for bias in (bias1, bias2):
        for samp in SAMPLING:
            out, ref = both(lmfuse.eft(*zs), bias=bias, **samp)
            assert_matches(out, ref, greedy=samp["temperature"] == 0, what="bias")
    # a strided [B, V] bias (every other row of a bigger one)
    big = R.randn(2 * B, V, seed=73)
    out, ref = both(lmfuse.eft(*zs), bias=big[::2], temperature=0)
    assert_matches(out, ref, greedy=True, what="strided bias")


def test_sparse_rows_random():
    """Top-k rows of a black-box model (ids + values, a fill for the rest) against the dense row
    the reference builds from them."""
    base, exp = R.randn(B, V, seed=80), R.randn(B, V, seed=81)
    vals, idx = torch.topk(torch.log_softmax(exp, 1), 5, dim=1)
    sp = lmfuse.SparseLogitsInput(idx, vals, fill=-50000.0, coeff=1.0)
    for samp in SAMPLING:
        out, ref = both({"models": [base, sp]}, **samp)
        assert_matches(out, ref, greedy=samp["temperature"] == 0, what="sparse")
    # the dense equivalent
    dense = torch.full((B, V), -50000.0)
    dense.scatter_(1, idx, vals)
    a = lmfuse.combine_logits([base, sp], temperature=0, return_logprobs=True)
    b = lmfuse.combine_logits([base, dense], temperature=0, return_logprobs=True)
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
    # int32 ids, a 1-D sparse row broadcast by row_index, and a bad id in one row
    sp1 = lmfuse.SparseLogitsInput(idx[0].int(), vals[0], fill=-50000.0, vocab=V,
                                   row_index=torch.zeros(B, dtype=torch.int32))
    out, ref = both({"models": [base, sp1]}, temperature=0)
    assert_matches(out, ref, greedy=True, what="sparse row_index")
    bad_idx = idx.clone()
    bad_idx[3, 2] = V + 7
    out = lmfuse.combine_logits([base, lmfuse.SparseLogitsInput(bad_idx, vals)], temperature=0)
    assert out.status[3].item() == lmfuse.logits.ROW_BAD_INDEX and out.tokens[3].item() == -1
    assert (out.status[torch.arange(B) != 3] == 0).all()


def test_per_model_temperature_and_row_coefficients():
    zs = rand3(90)
    models = [lmfuse.LogitsInput(zs[0], 1.0, temperature=0.7),
              lmfuse.LogitsInput(zs[1], coeff_rows=torch.linspace(0, 1, B)),
              lmfuse.LogitsInput(zs[2], -0.5, temperature=2.0)]
    for samp in SAMPLING:
        out, ref = both({"models": models}, **samp)
        assert_matches(out, ref, greedy=samp["temperature"] == 0, what="tau/coeff_rows")
    temps = torch.tensor([0.0, 0.5, 1.0, 2.0, 0.7, 0.0, 1.1, 0.9])
    out, ref = both({"models": models}, temperature=temps, seeds=list(range(B)))
    assert_matches(out, ref, what="temperature_rows")
    assert torch.equal(out.tokens[temps == 0], ref["greedy"][temps == 0].int())


# ---- GeDi over several steps -----------------------------------------------------------------------

def gedi_run(steps, B_, V_, params, sampling, seed, dtype=torch.float32):
    """``steps`` GeDi decoding steps on fresh random logits each step; at each step lmfuse and the
    reference are compared, then the reference state is advanced with lmfuse's token and compared
    with lmfuse's updated state."""
    st = lmfuse.GeDiState.zeros(B_)
    ref_state = (torch.zeros(B_, dtype=torch.float64), torch.zeros(B_, dtype=torch.float64),
                 torch.zeros(B_, dtype=torch.int64))
    for step in range(steps):
        zlm = R.randn(B_, V_, seed=seed + 3 * step, scale=2.0, dtype=dtype)
        zp = R.randn(B_, V_, seed=seed + 3 * step + 1, scale=1.0, dtype=dtype)
        zn = R.randn(B_, V_, seed=seed + 3 * step + 2, scale=1.0, dtype=dtype)
        before = st.clone()
        kw = lmfuse.gedi(zlm, zp, zn, st, **params)
        call = dict(sampling)
        if "offsets" in call:
            call["offsets"] = call["offsets"] + step
        out = lmfuse.combine_logits(**kw, **call, return_logprobs=True)
        g = dict(pos=1, neg=2, L_pos=before.L_pos, L_neg=before.L_neg, n=before.n, **params)
        ref = R.combine(kw["models"], gedi=g, **{k: v for k, v in sampling.items()
                                                   if k not in ("seeds", "offsets")})
        # the state lmfuse read is the one the reference advanced (float32 vs float64)
        torch.testing.assert_close(before.L_pos.double(), ref_state[0], atol=2e-5, rtol=1e-6)
        torch.testing.assert_close(before.L_neg.double(), ref_state[1], atol=2e-5, rtol=1e-6)
        assert torch.equal(before.n.long(), ref_state[2])
        assert_matches(out, ref, greedy=sampling.get("temperature", 1.0) == 0,
                       atol=2e-5, rtol=2e-6, what="gedi step %d" % step)
        Lp, Ln, n, lpd = R.gedi_update(ref, g, out.tokens, out.status)
        ok = out.status == 0
        torch.testing.assert_close(out.gedi_logp_desired[ok].double(), lpd[ok], atol=2e-5,
                                   rtol=1e-6)
        torch.testing.assert_close(st.L_pos.double(), Lp, atol=2e-5, rtol=1e-6)
        torch.testing.assert_close(st.L_neg.double(), Ln, atol=2e-5, rtol=1e-6)
        assert torch.equal(st.n.long(), n)
        ref_state = (Lp, Ln, n)
    return st


@pytest.mark.parametrize("params", [
    dict(),                                                        # GeDi's defaults (30, 0.8, 0.8)
    dict(omega=5.0, filter_p=0.5, target_p=0.54),
    dict(omega=10.0, filter_p=0.0),                                # no class filter
    dict(omega=30.0, class_bias=2.0, logit_scale=1.5, bias_pos=0.1, bias_neg=-0.2),
])
def test_gedi_several_steps_greedy(params):
    gedi_run(6, 4, 300, params, dict(temperature=0), seed=100)


@pytest.mark.parametrize("params", [dict(), dict(omega=5.0, filter_p=0.5, target_p=0.54)])
def test_gedi_several_steps_sampled(params):
    gedi_run(6, 4, 300, params, dict(temperature=0.8, top_p=0.95, seeds=[5, 6, 7, 8],
                                     offsets=torch.zeros(4, dtype=torch.int64)), seed=200)


def test_gedi_bf16_and_filter_removes():
    st = gedi_run(4, 3, 500, dict(), dict(temperature=0), seed=300, dtype=torch.bfloat16)
    assert st.n.tolist() == [4, 4, 4]
    # with the defaults the class filter really removes tokens on these inputs
    zlm, zp, zn = R.randn(3, 500, seed=1), R.randn(3, 500, seed=2), R.randn(3, 500, seed=3)
    on = lmfuse.combine_logits(**lmfuse.gedi(zlm, zp, zn, lmfuse.GeDiState.zeros(3)),
                               temperature=0, return_logprobs=True)
    off = lmfuse.combine_logits(**lmfuse.gedi(zlm, zp, zn, lmfuse.GeDiState.zeros(3),
                                              filter_p=0.0), temperature=0, return_logprobs=True)
    assert torch.isinf(on.logprobs).sum() > 0 and torch.isinf(off.logprobs).sum() == 0


def test_gedi_rows_with_bad_status_keep_their_state():
    zlm = R.randn(3, 50, seed=4)
    zlm[1, 3] = math.nan
    st = lmfuse.GeDiState(t([-1.0, -2.0, -3.0]), t([-1.5, -2.5, -3.5]),
                          torch.tensor([1, 2, 3], dtype=torch.int32))
    out = lmfuse.combine_logits(**lmfuse.gedi(zlm, R.randn(3, 50, seed=5), R.randn(3, 50, seed=6),
                                              st), temperature=0)
    assert out.status.tolist() == [0, 2, 0]
    assert st.L_pos[1].item() == -2.0 and st.L_neg[1].item() == -2.5 and st.n[1].item() == 2
    assert st.n.tolist() == [2, 2, 4]


@pytest.mark.parametrize("extra", [dict(bias="rand"), dict(nucleus=(3, 0.7)),
                                   dict(plausibility=(3, 0.05)),
                                   dict(temperature=0.5, top_p=0.8, seeds=1)])
def test_gedi_with_bias_masks_and_filters(extra):
    """GeDi's class filter walks softmax(s) with the bias and the other masks already in s (the
    spec's order: combine, masks, then T and the filters)."""
    B_, V_ = 4, 300
    zs = [R.randn(B_, V_, seed=s) for s in (1, 2, 3, 4)]
    extra = dict(extra)
    if extra.get("bias") == "rand":
        extra["bias"] = R.randn(1, V_, seed=9)[0]
    st = lmfuse.GeDiState(torch.full((B_,), -5.0), torch.full((B_,), -6.0),
                          torch.full((B_,), 3, dtype=torch.int32))
    snap = st.clone()
    models = [lmfuse.LogitsInput(zs[0])] + [lmfuse.LogitsInput(z, 0.0) for z in zs[1:]]
    kw = dict(dict(temperature=0), **extra)
    out = lmfuse.combine_logits(models, gedi=lmfuse.GeDi(1, 2, st), return_logprobs=True, **kw)
    kw.pop("seeds", None)
    ref = R.combine(models, gedi=dict(pos=1, neg=2, L_pos=snap.L_pos, L_neg=snap.L_neg,
                                      n=snap.n), **kw)
    assert_matches(out, ref, greedy=kw["temperature"] == 0, atol=2e-5, what=str(sorted(extra)))
