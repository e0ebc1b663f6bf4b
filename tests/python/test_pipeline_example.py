"""python_bindings/examples/dynamic_tokenization.py keeps working: as a script (a subprocess, the way
a user runs it), and imported: every batch gets shorter, the model sees the merged length, and the
numbers match lmfuse.merge_batch run alone."""

import os
import subprocess
import sys

import lmfuse

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLES = os.path.join(REPO, "python_bindings", "examples")
SCRIPT = os.path.join(EXAMPLES, "dynamic_tokenization.py")


def test_runs_as_a_script():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "python_bindings")
    r = subprocess.run([sys.executable, SCRIPT, "--langs", "en,zh", "--merges", "50"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "cache:" in r.stdout and r.stdout.count("\n") >= 4


def test_batches_get_shorter_and_match_merge_batch():
    sys.path.insert(0, EXAMPLES)
    try:
        import dynamic_tokenization as ex
    finally:
        sys.path.remove(EXAMPLES)
    res = ex.main(["--langs", "de,pl", "--merges", "100"])
    vocab = lmfuse.Vocab.from_tokenizer_json(os.path.join(REPO, "data", "tokenizers", "mistral-7b",
                                                          "tokenizer.json"))
    data = ex.batches(["de", "pl"])
    for lang, (before, after, merges, shape) in res.items():
        alone = lmfuse.merge_batch(vocab, data[lang], max_merges=100)
        assert before == sum(map(len, data[lang])) and after == alone.num_tokens < before
        assert merges == alone.num_merges == 100
        assert shape[0] == len(data[lang]) and shape[2] == ex.D
        assert shape[1] == max(alone.offsets[1:] - alone.offsets[:-1])
