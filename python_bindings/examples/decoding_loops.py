#!/usr/bin/python3
"""Decoding loops with lmfuse.combine_logits: proxy-tuning, EFT up-scaling and GeDi, on tiny
randomly initialised causal LMs (2-layer GRUs sharing a 1000-token vocabulary), on the CPU in a
few seconds.

    PYTHONPATH=python_bindings LMFUSE_LIBRARY=build/host/liblmfuse.so \\
        /usr/bin/python3 python_bindings/examples/decoding_loops.py [--steps 20] [--batch 4]
                                                                    [--device cpu|cuda]

What a loop looks like (every model keeps its own recurrent state / KV cache; lmfuse sees only the
last position's logits of each, as strided views, no copies):

    seeds = torch.arange(B) + 1000            # one seed per row: a row's tokens never depend on
    for step in range(steps):                 # the other rows of the batch
        z = [m.step(ids) for m in models]     # [B, V_k] logits of the last position
        out = lmfuse.combine_logits(**lmfuse.proxy_tune(*z, alpha=1.0),
                                    temperature=0.8, top_p=0.9, seeds=seeds, offsets=step)
        ids = out.tokens                      # int32 [B]

1. proxy-tuning: a big "base" model steered by a small tuned "expert" minus its untuned
   "anti-expert": s = z_base + alpha (z_expert - z_anti).
2. EFT up-scaling: large base + (small fine-tuned - small base); the small fine-tuned model's
   lm_head is padded to 1024 columns (as many checkpoints are), so vocab_out=1000 says which
   columns are real.
3. GeDi: a class-conditional LM run twice per step (rows prefixed by the desired and by the
   undesired control code) guides the LM through Bayes' rule; lmfuse.GeDiState keeps each row's
   log-likelihoods under both codes and is updated in place by every call.

The models are untrained, so the ids are noise: what matters is the plumbing. The script prints
the generated ids of each loop; main() returns them (tests/python/test_logits_example.py runs it).
"""

import argparse
import sys
import time

import torch

try:
    import lmfuse
except ImportError:  # run from a checkout without PYTHONPATH
    import os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import lmfuse

VOCAB = 1000
POS_CODE, NEG_CODE = VOCAB, VOCAB + 1   # GeDi's control codes: two extra input ids


class TinyLM(torch.nn.Module):
    """embedding -> 2-layer GRU -> lm_head; ``step(ids)`` feeds new ids and returns the last
    position's logits [B, head] (a strided view of the [B, T, head] output)."""

    def __init__(self, hidden, seed, vocab_in=VOCAB, head=VOCAB, sharpness=4.0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(vocab_in, hidden)
        self.rnn = torch.nn.GRU(hidden, hidden, num_layers=2, batch_first=True)
        self.lm_head = torch.nn.Linear(hidden, head)
        with torch.no_grad():  # untrained models are nearly flat: make them opinionated
            self.lm_head.weight.mul_(sharpness * hidden ** 0.5)
        self.state = None

    def reset(self):
        self.state = None

    def run(self, ids):
        """Feeds ids [B, T]; returns the logits of every new position [B, T, head]."""
        out, self.state = self.rnn(self.emb(ids), self.state)
        return self.lm_head(out)

    def step(self, ids):
        return self.run(ids)[:, -1, :]


def prompt(batch, length, seed, device):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=g).to(device)


def linear_loop(models, make_kwargs, ids, steps, seeds, **sampling):
    """Feeds ``ids`` to every model, then ``steps`` times: combine the last logits, append."""
    for m in models:
        m.reset()
    out_ids = []
    x = ids
    for step in range(steps):
        z = [m.step(x) for m in models]
        out = lmfuse.combine_logits(**make_kwargs(*z), seeds=seeds, offsets=step, **sampling)
        if not bool(out.ok.all()):
            raise RuntimeError("rows with status %s" % out.status.tolist())
        out_ids.append(out.tokens)
        x = out.tokens.long().unsqueeze(1)
    return torch.stack(out_ids, 1)


def gedi_loop(lm, cc_lm, ids, steps, seeds, **sampling):
    """GeDi: the class-conditional model runs on 2B rows (desired code, then undesired code)."""
    B = ids.shape[0]
    lm.reset()
    cc_lm.reset()
    codes = torch.tensor([POS_CODE] * B + [NEG_CODE] * B, device=ids.device).unsqueeze(1)
    x_lm = ids
    x_cc = torch.cat([codes, torch.cat([ids, ids], 0)], 1)   # [code, prompt...] for both codes
    out_ids, p_desired = [], []
    # GeDi's state starts from the prompt, as its released code does: L_c = sum of the prompt
    # tokens' log-likelihoods under code c (each predicted from the code and the tokens before),
    # n = the prompt's length
    full = cc_lm.run(x_cc)                                    # [2B, 1 + T, V]
    lp = torch.log_softmax(full[:, :-1].float(), -1).gather(2, x_cc[:, 1:].unsqueeze(2))
    L = lp.squeeze(2).sum(1)
    state = lmfuse.GeDiState(L[:B].contiguous(), L[B:].contiguous(),
                             torch.full((B,), ids.shape[1], dtype=torch.int32, device=ids.device))
    z_cc = full[:, -1, :]
    for step in range(steps):
        z_lm = lm.step(x_lm)
        if step > 0:
            z_cc = cc_lm.step(x_cc)               # [2B, V]: rows :B desired, B: undesired
        out = lmfuse.combine_logits(**lmfuse.gedi(z_lm, z_cc[:B], z_cc[B:], state, omega=30.0,
                                                  filter_p=0.8, target_p=0.8),
                                    seeds=seeds, offsets=step, **sampling)
        out_ids.append(out.tokens)
        p_desired.append(out.gedi_logp_desired.exp())
        x_lm = out.tokens.long().unsqueeze(1)
        x_cc = torch.cat([x_lm, x_lm], 0)
    return torch.stack(out_ids, 1), torch.stack(p_desired, 1), state


def main(argv=None, quiet=False):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    say = (lambda *x: None) if quiet else print
    dev = torch.device(a.device)
    B = a.batch
    seeds = torch.arange(1000, 1000 + B, dtype=torch.int64, device=dev)
    ids = prompt(B, 6, seed=0, device=dev)
    results = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        # 1. proxy-tuning
        base, expert, anti = (TinyLM(64, 1).to(dev), TinyLM(32, 2).to(dev),
                              TinyLM(32, 3).to(dev))
        results["proxy_tuning"] = linear_loop(
            [base, expert, anti], lambda zb, ze, za: lmfuse.proxy_tune(zb, ze, za, alpha=1.0),
            ids, a.steps, seeds, temperature=0.8, top_p=0.9)
        # 2. EFT up-scaling with a padded lm_head on the small fine-tuned model
        large, small_ft, small = (TinyLM(96, 4).to(dev), TinyLM(32, 5, head=1024).to(dev),
                                  TinyLM(32, 6).to(dev))

        def eft_kwargs(zl, zf, zs):
            kw = lmfuse.eft(zl, zf, zs, beta=1.0)
            kw["vocab_out"] = VOCAB          # zf has 1024 columns; the last 24 are padding
            return kw

        results["eft"] = linear_loop([large, small_ft, small], eft_kwargs, ids, a.steps, seeds,
                                     temperature=0.8, top_p=0.9)
        results["eft_greedy"] = linear_loop([large, small_ft, small], eft_kwargs, ids, a.steps,
                                            seeds, temperature=0)
        # 3. GeDi, greedy (its script's default) and sampled
        lm, cc = TinyLM(64, 7).to(dev), TinyLM(32, 8, vocab_in=VOCAB + 2).to(dev)
        g_ids, g_p, g_state = gedi_loop(lm, cc, ids, a.steps, seeds, temperature=0)
        results["gedi_greedy"], results["gedi_greedy_p_desired"] = g_ids, g_p
        results["gedi_state"] = g_state
        s_ids, s_p, _ = gedi_loop(lm, cc, ids, a.steps, seeds, temperature=0.8, top_p=0.9)
        results["gedi_sampled"], results["gedi_sampled_p_desired"] = s_ids, s_p
    elapsed = time.perf_counter() - t0

    say("lmfuse %s (%s); %d rows x %d steps on %s; prompt ids %s" % (
        lmfuse.version_string(), lmfuse.library_path(), B, a.steps, dev, ids[0].tolist()))
    for name in ("proxy_tuning", "eft", "eft_greedy", "gedi_greedy", "gedi_sampled"):
        say("\n%s:" % name)
        for b in range(B):
            say("  row %d: %s" % (b, results[name][b].tolist()))
    say("\nGeDi (greedy) P(desired | token) at the last step: %s" % [
        round(v, 3) for v in results["gedi_greedy_p_desired"][:, -1].tolist()])
    say("GeDi state after %d steps: n = %s, L_pos = %s, L_neg = %s" % (
        a.steps, g_state.n.tolist(), [round(v, 2) for v in g_state.L_pos.tolist()],
        [round(v, 2) for v in g_state.L_neg.tolist()]))
    say("\n%.2f s" % elapsed)
    return results


if __name__ == "__main__":
    main()
