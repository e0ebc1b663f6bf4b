#!/usr/bin/python3
"""The PyTorch peer of lmfuse's fused logit combination: the unfused decoding step of proxy-tuning /
DExperts / EFT code (and GeDi's guided step), timed.

CLI (stable; lmfuse-bench runs it with /usr/bin/python3 and parses the last stdout line):

    logits_torch_ref.py [--batch B] [--vocab V] [--models K] [--gedi] [--dtype f32|bf16|f16]
                        [--device cpu|cuda] [--repeats R] [--warmup W]
                        [--temperature T] [--top-k K] [--top-p P]

    --batch        rows B                                               (default 1)
    --vocab        vocabulary V of every model                          (default 128256)
    --models       models K (with --gedi: the LM, the GeDi model under the desired code, under
                   the undesired code; K >= 3 then, models past the third are not read)  (default 3)
    --gedi         GeDi's guided step instead of the linear combination
    --dtype        the models' logits dtype: f32, bf16 (or f16)          (default f32)
    --device       cpu or cuda                                          (default cuda if available)
    --repeats      timed steps; the median is reported                  (default 20)
    --warmup       untimed steps first                                  (default 2)
    --temperature  T (default 0.8), --top-k (default 0: off), --top-p (default 0.9): what
                   lmfuse-bench gives lmfuse

stdout: exactly ONE JSON line, e.g.
    {"peer": "torch_logits_ref", "batch": 1, "vocab": 128256, "models": 3, "gedi": false,
     "dtype": "f32", "device": "cpu", "us_per_step": 4321.0, "torch": "1.13.0", "repeats": 20,
     "threads": 16}
(the first nine keys are the contract; the rest is information). Errors: a message on stderr and a
non-zero exit status, nothing on stdout.

What one step does, on logits already computed by the models (no model runs here):

linear (proxy-tuning's modeling/dexperts.py, EFT's up-scaling), coefficients +1, +1, -1, +1, -1, ...
    l_k = log_softmax(z_k.float())            per model (fp32 whatever the input dtype, as HF does)
    s   = sum_k c_k l_k;  s = s / T
    top-k (HF TopKLogitsWarper: torch.topk, mask below the k-th); top-p (HF TopPLogitsWarper:
    ascending torch.sort, softmax, cumsum, remove cumulative <= 1 - p, scatter back, mask)
    probs = softmax(s); token = torch.multinomial(probs, 1)

GeDi (salesforce/GeDi modeling_utils.py, _generate_no_beam_search), per row state L_pos, L_neg, n:
    l_lm = log_softmax(z_lm);  g_c = log_softmax(z_c) + L_c;  logits = stack(g_pos, g_neg) / (n + 1)
    (* logit_scale 1 + bias 0);  logp_desired = log_softmax(logits, -1)[..., 0]
    s = l_lm + 30 * logp_desired;  the class filter: sort logp_desired ascending, cumsum of
    softmax(s) in that order, subtract 10000 where cumulative < 0.8 and logp_desired < log(0.8);
    then T, top-k, top-p, softmax, multinomial as above; then L_c = g_c(token), n += 1.
    GeDi's code walks the filter row by row in a Python loop; here it is vectorised over rows
    (gather / cumsum / scatter), which only flatters the peer.

One torch.Generator seeds the whole batch (per-request seeds would need a loop over rows: what vLLM
falls back to). The step ends with one device synchronize (the timing needs it; the reference code
syncs anyway with .tolist()).
"""

import argparse
import os
import json
import math
import statistics
import sys
import time

import torch

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def coefficients(k):
    """+1 for the first model, then +1, -1, +1, ... (K = 3: EFT / proxy-tuning's +1, +1, -1)."""
    return [1.0] + [1.0 if i % 2 == 1 else -1.0 for i in range(1, k)]


def make_logits(batch, vocab, models, dtype, device, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for _ in range(models):
        z = torch.randn(batch, vocab, generator=gen, dtype=torch.float32).mul_(3.0)
        out.append(z.to(device=device, dtype=dtype))
    return out


def top_k_filter(s, top_k):
    """HF TopKLogitsWarper."""
    top_k = min(top_k, s.size(-1))
    remove = s < torch.topk(s, top_k)[0][..., -1, None]
    return s.masked_fill(remove, -float("inf"))


def top_p_filter(s, top_p):
    """HF TopPLogitsWarper (min_tokens_to_keep 1)."""
    sorted_logits, sorted_indices = torch.sort(s, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_remove = cumulative_probs <= (1 - top_p)
    sorted_remove[..., -1:] = 0
    remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
    return s.masked_fill(remove, -float("inf"))


def sample(s, temperature, top_k, top_p, gen):
    if temperature == 0:
        return torch.argmax(s, dim=-1)
    if temperature != 1.0:
        s = s / temperature
    if top_k > 0:
        s = top_k_filter(s, top_k)
    if top_p < 1.0:
        s = top_p_filter(s, top_p)
    probs = torch.softmax(s, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=gen).squeeze(1)


def linear_step(logits, coeffs, temperature, top_k, top_p, gen):
    """One proxy-tuning / EFT step: returns the sampled tokens [B]."""
    s = None
    for z, c in zip(logits, coeffs):
        lp = torch.log_softmax(z.float(), dim=-1)
        s = c * lp if s is None else s + c * lp
    return sample(s, temperature, top_k, top_p, gen)


class GeDiState:
    def __init__(self, batch, device):
        self.L = torch.zeros(2 * batch, 1, device=device)   # [L_pos; L_neg] as GeDi's logits_r
        self.n = 0


def gedi_step(logits, state, temperature, top_k, top_p, gen, omega=30.0, filter_p=0.8,
              target_p=0.8, logit_scale=1.0, bias=0.0):
    """One GeDi-guided step (models: LM, GeDi desired code, GeDi undesired code); updates
    ``state`` and returns the tokens [B]."""
    z_lm, z_pos, z_neg = logits[0], logits[1], logits[2]
    batch = z_lm.shape[0]
    seq_len = state.n + 1
    gedi_logits = torch.log_softmax(torch.cat((z_pos, z_neg), 0).float(), -1) + state.L
    logits_pos, logits_neg = torch.split(gedi_logits / seq_len, batch)
    g = torch.stack((logits_pos, logits_neg), 2) * logit_scale + bias
    logp_desired_t = torch.log_softmax(g, -1)[:, :, 0]
    s = torch.log_softmax(z_lm.float(), -1) + omega * logp_desired_t
    sorted_logps, sorted_indices = torch.sort(logp_desired_t, descending=False)
    next_token_p = torch.softmax(s, -1)
    cumulative = torch.cumsum(next_token_p.gather(1, sorted_indices), dim=-1)
    remove_sorted = (cumulative < filter_p) & (sorted_logps < math.log(target_p))
    remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)
    s = s - 10000.0 * remove
    tokens = sample(s, temperature, top_k, top_p, gen)
    both = torch.cat((tokens, tokens), 0).unsqueeze(1)
    state.L = gedi_logits.gather(1, both)
    state.n += 1
    return tokens


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--gedi", action="store_true")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    ap.add_argument("--device", choices=["cpu", "cuda"],
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=0.9)
    a = ap.parse_args(argv)
    if a.batch < 1 or a.vocab < 2 or a.models < 1 or a.repeats < 1 or a.warmup < 0:
        ap.error("need batch >= 1, vocab >= 2, models >= 1, repeats >= 1, warmup >= 0")
    if a.gedi and a.models < 3:
        ap.error("--gedi needs --models >= 3 (the LM and the GeDi model under two codes)")
    if a.temperature < 0 or a.top_k < 0 or not 0 < a.top_p <= 1:
        ap.error("need temperature >= 0, top-k >= 0, 0 < top-p <= 1")
    if a.device == "cuda" and not torch.cuda.is_available():
        print("logits_torch_ref: --device cuda but torch %s sees no CUDA device"
              % torch.__version__, file=sys.stderr)
        return 2

    cuda = a.device == "cuda"
    if not cuda:  # every core, as lmfuse's CPU backend uses (this torch defaults to 1 thread)
        torch.set_num_threads(os.cpu_count() or 1)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    try:
        logits = make_logits(a.batch, a.vocab, a.models, DTYPES[a.dtype], a.device)
    except RuntimeError as e:  # out of memory
        print("logits_torch_ref: cannot allocate the inputs: %s" % e, file=sys.stderr)
        return 3
    gen = torch.Generator(device=a.device).manual_seed(0)
    coeffs = coefficients(a.models)
    state = GeDiState(a.batch, a.device)

    def step():
        if a.gedi:
            return gedi_step(logits, state, a.temperature, a.top_k, a.top_p, gen)
        return linear_step(logits, coeffs, a.temperature, a.top_k, a.top_p, gen)

    with torch.no_grad():
        for _ in range(a.warmup):
            step()
        sync()
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            step()
            sync()
            times.append((time.perf_counter() - t0) * 1e6)
    result = {
        "peer": "torch_logits_ref", "batch": a.batch, "vocab": a.vocab, "models": a.models,
        "gedi": bool(a.gedi), "dtype": a.dtype, "device": a.device,
        "us_per_step": round(statistics.median(times), 2), "torch": torch.__version__,
        "repeats": a.repeats, "threads": torch.get_num_threads(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # keep stdout clean: lmfuse-bench parses it
        print("logits_torch_ref: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
