"""A real fine-tuning run through the bindings: MeZO trains a 64-32-10 MLP on sklearn's digits
(8x8 images, 10 classes, shipped with python3-sklearn) and must clearly beat chance (10%) on a
held-out split within a fixed step budget, reproducibly (same seed -> bit-identical parameters)."""

import pytest
import torch

import lmfuse

sklearn_datasets = pytest.importorskip("sklearn.datasets")

STEPS = 1500
BATCH = 64


def _data():
    X, y = sklearn_datasets.load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-3
    return (X[tr] - mu) / sd, y[tr], (X[te] - mu) / sd, y[te]


def _train(fuse_next=True, seed=123):
    Xtr, ytr, Xte, yte = _data()
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    opt = lmfuse.MeZO(model.parameters(), lr=1e-2, eps=1e-3, seed=seed, fuse_next=fuse_next)
    batches = torch.Generator().manual_seed(2)
    loss = torch.nn.functional.cross_entropy
    for _ in range(STEPS):
        idx = torch.randint(0, len(ytr), (BATCH,), generator=batches)
        xb, yb = Xtr[idx], ytr[idx]
        opt.step(lambda: loss(model(xb), yb))
    with opt.eval_mode(), torch.no_grad():
        acc = (model(Xte).argmax(1) == yte).float().mean().item()
        train_loss = loss(model(Xtr), ytr).item()
    params = [p.detach().clone() for p in model.parameters()]
    opt.close()
    return acc, train_loss, params


def test_mezo_learns_digits_reproducibly():
    acc, train_loss, params = _train()
    # chance is 10% and the initial loss ln(10) = 2.30; this budget reaches about 85%
    assert acc > 0.70, "held-out accuracy %.3f after %d MeZO steps" % (acc, STEPS)
    assert train_loss < 1.0
    acc2, _, params2 = _train()
    assert acc2 == acc
    for a, b in zip(params, params2):
        assert torch.equal(a, b), "two runs from the same seed differ"


def test_different_seed_gives_different_run():
    _, _, a = _train(seed=1)
    _, _, b = _train(seed=2)
    assert not all(torch.equal(x, y) for x, y in zip(a, b))
