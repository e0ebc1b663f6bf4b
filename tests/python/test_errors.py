"""Bad inputs: the library's status comes back as LmfuseError with the right status_name and a
message naming the function; mistakes the bindings can see raise TypeError/ValueError first; a
failed call changes nothing."""

import ctypes
import math
import pickle

import numpy as np
import pytest
import torch

import lmfuse
from lmfuse import _ffi
from lmfuse.errors import LmfuseError


def _raises(status_name, fn, *args, **kwargs):
    with pytest.raises(LmfuseError) as info:
        fn(*args, **kwargs)
    e = info.value
    assert e.status_name == status_name, str(e)
    assert e.status == getattr(_ffi, status_name)
    assert e.message and e.message.startswith("lmf_"), e.message
    return e


def test_error_object():
    e = LmfuseError(6, "lmf_x: overlap")
    assert (e.status, e.status_name, e.message) == (6, "LMF_ERR_OVERLAP", "lmf_x: overlap")
    assert "LMF_ERR_OVERLAP" in str(e)
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.status, e2.message) == (6, "lmf_x: overlap")


def test_cuda_context_without_cuda():
    if lmfuse.backend_available("cuda"):
        pytest.skip("this machine has CUDA")
    with pytest.raises(LmfuseError) as info:
        lmfuse.Context("cuda")
    assert info.value.status_name in ("LMF_ERR_NOT_COMPILED", "LMF_ERR_NO_DEVICE")
    assert "CUDA" in info.value.message


def test_context_arguments():
    _raises("LMF_ERR_INVALID_ARGUMENT", lmfuse.Context, "cpu", cpu_threads=-1)
    _raises("LMF_ERR_INVALID_ARGUMENT", lmfuse.Context, "cpu", device=-1)
    with pytest.raises(ValueError):
        lmfuse.Context("tpu")
    c = lmfuse.Context("cpu")
    c.close()
    c.close()
    with pytest.raises(ValueError, match="closed"):
        lmfuse.Plan(c, [torch.zeros(4)])


def test_struct_size_checked():
    lib = _ffi.lib()
    cfg = _ffi.new(_ffi.ContextConfig)
    cfg.struct_size = 3
    h = ctypes.c_void_p()
    e = _raises("LMF_ERR_STRUCT_SIZE", lambda: lmfuse.errors.check(
        lib.lmf_context_create(ctypes.byref(h), ctypes.byref(cfg))))
    assert "struct_size" in e.message
    cfg = _ffi.new(_ffi.ContextConfig, version=99)
    _raises("LMF_ERR_STRUCT_SIZE", lambda: lmfuse.errors.check(
        lib.lmf_context_create(ctypes.byref(h), ctypes.byref(cfg))))


def test_plan_overlap(ctx):
    t = torch.zeros(32)
    e = _raises("LMF_ERR_OVERLAP", lmfuse.Plan, ctx, [t[0:16], t[8:24]])
    assert "overlaps" in e.message
    _raises("LMF_ERR_OVERLAP", lmfuse.Plan, ctx, [t, t])
    _raises("LMF_ERR_OVERLAP", lmfuse.Plan, ctx, [t[:8].view(torch.bfloat16)],
            masters=[t[4:20]])


def test_plan_bad_descriptors(ctx):
    _raises("LMF_ERR_NULL_POINTER", lmfuse.Plan, ctx, [torch.zeros(0)])
    _raises("LMF_ERR_INVALID_ARGUMENT", lmfuse.Plan, ctx, [torch.zeros(4)], weight_decay=[2])
    _raises("LMF_ERR_INVALID_ARGUMENT", lmfuse.Plan, ctx, [torch.zeros(4)], dist=7)
    _raises("LMF_ERR_INVALID_ARGUMENT", lmfuse.Plan, ctx, [torch.zeros(4)], rounding=5)
    _raises("LMF_ERR_INVALID_SIZE", lmfuse.Plan, ctx, [torch.zeros(4)], global_offsets=[-1])
    # misaligned f32 data: a numpy view starting 1 byte into a buffer
    raw = np.zeros(40, dtype=np.uint8)
    _raises("LMF_ERR_INVALID_ARGUMENT", lmfuse.Plan, ctx, [raw[1:33].view(np.float32)])
    assert len(lmfuse.Plan(ctx, [])) == 0  # an empty plan is fine


def test_python_side_rejections(ctx):
    with pytest.raises(ValueError, match="contiguous"):
        lmfuse.Plan(ctx, [torch.zeros(8, 8).t()])
    with pytest.raises(TypeError, match="int32"):
        lmfuse.Plan(ctx, [torch.zeros(8, dtype=torch.int32)])
    with pytest.raises(TypeError, match="int64"):
        lmfuse.Plan(ctx, [np.zeros(8, dtype=np.int64)])
    with pytest.raises(ValueError, match="contiguous"):
        lmfuse.Plan(ctx, [np.zeros((8, 8), dtype=np.float32).T])
    with pytest.raises(TypeError):
        lmfuse.Plan(ctx, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="elements"):
        lmfuse.Plan(ctx, [torch.zeros(8, dtype=torch.bfloat16)], masters=[torch.zeros(4)])
    with pytest.raises(TypeError, match="float32"):
        lmfuse.Plan(ctx, [torch.zeros(8, dtype=torch.bfloat16)],
                    masters=[torch.zeros(8, dtype=torch.float16)])
    with pytest.raises(ValueError):
        lmfuse.Plan(ctx, [torch.zeros(8)], dist="uniform")
    with pytest.raises(ValueError):
        lmfuse.Plan(ctx, [torch.zeros(8)]).perturb(-1, 1.0)


def test_optimizer_rejections():
    with pytest.raises(TypeError, match="int64"):
        lmfuse.MeZO([torch.zeros(4, dtype=torch.int64)])
    with pytest.raises(ValueError, match="contiguous"):
        lmfuse.MeZO([torch.nn.Parameter(torch.zeros(8, 8).t())])
    w = torch.nn.Parameter(torch.zeros(4))
    with pytest.raises(ValueError, match="more than once"):
        lmfuse.MeZO([w, w])
    with pytest.raises(ValueError, match="eps"):
        lmfuse.MeZO([w], eps=0.0)
    with pytest.raises(TypeError, match="closure"):
        lmfuse.MeZO([w]).step()
    with pytest.raises(ValueError, match="scalar"):
        lmfuse.MeZO([w]).step(lambda: torch.zeros(3))


def test_failed_calls_change_nothing(ctx):
    t = torch.randn(1000)
    before = t.clone()
    plan = lmfuse.Plan(ctx, [t])
    _raises("LMF_ERR_NONFINITE", plan.perturb, 1, math.nan)
    _raises("LMF_ERR_NONFINITE", plan.step, 1, 0.5, math.inf)
    _raises("LMF_ERR_INVALID_ARGUMENT", plan.step, 1, 0.5, 0.1, weight_decay=-1.0)
    _raises("LMF_ERR_NONFINITE", plan.step, 1, 0.5, 0.1, next_seed=2, next_scale=math.inf)
    assert torch.equal(t, before)
    plan.perturb(1, 1e-3)
    perturbed = t.clone()
    e = _raises("LMF_ERR_INVALID_STATE", plan.perturb, 2, 1e-3)
    assert "seed 1" in e.message
    _raises("LMF_ERR_INVALID_STATE", plan.step, 2, 0.5, 0.1)
    _raises("LMF_ERR_INVALID_STATE", plan.update_multi, [1], [0.5], 0.1)
    assert torch.equal(t, perturbed) and plan.perturbation == (1, pytest.approx(1e-3))
    plan.restore()
    _raises("LMF_ERR_INVALID_SIZE", plan.update_multi, [], [], 0.1)
    _raises("LMF_ERR_INVALID_SIZE", plan.update_multi, list(range(65)), [0.0] * 65, 0.1)
    _raises("LMF_ERR_NONFINITE", plan.update_multi, [1], [0.5], math.nan)
    _raises("LMF_ERR_INVALID_ARGUMENT", plan.update_multi, [1], [0.5], 0.1, weight_decay=-2.0)


def test_nonfinite_grad_skips_update(ctx):
    t = torch.randn(100)
    before = t.clone()
    plan = lmfuse.Plan(ctx, [t])
    plan.perturb(3, 0.5)
    assert plan.step(3, math.nan, 0.1, weight_decay=0.5) is True  # restored, not updated
    torch.testing.assert_close(t, before, rtol=0, atol=1e-6)
    assert plan.perturbation == (0, 0.0)
    g = torch.tensor([math.inf])
    skipped = torch.zeros(1, dtype=torch.int32)
    assert plan.step(3, g, 0.1, skipped=skipped) is True and skipped.item() == 1
    assert plan.update_multi([1, 2], [0.5, math.nan], 0.1) is True
    torch.testing.assert_close(t, before, rtol=0, atol=1e-6)


def test_fill_z_errors(ctx):
    _raises("LMF_ERR_INVALID_SIZE", lmfuse.fill_z, ctx, 0, 1)
    _raises("LMF_ERR_INVALID_SIZE", lmfuse.fill_z, ctx, 4, 1, offset=-4)
    _raises("LMF_ERR_INVALID_ARGUMENT", lmfuse.fill_z, ctx, 4, 1, dist=3)
    with pytest.raises(ValueError, match="fewer"):
        lmfuse.fill_z(ctx, 8, 1, out=torch.empty(4))
    with pytest.raises(TypeError):
        lmfuse.fill_z(ctx, 4, 1, out=torch.empty(4, dtype=torch.float64))


def test_train_step_callback_error(ctx):
    t = torch.randn(50)
    before = t.clone()
    plan = lmfuse.Plan(ctx, [t])

    def boom():
        raise RuntimeError("loss exploded")
    with pytest.raises(LmfuseError) as info:
        plan.train_step(boom, 5, 1e-3, 0.1)
    assert info.value.status_name == "LMF_ERR_CALLBACK"
    assert isinstance(info.value.__cause__, RuntimeError)
    torch.testing.assert_close(t, before, rtol=0, atol=1e-6)
    assert plan.perturbation == (0, 0.0)


def test_optimizer_closure_error_restores():
    w = torch.nn.Parameter(torch.randn(64, 4))
    before = w.detach().clone()
    opt = lmfuse.MeZO([w], lr=0.1)
    with pytest.raises(ZeroDivisionError):
        opt.step(lambda: 1 / 0)
    assert not opt.perturbed and opt.step_count == 0
    torch.testing.assert_close(w.detach(), before, rtol=0, atol=1e-6)
