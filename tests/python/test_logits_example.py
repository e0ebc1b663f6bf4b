"""python_bindings/examples/decoding_loops.py keeps working: it runs as a script (one subprocess,
the way a user runs it) and its loops, imported, are reproducible, stay in the vocabulary, honour
vocab_out for the padded lm_head, and advance GeDi's state once per step."""

import os
import subprocess
import sys

import pytest
import torch

import lmfuse

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLES = os.path.join(REPO, "python_bindings", "examples")
SCRIPT = os.path.join(EXAMPLES, "decoding_loops.py")


@pytest.fixture(scope="module")
def example():
    sys.path.insert(0, EXAMPLES)
    try:
        import decoding_loops
    finally:
        sys.path.remove(EXAMPLES)
    return decoding_loops


def test_runs_as_a_script():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "python_bindings")
    env["LMFUSE_LIBRARY"] = lmfuse.library_path()
    r = subprocess.run([sys.executable, SCRIPT, "--steps", "20", "--batch", "4"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("proxy_tuning:", "eft:", "gedi_greedy:", "gedi_sampled:", "GeDi state"):
        assert name in r.stdout
    assert r.stdout.count("row 3:") == 5


def test_loops_are_reproducible_and_in_range(example):
    a = example.main(["--steps", "8", "--batch", "4"], quiet=True)
    b = example.main(["--steps", "8", "--batch", "4"], quiet=True)
    for name in ("proxy_tuning", "eft", "eft_greedy", "gedi_greedy", "gedi_sampled"):
        ids = a[name]
        assert ids.shape == (4, 8) and ids.dtype == torch.int32, name
        assert ((ids >= 0) & (ids < example.VOCAB)).all(), name    # never a padded column
        assert torch.equal(ids, b[name]), name
    st = a["gedi_state"]
    assert st.n.tolist() == [6 + 8] * 4            # prompt length 6, then one per step
    p = a["gedi_greedy_p_desired"]
    assert ((p > 0) & (p <= 1)).all()
    # rows are independent: the first two rows alone give the same ids
    c = example.main(["--steps", "8", "--batch", "2"], quiet=True)
    for name in ("proxy_tuning", "eft", "gedi_sampled"):
        assert torch.equal(c[name], a[name][:2]), name
