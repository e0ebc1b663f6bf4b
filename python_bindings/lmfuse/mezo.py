"""Low-level MeZO: ``Plan`` wraps ``lmf_mezo_plan_t`` (include/lmfuse/mezo.h); ``fill_z`` exports z.

A plan is a fixed list of parameter tensors (torch tensors or numpy arrays; f32, f16 or bf16;
contiguous; in the context's memory) that every pass walks in one launch. lmfuse updates them IN
PLACE through their data pointers; the plan keeps references to them (and to their masters), so they
stay alive while it exists. Do not resize or reallocate them (``p.data = ...``) while the plan lives.

    ctx = lmfuse.Context("cpu")
    plan = lmfuse.Plan(ctx, [w, b], weight_decay=[True, False])
    plan.perturb(seed, +eps); lp = loss()
    plan.perturb(seed, -2 * eps); lm = loss()
    plan.step(seed, (lp - lm) / (2 * eps), lr, wd)           # restore + decay + update, one pass

z(seed, uid, i) is a pure function of the seed, the tensor's uid (its index unless ``uids`` says
otherwise) and the global element index, identical on every backend; ``plan.fill_z`` returns it.
Most users want ``lmfuse.MeZO``, the optimizer built on this.
"""

import collections
import ctypes

from . import _ffi
from ._tensors import check_device, describe, is_torch, np, stream_handle, torch
from .errors import LmfuseError, check
from ._handle import Closeable

StepResult = collections.namedtuple("StepResult", "loss_plus loss_minus grad skipped")

_U64 = (1 << 64) - 1


def _seed(value, what="seed"):
    value = int(value)
    if not 0 <= value <= _U64:
        raise ValueError("%s must be in [0, 2**64), got %d" % (what, value))
    return value


def _enum(value, table, what):
    if isinstance(value, str):
        if value not in table:
            raise ValueError("%s must be one of %s, not %r" % (what, sorted(table), value))
        return table[value]
    return int(value)  # raw values go to C unchanged, which reports bad ones


def _per_tensor(value, n, what):
    """``value`` for each of n tensors: a list/tuple (checked for length) or one value for all."""
    if not isinstance(value, (list, tuple)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError("%s has %d entries for %d tensors" % (what, len(value), n))
    return value


def fill_z(context, n, seed, uid=0, offset=0, dist="gaussian", out=None, stream=None):
    """z(seed, uid, offset + k) for k < n as a float32 tensor in the context's memory.

    These are the exact values every pass of a plan uses for the tensor with that uid (Gaussian or
    Rademacher per ``dist``). ``out`` (a contiguous float32 torch tensor / numpy array with at least
    n elements) is filled instead of a new tensor when given; without torch a numpy array is
    returned. On a CUDA context the fill is enqueued on ``stream``.
    """
    lib = _ffi.lib()
    n = int(n)
    if out is None:
        if torch is not None:
            dev = "cpu" if context.backend == "cpu" else "cuda:%d" % context.device
            out = torch.empty(max(n, 1), dtype=torch.float32, device=dev)
        else:
            out = np.empty(max(n, 1), dtype=np.float32)
        result = out[:n] if n >= 1 else out
    else:
        result = out
    info = describe(out, "fill_z out", (_ffi.LMF_DTYPE_F32,))
    check_device(info, context, "fill_z out")
    if info.numel < n:
        raise ValueError("fill_z out has %d elements, fewer than n = %d" % (info.numel, n))
    check(lib.lmf_mezo_fill_z(context.handle, _enum(dist, _ffi.DISTS, "dist"), _seed(seed),
                              int(uid), int(offset), n, info.ptr, stream_handle(context, stream)))
    return result


def _skip_flag(args, skipped, host_value, ctx, host_reason):
    """Points args.skipped_ptr at the caller's int32 tensor ``skipped`` or, where the flag is host
    memory (a host g, or a CPU context), at a fresh c_int32 that is returned for reading after the
    call. Returns None when the flag lives on the device."""
    if skipped is not None:
        s = describe(skipped, "skipped", (_ffi.LMF_DTYPE_I32,))
        if host_value:
            if s.device != ("cpu", 0):
                raise ValueError("skipped must be a CPU tensor when " + host_reason)
        else:
            check_device(s, ctx, "skipped")
        args.skipped_ptr = s.ptr
        return None
    if host_value or ctx.backend == "cpu":
        flag = ctypes.c_int32(0)
        args.skipped_ptr = ctypes.addressof(flag)
        return flag
    return None


class Plan(Closeable):
    """A MeZO plan over a list of parameter tensors; see the module docstring.

    Args:
        context: the ``lmfuse.Context`` whose backend runs the passes.
        tensors: torch tensors / numpy arrays (f32, f16, bf16), contiguous, in the context's memory.
        uids: per-tensor ids keying z (default: the index in ``tensors``). Keep them stable across
            runs to reproduce a run; shards of one logical tensor share its uid.
        weight_decay: a bool for all tensors, or one per tensor (False for biases and norms).
        masters: None, or one entry per tensor: None or an fp32 tensor of the same numel that holds
            the true parameter (the 16-bit tensor then becomes a working copy written from it).
        global_offsets: for shards, the index of each shard's first element in its logical tensor.
        dist: "gaussian" or "rademacher"; rounding: "nearest" or "stochastic" (16-bit tensors
            without a master).
    """

    def __init__(self, context, tensors, *, uids=None, weight_decay=True, masters=None,
                 global_offsets=None, dist="gaussian", rounding="nearest"):
        self._handle = None
        self.context = context
        lib = _ffi.lib()
        tensors = list(tensors)
        n = len(tensors)
        uids = list(range(n)) if uids is None else _per_tensor(uids, n, "uids")
        decay = _per_tensor(weight_decay, n, "weight_decay")
        masters = _per_tensor(masters, n, "masters")
        offsets = _per_tensor(global_offsets, n, "global_offsets")
        self.dist = dist
        table = (_ffi.MezoTensor * max(n, 1))()
        for i, t in enumerate(tensors):
            info = describe(t, "tensors[%d]" % i)
            check_device(info, context, "tensors[%d]" % i)
            d = table[i]
            d.data = info.ptr
            d.numel = info.numel
            d.global_offset = int(offsets[i] or 0)
            d.uid = int(uids[i])
            d.dtype = info.dtype
            flag = decay[i]
            d.weight_decay = int(flag) if isinstance(flag, int) and not isinstance(flag, bool) \
                else int(bool(flag))  # raw ints go to C unchanged (it rejects all but 0 and 1)
            if masters[i] is not None:
                m = describe(masters[i], "masters[%d]" % i, (_ffi.LMF_DTYPE_F32,))
                check_device(m, context, "masters[%d]" % i)
                if m.numel != info.numel:
                    raise ValueError("masters[%d] has %d elements, tensors[%d] has %d"
                                     % (i, m.numel, i, info.numel))
                d.master = m.ptr
        cfg = _ffi.new(_ffi.MezoConfig, dist=_enum(dist, _ffi.DISTS, "dist"),
                       rounding=_enum(rounding, _ffi.ROUNDINGS, "rounding"))
        h = ctypes.c_void_p()
        check(lib.lmf_mezo_plan_create(ctypes.byref(h), context.handle, table, n, ctypes.byref(cfg)))
        self._handle = h
        self._table = table
        self.tensors = tensors            # references keep the memory alive
        self.masters = masters
        self._last_stream = None
        context._adopt(self)

    # ---- state ---------------------------------------------------------------------------------

    @property
    def handle(self):
        if self._handle is None:
            raise ValueError("this lmfuse.Plan is closed")
        return self._handle

    @property
    def numel(self):
        """Total elements over all tensors."""
        v = ctypes.c_int64()
        check(_ffi.lib().lmf_mezo_plan_numel(self.handle, ctypes.byref(v)))
        return v.value

    @property
    def perturbation(self):
        """(seed, offset) of the perturbation offset * z(seed) the tensors carry; offset 0: none."""
        s, o = ctypes.c_uint64(), ctypes.c_float()
        check(_ffi.lib().lmf_mezo_plan_perturbation(self.handle, ctypes.byref(s), ctypes.byref(o)))
        return s.value, o.value

    def __len__(self):
        return len(self.tensors)

    def _stream(self, stream):
        h = stream_handle(self.context, stream)
        self._last_stream = h
        return h

    # ---- passes --------------------------------------------------------------------------------

    def perturb(self, seed, scale, stream=None):
        """theta += scale * z(seed), one pass. Fails (LMF_ERR_INVALID_STATE) if the plan already
        carries a perturbation under another seed."""
        check(_ffi.lib().lmf_mezo_perturb(self.handle, _seed(seed), float(scale), self._stream(stream)))

    def restore(self, stream=None):
        """Removes the current perturbation (a no-op when there is none). With masters it is exact."""
        check(_ffi.lib().lmf_mezo_restore(self.handle, self._stream(stream)))

    def step(self, seed, grad, lr, weight_decay=0.0, next_seed=None, next_scale=0.0, skipped=None,
             stream=None):
        """One fused pass: restore the perturbation under ``seed``, decay, theta -= lr * grad * z(seed)
        and, when ``next_seed`` is given, add ``next_scale`` * z(next_seed) (the weights then rest
        perturbed).

        ``grad`` is a float, or a 1-element float32 tensor in the context's memory (read by the
        pass itself, so no host sync on CUDA). A non-finite grad skips decay and update (restore
        and next perturbation still happen). ``skipped``: optional 1-element int32 tensor receiving
        that flag, in the same kind of memory as ``grad``. Returns the flag as a bool when it is in
        host memory at no cost (host grad, or a CPU context), else None.
        """
        ctx = self.context
        args = _ffi.new(_ffi.MezoStepArgs, seed=_seed(seed), lr=float(lr),
                        weight_decay=float(weight_decay))
        host_grad = not (is_torch(grad) or (np is not None and isinstance(grad, np.ndarray)))
        if host_grad:
            args.grad = float(grad)
        else:
            g = describe(grad, "grad", (_ffi.LMF_DTYPE_F32,))
            check_device(g, ctx, "grad")
            if g.numel < 1:
                raise ValueError("grad is an empty tensor")
            args.grad_ptr = g.ptr
        if next_seed is not None:
            args.perturb_next = 1
            args.next_seed = _seed(next_seed, "next_seed")
            args.next_scale = float(next_scale)
        flag = _skip_flag(args, skipped, host_grad, ctx, "grad is a host float")
        check(_ffi.lib().lmf_mezo_step(self.handle, ctypes.byref(args), self._stream(stream)))
        if flag is not None:
            return bool(flag.value)
        if skipped is not None and ctx.backend == "cpu":
            return bool(int(skipped.reshape(-1)[0]))
        return None

    def update_multi(self, seeds, coeffs, lr, weight_decay=0.0, skipped=None, stream=None):
        """theta = theta * (1 - lr wd) - lr * sum_j coeffs[j] * z(seeds[j]), one pass (n-SPSA,
        per-rank seeds). The plan must be unperturbed. ``coeffs`` is a list of floats or a float32
        tensor in the context's memory. If any coefficient is not finite nothing changes; the flag
        is returned (bool) when readable at no cost, or written to ``skipped`` (int32 tensor)."""
        ctx = self.context
        seeds = [_seed(s, "seeds[%d]" % i) for i, s in enumerate(seeds)]
        n = len(seeds)
        seed_arr = (ctypes.c_uint64 * max(n, 1))(*seeds)
        args = _ffi.new(_ffi.MezoMultiArgs, num_seeds=n, seeds=ctypes.addressof(seed_arr),
                        lr=float(lr), weight_decay=float(weight_decay))
        host_coeffs = not (is_torch(coeffs) or (np is not None and isinstance(coeffs, np.ndarray)))
        if host_coeffs:
            coeffs = [float(c) for c in coeffs]
            if len(coeffs) != n:
                raise ValueError("%d coeffs for %d seeds" % (len(coeffs), n))
            coeff_arr = (ctypes.c_float * max(n, 1))(*coeffs)
            args.coeffs = ctypes.addressof(coeff_arr)
        else:
            c = describe(coeffs, "coeffs", (_ffi.LMF_DTYPE_F32,))
            check_device(c, ctx, "coeffs")
            if c.numel < n:
                raise ValueError("coeffs has %d elements for %d seeds" % (c.numel, n))
            args.coeffs_ptr = c.ptr
        flag = _skip_flag(args, skipped, host_coeffs, ctx, "coeffs are host floats")
        check(_ffi.lib().lmf_mezo_update_multi(self.handle, ctypes.byref(args), self._stream(stream)))
        if flag is not None:
            return bool(flag.value)
        return None

    def train_step(self, loss_fn, seed, eps, lr, weight_decay=0.0, next_seed=None, stream=None):
        """A whole MeZO step by the C driver (lmf_mezo_train_step) around ``loss_fn()``.

        ``loss_fn()`` evaluates the model at the current parameters and returns the loss (a float
        or 1-element tensor; it is read on the host). If the plan carries +eps z(seed) from the
        previous fused step it is used as is. An exception in ``loss_fn`` restores the parameters
        and is re-raised as the cause of LmfuseError(LMF_ERR_CALLBACK). Returns a StepResult.
        """
        raised = []

        def trampoline(_user, out):
            try:
                out[0] = float(loss_fn())
                return 0
            except BaseException as e:  # never let an exception unwind through C
                raised.append(e)
                return 1

        cb = _ffi.LOSS_FN(trampoline)
        args = _ffi.new(_ffi.MezoDriverArgs, seed=_seed(seed), eps=float(eps), lr=float(lr),
                        weight_decay=float(weight_decay))
        if next_seed is not None:
            args.perturb_next = 1
            args.next_seed = _seed(next_seed, "next_seed")
        res = _ffi.MezoStepResult()
        try:
            check(_ffi.lib().lmf_mezo_train_step(self.handle, ctypes.byref(args), cb, None,
                                                 ctypes.byref(res), self._stream(stream)))
        except LmfuseError as e:
            if raised:
                raise e from raised[0]
            raise
        return StepResult(res.loss_plus, res.loss_minus, res.grad, bool(res.skipped))

    def fill_z(self, n, seed, uid=0, offset=0, dist=None, out=None, stream=None):
        """z(seed, uid, offset + k), k < n, as this plan's passes use it (dist: the plan's)."""
        return fill_z(self.context, n, seed, uid, offset, self.dist if dist is None else dist, out,
                      stream)

    # ---- lifetime ------------------------------------------------------------------------------

    def close(self):
        """Frees the plan (waiting first for the last stream it used on CUDA). Idempotent."""
        if self._handle is None:
            return
        lib = _ffi.lib()
        if self.context.backend == "cuda" and not self.context.closed:
            lib.lmf_stream_synchronize(self.context.handle, self._last_stream)
        lib.lmf_mezo_plan_destroy(self._handle)
        self._handle = None

    def __repr__(self):
        if self._handle is None:
            return "lmfuse.Plan(closed)"
        return "lmfuse.Plan(%d tensors, %d elements, %r)" % (len(self), self.numel, self.context)
