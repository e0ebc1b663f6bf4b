"""lmfuse.MeZO against the plain-PyTorch reference step (tests/python/_reference.py) fed the z that
lmfuse exports through fill_z, on a small MLP in fp32 with weight decay on the weight matrices only.

SPSA's g = (L+ - L-) / (2 eps) amplifies rounding differences in the losses by 1/eps, so two correct
fp32 implementations drift apart slowly; the free-running check bounds that drift. With lmfuse's g
fed to the reference the passes alone are compared and must agree to a few ulp per step.
"""

import copy

import pytest
import torch

import lmfuse
from _reference import reference_step

STEPS, LR, EPS, WD = 50, 0.05, 1e-3, 0.1


def _setup(dist, fuse_next):
    torch.manual_seed(0)
    X, Y = torch.randn(64, 8), torch.randint(0, 4, (64,))
    base = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    ref, lmf = copy.deepcopy(base), copy.deepcopy(base)
    opt = lmfuse.MeZO(lmf.parameters(), lr=LR, eps=EPS, weight_decay=WD, seed=7, dist=dist,
                      fuse_next=fuse_next)

    def loss(m):
        return torch.nn.functional.cross_entropy(m(X), Y)
    return base, ref, lmf, opt, loss


def _zs(opt, params, t):
    seed = opt.seed_for_step(t)
    return [opt.plan.fill_z(p.numel(), seed, uid=i).view_as(p) for i, p in enumerate(params)]


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
@pytest.mark.parametrize("fuse_next", [True, False])
def test_follows_reference_trajectory(dist, fuse_next):
    base, ref, lmf, opt, loss = _setup(dist, fuse_next)
    ps = list(ref.parameters())
    decay = [p.ndim >= 2 for p in ps]
    for t in range(STEPS):
        zs = _zs(opt, ps, t)
        lp, lm, g = reference_step(ps, decay, zs, EPS, LR, WD, lambda: loss(ref))
        out = opt.step(lambda: loss(lmf))
        assert abs(out.item() - lp) < 1e-4 and abs(opt.last_loss_minus - lm) < 1e-4
        assert abs(opt.last_grad - g) < 1e-3 * max(1.0, abs(g))
    assert opt.perturbed == fuse_next
    opt.restore()
    assert not opt.perturbed
    moved = max((a - b).abs().max().item() for a, b in zip(base.parameters(), lmf.parameters()))
    assert moved > 0.05, "the run did not move the parameters"
    for a, b in zip(ref.parameters(), lmf.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-3)  # drift through g, see module doc
    assert loss(lmf).item() < loss(base).item()


@pytest.mark.parametrize("fuse_next", [True, False])
def test_passes_match_reference_given_g(fuse_next):
    _, ref, lmf, opt, loss = _setup("gaussian", fuse_next)
    ps = list(ref.parameters())
    decay = [p.ndim >= 2 for p in ps]
    for t in range(STEPS):
        zs = _zs(opt, ps, t)
        opt.step(lambda: loss(lmf))
        reference_step(ps, decay, zs, EPS, LR, WD, lambda: loss(ref), g=opt.last_grad)
    opt.restore()
    for a, b in zip(ref.parameters(), lmf.parameters()):
        # a few fp32 ulp per step: the reference rounds lr * (g z + wd theta) differently
        torch.testing.assert_close(b, a, rtol=0, atol=2e-6)


def test_fused_and_unfused_agree():
    runs = []
    for fuse_next in (True, False):
        _, _, lmf, opt, loss = _setup("gaussian", fuse_next)
        losses = [opt.step(lambda: loss(lmf)).item() for _ in range(STEPS)]
        opt.restore()
        runs.append((losses, [p.detach().clone() for p in lmf.parameters()]))
    (lf, pf), (lu, pu) = runs
    assert max(abs(a - b) for a, b in zip(lf, lu)) < 1e-6
    for a, b in zip(pf, pu):
        # spec: fused vs unfused within 2 ulp per element per step (here over 50 steps)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_optimizer_matches_c_driver():
    """MeZO (g on the device, fused pass via lmf_mezo_step) equals lmf_mezo_train_step bit for bit
    on the CPU: same passes, same fp32 g = (L+ - L-) / (2 eps)."""
    base, _, lmf, opt, loss = _setup("gaussian", True)
    drv = copy.deepcopy(base)
    with lmfuse.Context("cpu") as ctx:
        plan = lmfuse.Plan(ctx, [p.detach() for p in drv.parameters()],
                           weight_decay=[p.ndim >= 2 for p in drv.parameters()])
        for t in range(STEPS):
            r = plan.train_step(lambda: loss(drv).item(), opt.seed_for_step(t), EPS, LR, WD,
                                next_seed=opt.seed_for_step(t + 1))
            opt.step(lambda: loss(lmf))
            assert (r.loss_plus, r.loss_minus, r.grad) == (
                opt.last_loss_plus, opt.last_loss_minus, opt.last_grad)
            assert not r.skipped and not opt.last_skipped
        plan.restore()
        opt.restore()
        for a, b in zip(drv.parameters(), lmf.parameters()):
            assert torch.equal(a, b)
