#!/usr/bin/python3
"""The PyTorch peer of lmfuse's hypernetwork: ZeTT's module (the architecture of
specs/hypernetwork.md), run on the same surface forms, timed; plus PyTorch's GEMM rate at the
hypernetwork's GEMM shapes (the arithmetic floor lmfuse-bench uses on the CPU).

CLI (stable; lmfuse-bench runs it with /usr/bin/python3 and parses the last stdout line):

    hypernet_torch_ref.py [--shape xlmr|mistral] [--tokens U] [--device cpu|cuda]
                          [--tf32] [--impl auto|stock|onednn] [--repeats R] [--warmup W]
                          [--seed S] [--sub-vocab N] [--gemm-m M]

    --shape      xlmr (768 / 1536 / 12 heads, tied, V0 250002, 26 languages) or mistral
                 (4096 / 8192 / 32 heads, separate output embeddings, V0 32000): the released
                 configs of specs/hypernetwork.md                                 (default xlmr)
    --tokens     new tokens U per call                                            (default 256)
    --device     cpu or cuda                                    (default cuda if available)
    --tf32       CUDA only: let the module's matmuls run in TF32 (default: fp32, TF32 off)
    --impl       stock: the module as written; onednn (CPU only): its Linear layers converted
                 with torch.utils.mkldnn.to_mkldnn (oneDNN inner products); auto: probe both at
                 U = min(U, 4) tokens, time in full every one within 2x of the fastest, report
                 the fastest                                                      (default auto)
    --repeats    timed calls; the median is reported                              (default 3)
    --warmup     untimed calls first                                              (default 1)
    --seed       surface-form generator seed (lmfuse-bench passes the one it used) (default 1)
    --sub-vocab  sub-token ids are drawn from [4, N) (plus 1 in 64 from the fallback rows)
                                                                                  (default 32000)
    --gemm-m     rows M of the GEMM-rate measurement; 0: skip it                  (default 512)

stdout: exactly ONE JSON line, e.g.
    {"peer": "torch_hypernet_ref", "shape": "xlmr", "tokens": 256, "device": "cpu",
     "us_per_call": 512345.0, "tokens_per_s": 499.7, "impl": "onednn", "torch": "1.13.0",
     "threads": 2, "repeats": 3, "tf32": false, "impls": {"stock": {...}, "onednn": {...}},
     "surface_checksum": 123456789, "gemm_m": 512, "gemm_gflops": {"matmul": 2.1, "onednn": 49.0},
     "gemm_best": "onednn", "gemm_best_gflops": 49.0}
(gemm_best: the fastest fp32 GEMM; TF32 rates are reported but never chosen)
(the first six keys are the contract; the rest is information). Errors: a message on stderr and a
non-zero exit status, nothing on stdout.

The module mirrors the spec (and bminixhofer/zett's hf_hypernet/modeling_hypernet.py wrapping HF's
RobertaModel): it is a copy of tests/python/_hypernet_reference.py, which the tests check against
lmfuse and the spec's parameter counts (bench/ does not import from tests/). It computes what the
released module computes: the input projection for all U x L entries (pads included) and every
RoBERTa layer at all L (+ language) positions of every token; none of the spec's exact savings.

Surface forms: the same generator as bench/hypernet_bench.c (splitmix64 from --seed), so both sides
see the same ids (surface_checksum lets lmfuse-bench check it): per token a length 1..7 with
probabilities .05 .40 .28 .14 .07 .04 .02 (mean 2.98), each sub-token from the fallback rows with
probability 1/64, else uniform in [4, sub_vocab); right-padded with pad_token_id to L = 7.

GEMM rate: one RoBERTa layer's Linear mix, 4 x (M, H -> H) + (M, H -> I) + (M, I -> H), FLOPs
(2 M K N each) over the summed median times; "matmul" = torch.matmul(a, w.t()) on dense tensors
(Debian's torch: a generic BLAS), "onednn" = torch._C._nn.mkldnn_linear on oneDNN tensors (CPU),
"matmul_tf32" (CUDA) with TF32 allowed. The module runs in fp32 (on CUDA: TF32 off unless --tf32).
"""

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time

import torch

MASK64 = (1 << 64) - 1

SHAPES = {
    "xlmr": {"hn_n_layers": 3, "hn_hidden_size": 768, "hn_intermediate_size": 1536,
             "hn_num_attention_heads": 12, "n_embd": 768, "hn_surface_maxlen": 7,
             "pad_token_id": 1, "original_vocab_size": 250002, "hn_n_extra_tokens": 161,
             "separate_out_embeddings": False, "hn_rescale_embeddings": True,
             "hn_predict_bias": True, "hn_single_head": False, "hn_embed_lang_id": True,
             "n_langs": 26},
    "mistral": {"hn_n_layers": 3, "hn_hidden_size": 4096, "hn_intermediate_size": 8192,
                "hn_num_attention_heads": 32, "n_embd": 4096, "hn_surface_maxlen": 7,
                "pad_token_id": 2, "original_vocab_size": 32000, "hn_n_extra_tokens": 522,
                "separate_out_embeddings": True, "hn_rescale_embeddings": True,
                "hn_predict_bias": True, "hn_single_head": False, "hn_embed_lang_id": False},
}

# Length distribution of the surface forms (lengths 1..7), as in bench/hypernet_bench.c.
LEN_CUM = [0.05, 0.45, 0.73, 0.87, 0.94, 0.98, 1.0]
FIRST_ID = 4


# The module: bench/python/zett_module.py (the spec's architecture, the released names).
from zett_module import ZettHypernet  # noqa: E402


def randomize_(module, seed):
    """In place, weights scaled like a trained network (tests/python/_hypernet_reference.py's
    random_state_dict): Linear weights sd 1/sqrt(fan_in), biases sd 0.02, LayerNorm weights
    1 +- 0.1, embeddings sd 0.3 (fallback rows 0.02), rescalers ~1."""
    with torch.no_grad():
        for i, (name, p) in enumerate(module.state_dict().items()):
            g = torch.Generator(device=p.device).manual_seed(seed * 1000003 + i)
            r = torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype)
            if name.endswith("LayerNorm.weight") or name.endswith(".ln.weight"):
                r.mul_(0.1).add_(1.0)
            elif name.endswith("LayerNorm.bias") or name.endswith(".ln.bias"):
                r.mul_(0.05)
            elif name.endswith("scaler.w"):
                r.mul_(0.25).add_(1.0)
            elif name.endswith("scaler.b"):
                r.mul_(0.01)
            elif name == "fallback_embeddings.weight":
                r.mul_(0.02)
            elif "embeddings" in name:
                r.mul_(0.3)
            elif name.endswith(".weight"):
                r.mul_(1.0 / math.sqrt(p.shape[1]))
            else:
                r.mul_(0.02)
            p.copy_(r)


# ---- Inputs ------------------------------------------------------------------------------------

class SplitMix64:
    """The generator of bench/hypernet_bench.c."""

    def __init__(self, seed):
        self.s = seed & MASK64

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self):
        return (self.next() >> 11) * 2.0 ** -53


def surface_forms(cfg, tokens, seed, sub_vocab):
    """[U][L] int ids and the checksum bench/hypernet_bench.c computes."""
    L = cfg["hn_surface_maxlen"]
    V0 = cfg["original_vocab_size"]
    nfb = max(1, cfg["hn_n_extra_tokens"])
    pad = cfg["pad_token_id"]
    g = SplitMix64(seed)
    rows = []
    for _ in range(tokens):
        u = g.uniform()
        n = next(i + 1 for i, c in enumerate(LEN_CUM) if u < c or i == len(LEN_CUM) - 1)
        row = []
        for _ in range(n):
            r = g.next()
            row.append(V0 + r % nfb if (r >> 58) == 0 else FIRST_ID + r % (sub_vocab - FIRST_ID))
        rows.append(row + [pad] * (L - n))
    checksum = 0
    for i, v in enumerate(x for row in rows for x in row):
        checksum = (checksum + (i + 1) * v) & 0xFFFFFFFF
    return rows, checksum


def source_embeddings(cfg, sub_vocab, device, seed):
    """E_src [V0][n_in] fp32; only the rows of ids that can occur ([0, sub_vocab)) and the row
    V0 - 1 (read for the clamped fallback ids) are written: the rest stays untouched, as in
    lmfuse-bench (no other row is read)."""
    n_in = cfg["n_embd"] * (2 if cfg["separate_out_embeddings"] else 1)
    V0 = cfg["original_vocab_size"]
    e = torch.empty(V0, n_in, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    e[:sub_vocab] = 0.1 * torch.randn(sub_vocab, n_in, generator=g, device=device)
    e[V0 - 1:] = 0.0
    return e


# ---- Timing ------------------------------------------------------------------------------------

def timed(fn, sync, warmup, repeats, budget_s=None):
    """Median seconds of fn() over `repeats` calls after `warmup`; with budget_s, stops early
    (after at least one timed call) once the timed calls have taken that long."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if budget_s is not None and sum(times) >= budget_s:
            break
    return statistics.median(times), len(times)


def gemm_rates(cfg, m, device, sync):
    """GFLOP/s of one RoBERTa layer's Linear mix at M rows, per GEMM implementation: each distinct
    (K, N) timed (median), weighted by how often a layer runs it (4 x H->H, H->I, I->H)."""
    H, I = cfg["hn_hidden_size"], cfg["hn_intermediate_size"]
    mix = {(H, H): 4, (H, I): 1, (I, H): 1}  # (K, N): GEMMs per layer
    g = torch.Generator(device=device).manual_seed(7)
    data = {}
    for K, N in mix:
        data[(K, N)] = (torch.randn(m, K, generator=g, device=device),
                        torch.randn(N, K, generator=g, device=device) / math.sqrt(K),
                        torch.randn(N, generator=g, device=device))
    flops = sum(c * 2.0 * m * K * N for (K, N), c in mix.items())
    out = {}

    def rate(make_fn, budget_s):
        total = 0.0
        for (K, N), c in mix.items():
            t, _ = timed(make_fn(K, N), sync, 1, 5, budget_s)
            total += c * t
        return flops / total / 1e9

    def mm(K, N):
        a, w, _ = data[(K, N)]
        return lambda: torch.matmul(a, w.t())

    if device == "cuda":
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        out["matmul"] = rate(mm, None)
        torch.backends.cuda.matmul.allow_tf32 = True
        out["matmul_tf32"] = rate(mm, None)
        torch.backends.cuda.matmul.allow_tf32 = prev  # (the module's setting, restored)
    else:
        out["matmul"] = rate(mm, 0.5)  # a generic BLAS is slow: stop after ~0.5 s per shape
        if torch.backends.mkldnn.is_available():
            mk = {k: (a.to_mkldnn(), w.to_mkldnn(), b.to_mkldnn()) for k, (a, w, b) in data.items()}

            def dnn(K, N):
                a, w, b = mk[(K, N)]
                return lambda: torch._C._nn.mkldnn_linear(a, w, b)

            out["onednn"] = rate(dnn, None)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="xlmr")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--device", choices=["cpu", "cuda"],
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--impl", choices=["auto", "stock", "onednn"], default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sub-vocab", type=int, default=32000)
    ap.add_argument("--gemm-m", type=int, default=512)
    a = ap.parse_args(argv)
    cfg = SHAPES[a.shape]
    if a.tokens < 1 or a.repeats < 1 or a.warmup < 0 or a.gemm_m < 0:
        ap.error("need tokens >= 1, repeats >= 1, warmup >= 0, gemm-m >= 0")
    if not FIRST_ID < a.sub_vocab <= cfg["original_vocab_size"]:
        ap.error("need 4 < sub-vocab <= original_vocab_size (%d)" % cfg["original_vocab_size"])
    if a.device == "cuda" and not torch.cuda.is_available():
        print("hypernet_torch_ref: --device cuda but torch %s sees no CUDA device"
              % torch.__version__, file=sys.stderr)
        return 2
    if a.device == "cuda" and a.impl == "onednn":
        ap.error("--impl onednn is CPU only")
    if a.device == "cpu" and a.tf32:
        ap.error("--tf32 is CUDA only")

    cuda = a.device == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = a.tf32  # fp32 unless --tf32, as lmfuse's allow_tf32
        torch.backends.cudnn.allow_tf32 = a.tf32
        sync = torch.cuda.synchronize
    else:  # every core, as lmfuse's CPU backend uses (this torch defaults to 1 thread)
        torch.set_num_threads(os.cpu_count() or 1)
        sync = lambda: None  # noqa: E731

    if cuda and hasattr(torch, "set_default_device"):
        with torch.device(a.device):
            module = ZettHypernet(cfg)
    else:
        module = ZettHypernet(cfg).to(a.device)
    module.eval()
    randomize_(module, 1)
    rows, checksum = surface_forms(cfg, a.tokens, a.seed, a.sub_vocab)
    S = torch.tensor(rows, dtype=torch.int64, device=a.device)
    E = source_embeddings(cfg, a.sub_vocab, a.device, 2)
    lang = 0 if cfg.get("hn_embed_lang_id") else None

    impls = {"stock": module}
    if not cuda and a.impl in ("auto", "onednn") and torch.backends.mkldnn.is_available():
        from torch.utils import mkldnn as mkldnn_utils
        # to_mkldnn replaces the Linear children in place: convert a copy.
        impls["onednn"] = mkldnn_utils.to_mkldnn(copy.deepcopy(module))
    if a.impl != "auto":
        impls = {a.impl: impls[a.impl]}

    info = {}
    with torch.inference_mode():
        # Probe every implementation on a few tokens; time in full those within 2x of the fastest.
        # (oneDNN generates its kernels per shape on first use: the probe warms up at its shape.)
        if len(impls) > 1:
            np_ = min(a.tokens, 4)
            Sp = S[:np_]
            for name, m in impls.items():
                t, _ = timed(lambda: m(Sp, E, lang), sync, 1, 1)
                info[name] = {"probe_tokens": np_, "probe_tokens_per_s": round(np_ / t, 2)}
            best = max(v["probe_tokens_per_s"] for v in info.values())
            full = [n for n in impls if info[n]["probe_tokens_per_s"] * 2 >= best]
        else:
            full = list(impls)
        for name in full:
            m = impls[name]
            t, n = timed(lambda: m(S, E, lang), sync, a.warmup, a.repeats)
            info.setdefault(name, {}).update(
                {"us_per_call": round(t * 1e6, 1), "tokens_per_s": round(a.tokens / t, 2),
                 "repeats": n})
        gemm = gemm_rates(cfg, a.gemm_m, a.device, sync) if a.gemm_m > 0 else {}

    peer = min(full, key=lambda n: info[n]["us_per_call"])
    result = {
        "peer": "torch_hypernet_ref", "shape": a.shape, "tokens": a.tokens, "device": a.device,
        "us_per_call": info[peer]["us_per_call"], "tokens_per_s": info[peer]["tokens_per_s"],
        "impl": peer, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "repeats": a.repeats, "tf32": bool(a.tf32), "impls": info, "surface_checksum": checksum,
        "gemm_m": a.gemm_m,
        "gemm_gflops": {k: round(v, 2) for k, v in gemm.items()},
    }
    fp32 = {k: v for k, v in gemm.items() if "tf32" not in k}
    if fp32:
        bk = max(fp32, key=fp32.get)
        result["gemm_best"] = bk
        result["gemm_best_gflops"] = round(gemm[bk], 2)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # keep stdout clean: lmfuse-bench parses it
        print("hypernet_torch_ref: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
