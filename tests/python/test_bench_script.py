"""bench/python/mezo_torch_ref.py keeps its CLI and one-JSON-line output (lmfuse-bench parses it)."""

import json
import os
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(REPO, "bench", "python", "mezo_torch_ref.py")


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=120)


def test_prints_one_json_line():
    r = _run("--numel-total", "40000", "--tensors", "7", "--dtype", "f32", "--device", "cpu",
             "--repeats", "2", "--warmup", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert d["peer"] == "torch_mezo_ref" and d["dtype"] == "f32" and d["device"] == "cpu"
    assert d["numel"] == 40000 and d["ms_per_step"] > 0 and d["torch"]


def test_bad_arguments_fail_without_stdout():
    r = _run("--tensors", "0")
    assert r.returncode != 0 and r.stdout == ""
    r = _run("--dtype", "f64")
    assert r.returncode != 0 and r.stdout == ""


def test_reference_step_is_the_mezo_step():
    """One step with eps = 0 and lr = 0 leaves the parameters as they were; with g = 0 and
    wd > 0 it decays them: the four passes and the update are wired as the reference."""
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        import mezo_torch_ref as ref
    finally:
        sys.path.pop(0)
    import numpy as np
    import torch
    params = ref.make_params(5000, 3, torch.float32, "cpu")
    assert sum(p.numel() for p in params) == 5000 and len(params) == 3
    before = [p.clone() for p in params]
    ref.step(params, np.random.RandomState(0), eps=0.0, lr=0.0, weight_decay=0.0)
    assert all(torch.equal(a, b) for a, b in zip(params, before))
    ref.step(params, np.random.RandomState(0), eps=1e-3, lr=0.1, weight_decay=0.5,
             projected_grad=0.0)
    for a, b in zip(params, before):
        torch.testing.assert_close(a, b * 0.95, rtol=1e-5, atol=1e-7)
