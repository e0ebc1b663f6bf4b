#!/usr/bin/python3
"""The PyTorch peer of lmfuse's MeZO passes: the princeton-nlp/MeZO reference step, timed.

CLI (stable; lmfuse-bench runs it with /usr/bin/python3 and parses the last stdout line):

    mezo_torch_ref.py [--numel-total N] [--tensors T] [--dtype f32|bf16] [--device cpu|cuda]
                      [--repeats R] [--warmup W] [--eps E] [--lr LR] [--weight-decay WD]

    --numel-total  total parameters, split over the tensors         (default 16777216)
    --tensors      number of parameter tensors                      (default 100)
    --dtype        f32 or bf16                                      (default bf16)
    --device       cpu or cuda                                      (default cuda if available)
    --repeats      timed steps; the median is reported              (default 20)
    --warmup       untimed steps first                              (default 3)

stdout: exactly ONE JSON line, e.g.
    {"peer": "torch_mezo_ref", "dtype": "bf16", "device": "cuda", "numel": 16777216,
     "ms_per_step": 12.3, "torch": "2.4.0", "tensors": 100, "repeats": 20, "passes": 4,
     "threads": 16, "peak_extra_bytes": 67108864}
(the first six keys are the contract; the rest is information: peak_extra_bytes is the CUDA
allocator's peak above the parameters themselves, null on the CPU). Errors: a message on stderr
and a non-zero exit status, nothing on stdout.

What one step does (MeZO's large_models/trainer.py: zo_step, zo_perturb_parameters, zo_update):
a fresh seed from np.random.randint(1e9); then 4 passes over every tensor, each starting with
torch.manual_seed(seed) and regenerating z = torch.normal(mean=0, std=1, size=p.size(),
device=p.device, dtype=p.dtype) per tensor:
    p += 1 * z * eps;  p += -2 * z * eps;  p += 1 * z * eps;  p -= lr * (g * z + wd * p)
with the same temporaries as the reference expressions (z, scaling * z, * eps; g * z, wd * p, ...).
The reference assigns ``param.data = param.data + ...``; here the final add is in place (add_/
sub_), one allocation per tensor fewer, which only flatters the peer. There is no model: the two
forward passes are not part of what is compared, and g is a fixed float (the reference's
``.item()`` host sync is replaced by one device synchronize per step, which the timing needs
anyway). All tensors take the weight-decay path (the reference's formula for non-bias tensors).
"""

import argparse
import os
import json
import statistics
import sys
import time

import numpy as np
import torch

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def make_params(numel_total, tensors, dtype, device):
    """``tensors`` tensors of about numel_total / tensors elements each (the last takes the rest),
    2-D where the size allows, values ~ N(0, 0.02^2) like LLM weights."""
    base = numel_total // tensors
    sizes = [base] * (tensors - 1) + [numel_total - base * (tensors - 1)]
    params = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    for n in sizes:
        cols = 1024 if n % 1024 == 0 else 1
        t = torch.randn(n // cols, cols, generator=gen, dtype=torch.float32).mul_(0.02)
        params.append(t.to(device=device, dtype=dtype))
    return params


def perturb(params, seed, scaling_factor, eps):
    """zo_perturb_parameters: p += scaling_factor * z * eps, z regenerated from the seed."""
    torch.manual_seed(seed)
    for p in params:
        z = torch.normal(mean=0, std=1, size=p.size(), device=p.device, dtype=p.dtype)
        p.add_(scaling_factor * z * eps)


def update(params, seed, projected_grad, lr, weight_decay):
    """zo_update: p -= lr * (g * z + wd * p), z regenerated from the seed."""
    torch.manual_seed(seed)
    for p in params:
        z = torch.normal(mean=0, std=1, size=p.size(), device=p.device, dtype=p.dtype)
        p.sub_(lr * (projected_grad * z + weight_decay * p))


def step(params, rng, eps, lr, weight_decay, projected_grad=1.0):
    seed = int(rng.randint(1000000000))
    perturb(params, seed, 1, eps)       # loss1 = model(...) would run here
    perturb(params, seed, -2, eps)      # loss2 = model(...) would run here
    perturb(params, seed, 1, eps)       # restore
    update(params, seed, projected_grad, lr, weight_decay)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--numel-total", type=int, default=1 << 24)
    ap.add_argument("--tensors", type=int, default=100)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--device", choices=["cpu", "cuda"],
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    a = ap.parse_args(argv)
    if a.tensors < 1 or a.numel_total < a.tensors or a.repeats < 1 or a.warmup < 0:
        ap.error("need numel-total >= tensors >= 1, repeats >= 1, warmup >= 0")
    if a.device == "cuda" and not torch.cuda.is_available():
        print("mezo_torch_ref: --device cuda but torch %s sees no CUDA device" % torch.__version__,
              file=sys.stderr)
        return 2

    cuda = a.device == "cuda"
    if not cuda:  # every core, as lmfuse's CPU backend uses (this torch defaults to 1 thread)
        torch.set_num_threads(os.cpu_count() or 1)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    params = make_params(a.numel_total, a.tensors, DTYPES[a.dtype], a.device)
    rng = np.random.RandomState(0)
    sync()
    base_bytes = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for _ in range(a.warmup):
            step(params, rng, a.eps, a.lr, a.weight_decay)
        sync()
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            step(params, rng, a.eps, a.lr, a.weight_decay)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
    result = {
        "peer": "torch_mezo_ref", "dtype": a.dtype, "device": a.device, "numel": a.numel_total,
        "ms_per_step": round(statistics.median(times), 4), "torch": torch.__version__,
        "tensors": a.tensors, "repeats": a.repeats, "passes": 4,
        "threads": torch.get_num_threads(),
        "peak_extra_bytes": (torch.cuda.max_memory_allocated() - base_bytes) if cuda else None,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
