"""Plan and MeZO behaviour: spec properties through the bindings (weight decay, multi-seed update,
exact restore), seeds, the perturbation life cycle, state, schedulers, object lifetimes."""

import math

import pytest
import torch

import lmfuse
from lmfuse.optim import splitmix64, step_seed


def test_seed_counter():
    assert splitmix64(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF  # SplitMix64(0), first output
    assert step_seed(0, 0) == 0xE220A8397B1DCDAF
    assert step_seed(0, 1) == 0x6E789E6AA1B965F4                  # its second output
    assert len({step_seed(s, t) for s in range(3) for t in range(100)}) == 300
    opt = lmfuse.MeZO([torch.nn.Parameter(torch.zeros(4))], seed=5)
    assert opt.seed_for_step(7) == step_seed(5, 7)


def test_weight_decay_rounds_once_and_only_on_decay_tensors(ctx):
    torch.manual_seed(0)
    w, b = torch.randn(300), torch.randn(30)
    w0, b0 = w.clone(), b.clone()
    plan = lmfuse.Plan(ctx, [w, b], weight_decay=[True, False])
    plan.step(1, 0.0, 0.1, weight_decay=0.5)
    factor = torch.tensor(1.0) - torch.tensor(0.1) * torch.tensor(0.5)  # fp32: 1 - lr wd
    assert torch.equal(w, w0 * factor) and torch.equal(b, b0)


def test_weight_decay_applies_to_restored_value(ctx):
    w = torch.randn(256)
    w0 = w.clone()
    plan = lmfuse.Plan(ctx, [w])
    plan.perturb(4, 0.5)
    plan.step(4, 0.0, 0.1, weight_decay=0.5)
    torch.testing.assert_close(w, w0 * 0.95, rtol=1e-6, atol=1e-6)


def test_update_multi_equals_single_updates(ctx):
    torch.manual_seed(1)
    a = torch.randn(5000)
    b, orig = a.clone(), a.clone()
    seeds, coeffs, lr = [11, 12, 13], [0.5, -1.25, 2.0], 0.01
    pa, pb = lmfuse.Plan(ctx, [a]), lmfuse.Plan(ctx, [b])
    assert pa.update_multi(seeds, coeffs, lr) is False
    for s, c in zip(seeds, coeffs):
        pb.step(s, c, lr)
    ulp = torch.finfo(torch.float32).eps * a.abs().clamp_min(2.0 ** -126)
    assert ((a - b).abs() <= 3 * ulp).all()  # spec: within 3 ulp
    pc = lmfuse.Plan(ctx, [orig])
    assert pc.update_multi(seeds, torch.tensor(coeffs), lr) is False  # coefficients as a tensor
    assert torch.equal(pc.tensors[0], a)


def test_dyadic_restore_is_exact(ctx):
    k = torch.arange(1024, dtype=torch.float32)
    theta = 1 + k * 2.0 ** -10
    start = theta.clone()
    plan = lmfuse.Plan(ctx, [theta], dist="rademacher")
    plan.perturb(3, 2.0 ** -8)
    assert not torch.equal(theta, start)
    plan.perturb(3, -2 * 2.0 ** -8)
    plan.perturb(3, 2.0 ** -8)
    assert torch.equal(theta, start) and plan.perturbation == (0, 0.0)


def test_numel_len_and_lifetimes():
    ctx = lmfuse.Context("cpu")
    plan = lmfuse.Plan(ctx, [torch.zeros(3, 4), torch.zeros(5)])
    assert plan.numel == 17 and len(plan) == 2
    ctx.close()  # closes the plan first
    with pytest.raises(ValueError, match="closed"):
        plan.perturb(1, 1.0)
    assert "closed" in repr(plan) and "closed" in repr(ctx)


def test_driver_train_step_fused(ctx):
    w = torch.randn(100)

    def loss():
        return float((w * w).sum())
    plan = lmfuse.Plan(ctx, [w])
    r = plan.train_step(loss, seed=1, eps=1e-3, lr=1e-3, next_seed=2)
    assert r.loss_plus != r.loss_minus and not r.skipped
    assert r.grad == pytest.approx((r.loss_plus - r.loss_minus) / 2e-3, rel=1e-3)
    assert plan.perturbation == (2, pytest.approx(1e-3))
    r2 = plan.train_step(loss, seed=2, eps=1e-3, lr=1e-3)  # uses the carried +eps z(2)
    assert plan.perturbation == (0, 0.0)
    with pytest.raises(lmfuse.LmfuseError) as e:
        plan.perturb(5, 1e-3)
        plan.train_step(loss, seed=6, eps=1e-3, lr=1e-3)
    assert e.value.status_name == "LMF_ERR_INVALID_STATE"
    assert r2.loss_plus > 0


def _quadratic(n=512, dtype=torch.float32):
    w = torch.nn.Parameter(torch.ones(n, dtype=dtype))
    return w, (lambda: 0.5 * (w.float() ** 2).sum())


def test_perturbation_life_cycle():
    w, loss = _quadratic()
    opt = lmfuse.MeZO([w], lr=1e-3, eps=1e-3, seed=1)
    assert opt.last_grad is None and opt.last_skipped is None and not opt.perturbed
    opt.step(loss)
    assert opt.perturbed and opt.plan.perturbation[0] == opt.seed_for_step(1)
    with opt.eval_mode():
        assert not opt.perturbed
        clean = w.detach().clone()
    opt.step(loss)  # perturbs again itself
    opt.restore()
    opt2 = lmfuse.MeZO([torch.nn.Parameter(torch.ones(512))], lr=1e-3, eps=1e-3, seed=1,
                       fuse_next=False)
    for _ in range(2):
        opt2.step(lambda: 0.5 * (opt2.plan.tensors[0] ** 2).sum())
        assert not opt2.perturbed
    torch.testing.assert_close(w.detach(), opt2.plan.tensors[0], rtol=0, atol=1e-6)
    assert not torch.equal(clean, w.detach())


def test_converges_on_quadratic():
    """Spec test 8, shortened: f = 0.5 |theta|^2, lr = 1/(d+2): |theta|^2 shrinks like
    exp(-steps / (d + 2))."""
    d, steps = 256, 1000
    w, loss = _quadratic(d)
    opt = lmfuse.MeZO([w], lr=1.0 / (d + 2), eps=1e-3, seed=0, no_decay=lambda p: True)
    for _ in range(steps):
        opt.step(loss)
    opt.restore()
    ratio = (w.detach() ** 2).sum().item() / d
    expected = math.exp(-steps / (d + 2))
    assert expected / 3 < ratio < expected * 3, (ratio, expected)


def test_closure_may_return_float_and_grad_is_device_tensor():
    w, loss = _quadratic()
    opt = lmfuse.MeZO([w], lr=1e-3, seed=1)
    out = opt.step(lambda: loss().item())
    assert isinstance(out, float)
    lp, lm, g, skipped = opt.last_step_tensors
    assert g.dtype == torch.float32 and g.shape == (1,) and skipped.dtype == torch.int32
    assert opt.last_grad == pytest.approx((opt.last_loss_plus - opt.last_loss_minus) / 2e-3,
                                          rel=1e-3)


def test_nonfinite_loss_skips_update():
    w, _ = _quadratic()
    opt = lmfuse.MeZO([w], lr=1e-3, seed=1, fuse_next=False)
    opt.step(lambda: float("nan"))
    assert opt.last_skipped is True and opt.step_count == 1
    torch.testing.assert_close(w.detach(), torch.ones(512), rtol=0, atol=1e-6)


def test_default_no_decay_and_scheduler():
    lin = torch.nn.Linear(8, 4)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    opt = lmfuse.MeZO(lin.parameters(), lr=0.1, weight_decay=0.5, fuse_next=False)
    opt.step(lambda: 1.0)  # constant loss: g = 0, only decay acts
    torch.testing.assert_close(lin.weight.detach(), w0 * 0.95, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(lin.bias.detach(), b0, rtol=0, atol=1e-7)  # ndim < 2: no decay
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.0)
    assert opt.param_groups[0]["lr"] == 0.0
    before = lin.weight.detach().clone()
    opt.step(lambda: 1.0)
    sched.step()
    torch.testing.assert_close(lin.weight.detach(), before, rtol=0, atol=1e-7)


def test_eps_change_mid_run():
    w, loss = _quadratic()
    opt = lmfuse.MeZO([w], lr=1e-3, eps=1e-3, seed=2)
    opt.step(loss)
    opt.param_groups[0]["eps"] = 1e-2
    opt.step(loss)
    assert opt.plan.perturbation[1] == pytest.approx(1e-2)
    opt.restore()
    assert torch.isfinite(w).all()


def test_state_dict_resumes_the_seed_sequence():
    w1, loss1 = _quadratic()
    opt1 = lmfuse.MeZO([w1], lr=1e-3, seed=9)
    for _ in range(5):
        opt1.step(loss1)
    opt1.restore()
    sd, snapshot = opt1.state_dict(), w1.detach().clone()
    for _ in range(5):
        opt1.step(loss1)
    opt1.restore()
    w2 = torch.nn.Parameter(snapshot.clone())
    opt2 = lmfuse.MeZO([w2], lr=1e-3, seed=0)
    opt2.load_state_dict(sd)
    assert opt2.step_count == 5 and opt2.seed == 9
    for _ in range(5):
        opt2.step(lambda: 0.5 * (w2 ** 2).sum())
    opt2.restore()
    assert torch.equal(w1.detach(), w2.detach())


def test_uids_are_list_positions_and_empty_tensors_skipped():
    a = torch.nn.Parameter(torch.zeros(0))
    b = torch.nn.Parameter(torch.zeros(16))
    opt = lmfuse.MeZO([a, b], seed=4, eps=1.0)
    assert len(opt.plan) == 1
    opt.plan.perturb(77, 1.0)
    assert torch.equal(b.detach(), opt.plan.fill_z(16, 77, uid=1))
