"""16-bit parameters: fp32 masters (exact restore, updates that accumulate), stochastic rounding
(unbiased small updates), and plain round-to-nearest (small updates round away: why the options
exist)."""

import copy

import pytest
import torch

import lmfuse


def _regression(dtype):
    torch.manual_seed(0)
    X = torch.randn(256, 16)
    w_true = torch.randn(16, 1)
    Y = X @ w_true
    model = torch.nn.Linear(16, 1).to(dtype)

    def loss():  # the forward in fp32 (torch 1.13 has no CPU half matmul)
        out = torch.nn.functional.linear(X, model.weight.float(), model.bias.float())
        return torch.nn.functional.mse_loss(out, Y)
    return model, loss


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_bf16_with_master_weights(rounding):
    model, loss = _regression(torch.bfloat16)
    opt = lmfuse.MeZO(model.parameters(), lr=2e-3, eps=1e-2, master_weights=True,
                      rounding=rounding, seed=3)
    masters = opt._masters
    assert all(m.dtype == torch.float32 for m in masters)
    with opt.eval_mode():
        l0 = loss().item()
    for _ in range(300):
        opt.step(loss)
    assert opt.perturbed
    opt.restore()
    for p, m in zip(model.parameters(), masters):
        # spec: with an fp32 master the working copy after restore equals round(master)
        assert torch.equal(p.detach(), m.to(torch.bfloat16))
    assert loss().item() < 0.5 * l0


def test_bf16_stochastic_rounding_without_master():
    model, loss = _regression(torch.bfloat16)
    opt = lmfuse.MeZO(model.parameters(), lr=2e-3, eps=1e-2, rounding="stochastic", seed=3)
    with opt.eval_mode():
        l0 = loss().item()
    for _ in range(300):
        opt.step(loss)
    opt.restore()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert loss().item() < 0.5 * l0


def test_fp16_params_run():
    model, loss = _regression(torch.float16)
    opt = lmfuse.MeZO(model.parameters(), lr=2e-3, eps=1e-2, master_weights=True, seed=3)
    with opt.eval_mode():
        l0 = loss().item()
    for _ in range(300):
        opt.step(loss)
    with opt.eval_mode():
        assert loss().item() < 0.5 * l0


def test_small_updates_by_precision_mode(ctx):
    """lr * g * z far below half a bf16 ulp: nearest loses every update, a master keeps them in
    fp32, stochastic rounding keeps them on average."""
    n, steps, lr = 1 << 16, 50, 1e-4
    seeds = list(range(100, 100 + steps))
    expect = torch.ones(n)
    for s in seeds:  # the fp32 result of theta -= lr * 1.0 * z(s)
        expect -= lr * lmfuse.fill_z(ctx, n, s)
    results = {}
    for mode in ("nearest", "master", "stochastic"):
        p = torch.ones(n, dtype=torch.bfloat16)
        m = torch.ones(n) if mode == "master" else None
        plan = lmfuse.Plan(ctx, [p], masters=[m],
                           rounding="stochastic" if mode == "stochastic" else "nearest")
        for s in seeds:
            plan.step(s, 1.0, lr)
        results[mode] = (p.float(), m)
    assert torch.equal(results["nearest"][0], torch.ones(n)), "RNE should round these updates away"
    m = results["master"][1]
    torch.testing.assert_close(m, expect, rtol=0, atol=1e-6)
    assert torch.equal(results["master"][0], m.to(torch.bfloat16).float())
    sr = results["stochastic"][0]
    drift = (expect - 1).double()
    change = (sr - 1).double()
    # unbiased: E[change] = drift. Per element the rounding noise (std ~4e-3) dwarfs the drift
    # (std ~7e-4), so test it over all elements: the regression slope of change on drift is 1
    # (standard error ~0.025) and the mean error is 0 (standard error ~2e-5).
    slope = (change * drift).sum().item() / (drift * drift).sum().item()
    assert 0.85 < slope < 1.15, slope
    assert abs((change - drift).mean().item()) < 1e-4


def test_master_restore_is_exact(ctx):
    torch.manual_seed(0)
    p = torch.randn(4099).mul_(0.02).to(torch.bfloat16)
    m = p.float()
    plan = lmfuse.Plan(ctx, [p], masters=[m])
    start = p.clone()
    plan.perturb(9, 1e-3)
    plan.perturb(9, -2e-3)
    plan.restore()
    assert torch.equal(p, start)


def test_master_weights_state_dict_roundtrip():
    model, loss = _regression(torch.bfloat16)
    opt = lmfuse.MeZO(model.parameters(), lr=2e-3, eps=1e-2, master_weights=True, seed=3)
    for _ in range(20):
        opt.step(loss)
    opt.restore()
    sd = opt.state_dict()
    weights = copy.deepcopy(model.state_dict())
    for _ in range(20):
        opt.step(loss)
    opt.restore()
    after40 = [p.detach().clone() for p in model.parameters()]
    model.load_state_dict(weights)
    opt.load_state_dict(sd)
    assert opt.step_count == 20
    for _ in range(20):
        opt.step(loss)
    opt.restore()
    for a, b in zip(model.parameters(), after40):
        assert torch.equal(a.detach(), b)
