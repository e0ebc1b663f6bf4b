"""bench/python/logits_torch_ref.py keeps its CLI and one-JSON-line output (lmfuse-bench parses it),
and its unfused steps compute what the spec says (greedy T1, GeDi's T5 filter and state)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(REPO, "bench", "python", "logits_torch_ref.py")
KEYS = ["peer", "batch", "vocab", "models", "gedi", "dtype", "device", "us_per_step", "torch"]


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def ref():
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        import logits_torch_ref
    finally:
        sys.path.pop(0)
    return logits_torch_ref


@pytest.mark.parametrize("extra", [[], ["--gedi"], ["--dtype", "bf16", "--models", "2"]])
def test_prints_one_json_line(extra):
    r = _run("--batch", "3", "--vocab", "1000", "--device", "cpu", "--repeats", "2", *extra)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert list(d)[:len(KEYS)] == KEYS
    assert d["peer"] == "torch_logits_ref" and d["batch"] == 3 and d["vocab"] == 1000
    assert d["gedi"] == ("--gedi" in extra) and d["device"] == "cpu" and d["us_per_step"] > 0
    assert d["dtype"] == (extra[1] if extra and extra[0] == "--dtype" else "f32")


def test_the_command_lmfuse_bench_runs():
    """bench/logits_bench.c: --batch B --vocab V --models K [--gedi] --dtype <lmf_dtype_name>
    --device cpu|cuda --repeats R (the dtype names are f32, f16, bf16)."""
    for dt in ("f32", "f16", "bf16"):
        r = _run("--batch", "2", "--vocab", "512", "--models", "3", "--gedi", "--dtype", dt,
                 "--device", "cpu", "--repeats", "1")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["dtype"] == dt


def test_bad_arguments_fail_without_stdout():
    for args in (["--batch", "0"], ["--dtype", "f64"], ["--gedi", "--models", "2"],
                 ["--top-p", "0"], ["--device", "tpu"]):
        r = _run(*args)
        assert r.returncode != 0 and r.stdout == "", args
        assert r.stderr


def test_steps_compute_the_spec(ref):
    t = lambda v: torch.tensor([v], dtype=torch.float32)
    zL, zSf, zSb = t([2, 1, 0.5, -1, 0]), t([1, 3, 0, -2, 0.5]), t([1.5, 1, 0.5, -1, 0])
    gen = torch.Generator().manual_seed(0)
    assert ref.coefficients(3) == [1.0, 1.0, -1.0]
    assert ref.linear_step([zL, zSf, zSb], [1, 1, -1], 0, 0, 1.0, gen).item() == 1
    # T9 through the HF warpers: top-p 0.9 at T = 0.7 leaves tokens 0 and 1
    s = (torch.log_softmax(zL, 1) + torch.log_softmax(zSf, 1) - torch.log_softmax(zSb, 1)) / 0.7
    assert torch.isfinite(ref.top_p_filter(s, 0.9)).nonzero()[:, 1].tolist() == [0, 1]
    assert torch.isfinite(ref.top_k_filter(s, 3)).nonzero()[:, 1].tolist() == [0, 1, 4]
    # GeDi T5a: the filter leaves token 2, the state moves to the spec's values
    st = ref.GeDiState(1, "cpu")
    st.L = torch.tensor([[-12.0], [-13.0]])
    st.n = 4
    tok = ref.gedi_step([t([2, 1.5, 1, 0, -1]), t([0, 1, 2, 0, -1]), t([1, 2, 0, 0, -1])], st,
                        0, 0, 1.0, gen)
    assert tok.item() == 2 and st.n == 5
    assert st.L[:, 0].tolist() == pytest.approx([-12.523744, -15.523744], abs=1e-5)
    # sampling at T = 0.8, top-p 0.9 draws only surviving tokens
    draws = {ref.gedi_step([t([2, 1.5, 1, 0, -1]), t([0, 1, 2, 0, -1]), t([1, 2, 0, 0, -1])],
                           ref.GeDiState(1, "cpu"), 0.8, 0, 0.9, gen).item() for _ in range(50)}
    assert draws <= {0, 1, 2, 3, 4} and not math.isnan(sum(draws))
