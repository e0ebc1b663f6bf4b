"""z as lmfuse exports it: statistics, invariance to sharding, and identity with what the passes add."""

import torch

import lmfuse
from lmfuse import _ffi


def test_gaussian_statistics(ctx):
    n = 1 << 21
    z = lmfuse.fill_z(ctx, n, 0x1234, uid=7).double()
    assert z.shape == (n,)
    mean, var = z.mean().item(), z.var().item()
    kurt = ((z - mean) ** 4).mean().item() / var ** 2
    # standard errors: mean 7e-4, var 1e-3, kurtosis 3.4e-3; bounds at about 5 sigma
    assert abs(mean) < 3.5e-3 and abs(var - 1) < 5e-3 and abs(kurt - 3) < 0.02
    other_uid = lmfuse.fill_z(ctx, n, 0x1234, uid=8).double()
    next_seed = lmfuse.fill_z(ctx, n, 0x1235, uid=7).double()
    for w in (other_uid, next_seed):
        assert abs(torch.corrcoef(torch.stack([z, w]))[0, 1].item()) < 3.5e-3
    assert torch.isfinite(z).all()


def test_rademacher_values(ctx):
    z = lmfuse.fill_z(ctx, 1 << 20, 5, uid=1, dist="rademacher")
    assert torch.equal(z.abs(), torch.ones_like(z))
    assert abs(z.mean().item()) < 5e-3


def test_deterministic_and_shard_invariant(ctx):
    n = 100003
    whole = lmfuse.fill_z(ctx, n, 42, uid=3)
    assert torch.equal(whole, lmfuse.fill_z(ctx, n, 42, uid=3))
    cuts = [0, 1, 33334, 66671, n]
    shards = [lmfuse.fill_z(ctx, b - a, 42, uid=3, offset=a) for a, b in zip(cuts, cuts[1:])]
    assert torch.equal(torch.cat(shards), whole)
    out = torch.full((n + 5,), float("nan"))
    assert lmfuse.fill_z(ctx, n, 42, uid=3, out=out) is out
    assert torch.equal(out[:n], whole) and out[n:].isnan().all()


def test_passes_add_exactly_z(ctx):
    """A plan over zeros perturbed by scale s holds fl(s * z): z is what fill_z returns, per uid,
    with any tensor order and sharding."""
    a, b = torch.zeros(1000), torch.zeros(37)
    shard = torch.zeros(500)
    plan = lmfuse.Plan(ctx, [b, a, shard], uids=[9, 4, 4], global_offsets=[0, 0, 1000])
    plan.perturb(77, 1.0)
    assert torch.equal(a, lmfuse.fill_z(ctx, 1000, 77, uid=4))
    assert torch.equal(shard, lmfuse.fill_z(ctx, 500, 77, uid=4, offset=1000))
    assert torch.equal(b, plan.fill_z(37, 77, uid=9))
    plan.restore()
    c = torch.zeros(1000)
    with lmfuse.Plan(ctx, [c], uids=[4]) as p2:
        p2.perturb(77, 1e-3)
    assert torch.equal(c, lmfuse.fill_z(ctx, 1000, 77, uid=4) * 1e-3)


def test_numpy_arrays(ctx):
    np = __import__("numpy")
    z = np.empty(64, dtype=np.float32)
    lmfuse.fill_z(ctx, 64, 11, out=z)
    assert np.array_equal(z, lmfuse.fill_z(ctx, 64, 11).numpy())
    x = np.zeros(64, dtype=np.float16)
    plan = lmfuse.Plan(ctx, [x])
    plan.perturb(11, 1.0)
    assert np.array_equal(x, z.astype(np.float16))


def test_philox_known_answers():
    lib = _ffi.lib()
    u32x4, u32x2 = _ffi.c_uint32 * 4, _ffi.c_uint32 * 2
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
        ((0xffffffff,) * 4, (0xffffffff,) * 2, (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
        ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
         (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
    ]
    for counter, key, want in cases:
        out = u32x4()
        lib.lmf_philox4x32_10(u32x4(*counter), u32x2(*key), out)
        assert tuple(out) == want
