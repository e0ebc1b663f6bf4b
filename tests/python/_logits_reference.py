"""Plain-PyTorch float64 reference of lmfuse's logit combination, written from
specs/logit-combination.md (not from the C code): one function per stage, vectorised over rows.

    x_k(v) = z_k(v) / tau_k               (v >= V_k: -inf; sparse rows: fill, then the given ids)
    s(v)   = sum_k c_k x_k(v) [+ omega logP(desired | v)] [+ bias(v)]
             with s(v) = -inf wherever x_k(v) = -inf for a model with c_k != 0
    masks: plausibility (x_m >= max x_m + log alpha), nucleus of model m (smallest top-p set of
           softmax(x_m)), GeDi's class filter (on softmax(s), ascending P(desired), then token id)
    y = s / T (T = 0: greedy; the distribution then uses T = 1), top-k, top-p (smallest set with
    mass >= p), min-p (p(v) >= min_p * p_max); logprobs = y - LSE(y) over the survivors.

GeDi (salesforce/GeDi modeling_utils.py, as the spec transcribes it), per row with state (L_pos,
L_neg, n):  t = n + 1;  g_c = L_c + log_softmax(z_c);  l_c = logit_scale * g_c / t + bias_c
(+ class_bias on the desired class);  logP(desired | v) = -softplus(l_neg - l_pos);  the class
filter compares that logP with log target_p', target_p' = sigmoid(logit(target_p) + class_bias);
after token y: L_c += log_softmax(z_c)(y), n += 1.

The model arguments are duck-typed (``logits``, ``coeff``, ``temperature``, ``row_index``,
``coeff_rows``; sparse ones add ``sparse = True``, ``indices``, ``fill``, ``vocab``), so the
``lmfuse.LogitsInput`` objects a test builds serve both lmfuse and this reference. Everything
returned is float64 on the CPU.
"""

import math

import torch
import torch.nn.functional as F

ROW_OK, ROW_ALL_MASKED, ROW_NONFINITE, ROW_BAD_INDEX = 0, 1, 2, 3
NEG_INF = float("-inf")


def _rows(t, row_index, num_rows):
    t = t.detach().to("cpu", torch.float64)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if row_index is not None:
        return t[row_index.detach().to("cpu", torch.int64).reshape(-1)]
    if t.shape[0] == 1 and num_rows > 1:
        return t.expand(num_rows, -1)
    return t


def num_rows_of(models):
    m = models[0]
    if m.row_index is not None:
        return int(m.row_index.numel())
    t = m.logits
    return 1 if t.dim() == 1 else int(t.shape[0])


def model_x(m, num_rows, vocab_out):
    """x_k as [B, vocab_out] float64 (-inf beyond the model's vocabulary), and a bool [B] of rows
    with an id outside [0, vocab_out) (sparse models only)."""
    bad = torch.zeros(num_rows, dtype=torch.bool)
    tau = float(m.temperature)
    x = torch.full((num_rows, vocab_out), NEG_INF, dtype=torch.float64)
    if getattr(m, "sparse", False):
        vals = _rows(m.logits, m.row_index, num_rows)
        idx = m.indices.detach().to("cpu", torch.int64)
        if idx.dim() == 1:
            idx = idx.unsqueeze(0)
        if m.row_index is not None:
            idx = idx[m.row_index.detach().to("cpu", torch.int64).reshape(-1)]
        elif idx.shape[0] == 1 and num_rows > 1:
            idx = idx.expand(num_rows, -1)
        vocab = int(m.vocab if m.vocab is not None else vocab_out)
        width = min(vocab, vocab_out)
        x[:, :width] = float(m.fill) / tau
        bad = ((idx < 0) | (idx >= vocab_out)).any(dim=1)
        safe = idx.clamp(0, vocab_out - 1)
        for b in range(num_rows):
            if not bad[b]:
                x[b, safe[b]] = vals[b] / tau
    else:
        z = _rows(m.logits, m.row_index, num_rows)
        width = min(z.shape[1], vocab_out)
        x[:, :width] = z[:, :width] / tau
    return x, bad


def _coeff_rows(m, num_rows):
    if m.coeff_rows is not None:
        return m.coeff_rows.detach().to("cpu", torch.float64).reshape(-1)
    return torch.full((num_rows,), float(m.coeff), dtype=torch.float64)


def _sorted_order(key, descending):
    """Indices sorting each row by key (descending or ascending), ties by ascending token id."""
    _, order = torch.sort(key, dim=1, descending=descending, stable=True)  # stable: id order
    return order


def nucleus_keep(logits, p):
    """bool [B, V]: the smallest set of top tokens of softmax(logits) with mass >= p (HF/vLLM):
    token kept iff the mass of the tokens ranked strictly before it is < p."""
    probs = torch.softmax(logits, dim=1)
    order = _sorted_order(probs, descending=True)
    sp = probs.gather(1, order)
    before = torch.cumsum(sp, dim=1) - sp
    keep_sorted = before < p
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(1, order, keep_sorted)
    return keep & torch.isfinite(logits)


def gedi_logp_desired(x_pos, x_neg, L_pos, L_neg, n, logit_scale=1.0, bias_pos=0.0, bias_neg=0.0,
                      class_bias=0.0):
    """logP(desired | v) [B, V] and the two log-softmax rows (for the state update)."""
    lp = torch.log_softmax(x_pos, dim=1)
    ln = torch.log_softmax(x_neg, dim=1)
    t = (n.to(torch.float64) + 1.0).unsqueeze(1)
    l_pos = logit_scale * (L_pos.to(torch.float64).unsqueeze(1) + lp) / t + bias_pos + class_bias
    l_neg = logit_scale * (L_neg.to(torch.float64).unsqueeze(1) + ln) / t + bias_neg
    return -F.softplus(l_neg - l_pos), lp, ln


def gedi_target(target_p, class_bias=0.0):
    """The spec: "class_bias maps to target_p' = sigmoid(logit(target_p) + class_bias)" (GeDi's
    generate_GeDi.py adjusts target_p so before calling generate, whose filter then compares the
    class-biased P(desired) with it; 2.0 turns 0.8 into 0.967273)."""
    if class_bias == 0 or target_p >= 1.0:
        return target_p
    return 1.0 / (1.0 + math.exp(-(math.log(target_p / (1.0 - target_p)) + class_bias)))


def gedi_filter_remove(s, logp_desired, filter_p, target_p, class_bias=0.0):
    """bool [B, V]: tokens GeDi's class filter removes. Walk ascending P(desired), then ascending
    token id; remove a token while the cumulative softmax(s) mass walked so far (this token
    included) is < filter_p and its P(desired) (class_bias included) < target_p' (gedi_target)."""
    if filter_p == 0:
        return torch.zeros_like(s, dtype=torch.bool)
    probs = torch.softmax(s, dim=1)
    order = _sorted_order(logp_desired, descending=False)
    cum = torch.cumsum(probs.gather(1, order), dim=1)
    thr = math.log(gedi_target(target_p, class_bias))
    rm_sorted = (cum < filter_p) & (logp_desired.gather(1, order) < thr)
    rm = torch.zeros_like(rm_sorted)
    rm.scatter_(1, order, rm_sorted)
    return rm


def combine(models, *, vocab_out=None, plausibility=None, nucleus=None, bias=None, gedi=None,
            temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """The reference of lmfuse.combine_logits (same keyword arguments; ``plausibility`` and
    ``nucleus`` as (model index, value); ``gedi`` a dict: pos, neg (indices), L_pos, L_neg, n
    (tensors [B]), omega, logit_scale, bias_pos, bias_neg, class_bias, filter_p, target_p).

    Returns a dict of float64/int64 CPU tensors: s (combined and masked, before T), logprobs
    [B, V] (-inf masked), lse [B], status [B], greedy [B] (argmax, lowest id on ties; -1 when the
    row's status is not OK), logp_desired [B, V] (GeDi) and, for GeDi, lp_pos / lp_neg (the two
    log-softmax rows for the state update).
    """
    B = num_rows_of(models)
    if vocab_out is None:
        vocab_out = int(models[0].logits.shape[-1])
    V = vocab_out
    status = torch.zeros(B, dtype=torch.int64)
    xs, bads = [], []
    for m in models:
        x, bad = model_x(m, B, V)
        xs.append(x)
        bads.append(bad)
    used = [_coeff_rows(m, B) for m in models]  # [B] coefficient per model
    s = torch.zeros(B, V, dtype=torch.float64)
    nonfinite = torch.zeros(B, dtype=torch.bool)
    mask_models = set()
    if plausibility is not None:
        mask_models.add(plausibility[0])
    if nucleus is not None:
        mask_models.add(nucleus[0])
    if gedi is not None:
        mask_models.update((gedi["pos"], gedi["neg"]))
    for k, (x, c) in enumerate(zip(xs, used)):
        active = (c != 0).unsqueeze(1)
        bad_vals = torch.isnan(x) | (x == float("inf"))
        rows_using = active.squeeze(1) | (k in mask_models)
        nonfinite |= bad_vals.any(dim=1) & rows_using
        contrib = torch.where(torch.isfinite(x), c.unsqueeze(1) * x, torch.zeros_like(x))
        s = s + torch.where(active, contrib, torch.zeros_like(x))
        s = torch.where(active & (x == NEG_INF), torch.full_like(s, NEG_INF), s)
    logp_desired = lp_pos = lp_neg = None
    if gedi is not None:
        logp_desired, lp_pos, lp_neg = gedi_logp_desired(
            xs[gedi["pos"]], xs[gedi["neg"]], gedi["L_pos"], gedi["L_neg"], gedi["n"],
            gedi.get("logit_scale", 1.0), gedi.get("bias_pos", 0.0), gedi.get("bias_neg", 0.0),
            gedi.get("class_bias", 0.0))
        s = s + gedi.get("omega", 30.0) * logp_desired
    if bias is not None:
        bb = bias.detach().to("cpu", torch.float64)
        if torch.isnan(bb).any() or (bb == float("inf")).any():
            nonfinite |= (torch.isnan(bb) | (bb == float("inf"))).reshape(-1, V).any(dim=1)
        s = s + (bb.unsqueeze(0) if bb.dim() == 1 else bb)
    if plausibility is not None:
        m, alpha = plausibility
        xm = xs[m]
        thr = xm.max(dim=1, keepdim=True).values + math.log(alpha)
        s = torch.where(xm >= thr, s, torch.full_like(s, NEG_INF))
    if nucleus is not None:
        m, p = nucleus
        s = torch.where(nucleus_keep(xs[m], p), s, torch.full_like(s, NEG_INF))
    if gedi is not None:
        rm = gedi_filter_remove(s, logp_desired, gedi.get("filter_p", 0.8),
                                gedi.get("target_p", 0.8), gedi.get("class_bias", 0.0))
        s = torch.where(rm, torch.full_like(s, NEG_INF), s)
    s_masked = s.clone()

    if isinstance(temperature, torch.Tensor):
        T = temperature.detach().to("cpu", torch.float64).reshape(-1)
    else:
        T = torch.full((B,), float(temperature), dtype=torch.float64)
    Teff = torch.where(T == 0, torch.ones_like(T), T)
    y = s / Teff.unsqueeze(1)
    if top_k and top_k > 0 and top_k < V:
        order = _sorted_order(y, descending=True)
        keep_sorted = torch.zeros_like(y, dtype=torch.bool)
        keep_sorted[:, :top_k] = True
        keep = torch.zeros_like(keep_sorted)
        keep.scatter_(1, order, keep_sorted)
        y = torch.where(keep, y, torch.full_like(y, NEG_INF))
    if top_p < 1.0:
        y = torch.where(nucleus_keep(y, top_p), y, torch.full_like(y, NEG_INF))
    if min_p > 0.0:
        probs = torch.softmax(y, dim=1)
        pmax = probs.max(dim=1, keepdim=True).values
        y = torch.where(probs >= min_p * pmax, y, torch.full_like(y, NEG_INF))
    finite_any = torch.isfinite(y).any(dim=1)
    lse = torch.logsumexp(y, dim=1)
    logprobs = y - lse.unsqueeze(1)
    greedy = torch.argmax(y, dim=1)  # first maximum: the lowest id
    status = torch.where(~finite_any, torch.full_like(status, ROW_ALL_MASKED), status)
    status = torch.where(nonfinite, torch.full_like(status, ROW_NONFINITE), status)
    status = torch.where(torch.stack(bads).any(dim=0), torch.full_like(status, ROW_BAD_INDEX),
                         status)
    greedy = torch.where(status == ROW_OK, greedy, torch.full_like(greedy, -1))
    return {"s": s_masked, "logprobs": logprobs, "lse": lse, "status": status, "greedy": greedy,
            "logp_desired": logp_desired, "lp_pos": lp_pos, "lp_neg": lp_neg}


def gedi_update(ref, gedi, tokens, status=None):
    """GeDi's state after the tokens: (L_pos, L_neg, n, logP(desired | token)) as float64 / int64;
    rows whose status is not OK keep their state (their logP is NaN)."""
    tok = tokens.detach().to("cpu", torch.int64).reshape(-1)
    ok = tok >= 0 if status is None else (status.detach().cpu().reshape(-1) == ROW_OK)
    safe = tok.clamp(min=0).unsqueeze(1)
    L_pos = gedi["L_pos"].detach().to("cpu", torch.float64)
    L_neg = gedi["L_neg"].detach().to("cpu", torch.float64)
    n = gedi["n"].detach().to("cpu", torch.int64)
    new_pos = torch.where(ok, L_pos + ref["lp_pos"].gather(1, safe).squeeze(1), L_pos)
    new_neg = torch.where(ok, L_neg + ref["lp_neg"].gather(1, safe).squeeze(1), L_neg)
    new_n = torch.where(ok, n + 1, n)
    lpd = torch.where(ok, ref["logp_desired"].gather(1, safe).squeeze(1),
                      torch.full_like(L_pos, float("nan")))
    return new_pos, new_neg, new_n, lpd


def speculative_accept(p, q):
    """EFT's speculative acceptance: min(1, p/q) per token, the residual normalise(max(0, p - q))
    and sum min(p, q) (the expected acceptance of one drafted token)."""
    p = p.to(torch.float64)
    q = q.to(torch.float64)
    acc = torch.where(q > 0, torch.clamp(p / q, max=1.0), torch.ones_like(p))
    res = torch.clamp(p - q, min=0.0)
    res = res / res.sum(dim=-1, keepdim=True)
    return acc, res, torch.minimum(p, q).sum(dim=-1)


# ---- helpers the tests share -----------------------------------------------------------------------

def randn(rows, vocab, seed, scale=2.0, dtype=torch.float32, device="cpu"):
    """Random logits [rows, vocab] ~ N(0, scale^2), fixed by ``seed``, rounded to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, vocab, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)


def assert_matches(out, ref, *, greedy=None, atol=1e-5, rtol=1e-6, what=""):
    """lmfuse's LogitsResult against the reference dict: statuses equal; for OK rows the masks
    (-inf pattern) equal, log-probs and lse within atol + rtol * |ref|, token_logprob equal to the
    reference log-prob of the token lmfuse chose, and that token a survivor; with ``greedy``, the
    tokens equal the reference argmax."""
    status = out.status.cpu().to(torch.int64)
    assert torch.equal(status, ref["status"]), "%s status %s != ref %s" % (
        what, status.tolist(), ref["status"].tolist())
    ok = status == ROW_OK
    tokens = out.tokens.cpu().to(torch.int64)
    assert (tokens[~ok] == -1).all(), "%s: rows with a bad status must give token -1" % what
    if not ok.any():
        return
    rlp = ref["logprobs"][ok]
    tk = tokens[ok]
    assert ((tk >= 0) & (tk < rlp.shape[1])).all(), what
    tok_ref_lp = rlp.gather(1, tk.unsqueeze(1)).squeeze(1)
    assert torch.isfinite(tok_ref_lp).all(), "%s: a token outside the surviving set: %s" % (
        what, tk[~torch.isfinite(tok_ref_lp)].tolist())
    if greedy:
        assert torch.equal(tk, ref["greedy"][ok]), "%s tokens %s != ref argmax %s" % (
            what, tk.tolist(), ref["greedy"][ok].tolist())
    torch.testing.assert_close(out.token_logprob.cpu()[ok].double(), tok_ref_lp, atol=atol,
                               rtol=rtol, msg=lambda m: "%s token_logprob: %s" % (what, m))
    torch.testing.assert_close(out.lse.cpu()[ok].double(), ref["lse"][ok], atol=atol, rtol=rtol,
                               msg=lambda m: "%s lse: %s" % (what, m))
    if out.logprobs is not None:
        lp = out.logprobs.cpu()[ok].double()
        fin_a, fin_r = torch.isfinite(lp), torch.isfinite(rlp)
        assert torch.equal(fin_a, fin_r), "%s: masks differ at (row, token) %s" % (
            what, (fin_a != fin_r).nonzero().tolist()[:10])
        assert (lp[~fin_a] == NEG_INF).all(), "%s: masked log-probs must be -inf" % what
        torch.testing.assert_close(lp[fin_a], rlp[fin_r], atol=atol, rtol=rtol,
                                   msg=lambda m: "%s logprobs: %s" % (what, m))
