"""lmfuse.MeZO: MeZO (Malladi et al. 2023) as a torch optimizer, on lmfuse's fused passes.

    opt = lmfuse.MeZO(model.parameters(), lr=1e-6, eps=1e-3, weight_decay=0.0)
    for batch in data:
        def closure():
            return loss_fn(model(batch.x), batch.y)     # a forward pass only: no backward()
        loss = opt.step(closure)
    opt.restore()                                       # before evaluation or saving weights

Each ``step(closure)`` runs, for a seed drawn from a counter (``step_seed(seed, t)``):
``theta += eps z`` (or already there, see below); ``L+ = closure()``; ``theta -= 2 eps z``;
``L- = closure()``; then one fused pass that restores, decays (``weight_decay`` on tensors for which
``no_decay(p)`` is False, default: ``p.ndim >= 2``) and updates ``theta -= lr g z`` with
``g = (L+ - L-) / (2 eps)`` computed on the parameters' device as a 1-element float32 tensor that
the pass reads itself (no ``.item()``, no host sync on CUDA). The closure runs under
``torch.no_grad()``; it may return a tensor or a float. It returns L+ as the closure returned it.

**fuse_next=True** (default) also adds the next step's ``+eps z`` in that same pass (2 passes per
step instead of 3). The weights then REST PERTURBED between steps: call ``opt.restore()`` or use
``with opt.eval_mode(): ...`` before evaluating, checkpointing or reading the weights; the next
``step`` notices and perturbs again itself. ``opt.perturbed`` tells whether they are perturbed now.

Precision: f32, f16 and bf16 parameters; arithmetic is fp32 with one rounding per stored value.
``master_weights=True`` keeps an fp32 master copy (allocated here, same device, 4 bytes/param) of
each 16-bit parameter: the 16-bit tensor becomes a working copy written from it, restore is exact
and small updates accumulate. ``rounding="stochastic"`` rounds 16-bit parameters without a master
stochastically (unbiased; no extra memory). ``dist="rademacher"`` uses +-1 directions (cheaper).

CUDA parameters run on a CUDA context on ``torch.cuda.current_stream()`` (captured at each call),
CPU parameters on a CPU context; pass ``context=`` to choose one. The optimizer keeps one parameter
group (lr schedulers work on ``param_groups[0]["lr"]``); per-tensor weight decay is ``no_decay``.
Losses and g of the last step: ``last_loss_plus``, ``last_loss_minus``, ``last_grad``,
``last_skipped`` (each reads the device value when accessed, i.e. syncs then, not during step).
"""

import contextlib
import ctypes

import torch

from . import _ffi
from .context import Context
from .mezo import Plan

_M64 = (1 << 64) - 1


def splitmix64(x):
    """The SplitMix64 output function (Steele, Lea, Flood 2014) of a 64-bit integer."""
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def step_seed(seed, step):
    """The seed of step ``step`` (0-based): output ``step`` of a SplitMix64 generator seeded with
    ``seed``, i.e. splitmix64(seed + (step + 1) * 0x9E3779B97F4A7C15 mod 2^64)."""
    return splitmix64((int(seed) + (int(step) + 1) * 0x9E3779B97F4A7C15) & _M64)


def _default_no_decay(p):
    return p.ndim < 2


class MeZO(torch.optim.Optimizer):
    """MeZO optimizer on lmfuse; see the module docstring for the step and the options."""

    def __init__(self, params, lr=1e-6, eps=1e-3, weight_decay=0.0, dist="gaussian",
                 rounding="nearest", master_weights=False, seed=0, fuse_next=True, no_decay=None,
                 context=None):
        if not eps > 0:
            raise ValueError("eps must be > 0, got %r" % (eps,))
        if weight_decay < 0:
            raise ValueError("weight_decay must be >= 0, got %r" % (weight_decay,))
        if dist not in _ffi.DISTS:
            raise ValueError("dist must be 'gaussian' or 'rademacher', not %r" % (dist,))
        if rounding not in _ffi.ROUNDINGS:
            raise ValueError("rounding must be 'nearest' or 'stochastic', not %r" % (rounding,))
        defaults = dict(lr=lr, eps=eps, weight_decay=weight_decay)
        params = list(params) if not isinstance(params, torch.Tensor) else [params]
        tensors = [p for p in params if isinstance(p, torch.Tensor)]
        if len({id(p) for p in tensors}) != len(tensors):
            raise ValueError("a parameter appears more than once")
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("lmfuse.MeZO takes one parameter group; use no_decay= to exempt "
                             "tensors from weight decay")
        params = self.param_groups[0]["params"]
        no_decay = no_decay or _default_no_decay
        for i, p in enumerate(params):
            if not p.is_floating_point() or p.dtype not in (torch.float32, torch.float16,
                                                            torch.bfloat16):
                raise TypeError("parameter %d has dtype %s; lmfuse.MeZO takes float32, float16 or "
                                "bfloat16" % (i, p.dtype))
            if not p.is_contiguous():
                raise ValueError("parameter %d is not contiguous (shape %s, stride %s): lmfuse "
                                 "updates parameters in place and needs contiguous memory"
                                 % (i, tuple(p.shape), tuple(p.stride())))
        devices = {p.device for p in params}
        if len(devices) > 1:
            raise ValueError("parameters live on several devices %s; use one MeZO per device"
                             % sorted(str(d) for d in devices))
        self.device = devices.pop() if devices else torch.device("cpu")
        self._own_context = context is None
        if context is None:
            if self.device.type == "cuda":
                context = Context("cuda", device=self.device.index or 0)
            else:
                context = Context("cpu")
        self.context = context
        self.dist, self.rounding, self.seed = dist, rounding, int(seed)
        self.fuse_next = bool(fuse_next)
        self.master_weights = bool(master_weights)
        keep = [(i, p) for i, p in enumerate(params) if p.numel() > 0]
        self._params = [p for _, p in keep]
        self._masters = [p.detach().to(torch.float32).contiguous().clone()
                         if master_weights and p.dtype != torch.float32 else None
                         for p in self._params]
        self.plan = Plan(context, [p.detach() for p in self._params], uids=[i for i, _ in keep],
                         weight_decay=[not no_decay(p) for p in self._params],
                         masters=self._masters, dist=dist, rounding=rounding)
        self.step_count = 0
        self._last = None

    # ---- the step --------------------------------------------------------------------------------

    def seed_for_step(self, step):
        """The seed z of step ``step`` uses: ``step_seed(self.seed, step)``."""
        return step_seed(self.seed, step)

    def _loss_tensor(self, loss):
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise ValueError("the closure returned a tensor of %d elements; return a scalar loss"
                                 % loss.numel())
            return loss.detach().reshape(1).to(device=self.device, dtype=torch.float32)
        return torch.tensor([float(loss)], dtype=torch.float32, device=self.device)

    def step(self, closure=None):
        """One MeZO step; ``closure()`` returns the loss at the current parameters. Returns L+."""
        if closure is None:
            raise TypeError("lmfuse.MeZO.step needs a closure that returns the loss (forward only)")
        group = self.param_groups[0]
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        eps32 = ctypes.c_float(eps).value
        plan, t = self.plan, self.step_count
        seed = self.seed_for_step(t)
        cur_seed, cur_off = plan.perturbation
        if cur_off != 0.0 and (cur_seed != seed or cur_off != eps32):
            plan.restore()  # carried from another eps (changed in param_groups) or a manual perturb
            cur_off = 0.0
        if cur_off == 0.0:
            plan.perturb(seed, eps)
        try:
            with torch.no_grad():
                loss_plus = closure()
                plan.perturb(seed, -2.0 * eps)
                loss_minus = closure()
            lp, lm = self._loss_tensor(loss_plus), self._loss_tensor(loss_minus)
        except BaseException:
            plan.restore()
            raise
        two_eps = torch.full((1,), 2.0 * eps32, dtype=torch.float32, device=self.device)
        g = torch.div(torch.sub(lp, lm), two_eps)  # fp32 on the device, like the C driver
        skipped = torch.zeros(1, dtype=torch.int32, device=self.device)
        plan.step(seed, g, lr, wd,
                  next_seed=self.seed_for_step(t + 1) if self.fuse_next else None,
                  next_scale=eps, skipped=skipped)
        self.step_count = t + 1
        self._last = (lp, lm, g, skipped)
        return loss_plus

    # ---- perturbation state ------------------------------------------------------------------

    @property
    def perturbed(self):
        """True while the parameters carry a perturbation (between fused steps)."""
        return self.plan.perturbation[1] != 0.0

    def restore(self):
        """Removes the perturbation the parameters carry (no-op if none): call it before
        evaluation, checkpointing or reading the weights when fuse_next is on."""
        self.plan.restore()

    @contextlib.contextmanager
    def eval_mode(self):
        """``with opt.eval_mode(): evaluate()``: the parameters are unperturbed inside; the next
        step perturbs them again itself."""
        self.restore()
        yield self

    # ---- last step ---------------------------------------------------------------------------

    def _last_value(self, k):
        if self._last is None:
            return None
        return self._last[k].item()

    @property
    def last_loss_plus(self):
        return self._last_value(0)

    @property
    def last_loss_minus(self):
        return self._last_value(1)

    @property
    def last_grad(self):
        """g = (L+ - L-) / (2 eps) of the last step (a host sync on CUDA when read)."""
        return self._last_value(2)

    @property
    def last_skipped(self):
        """True if the last step's g was not finite and its update was skipped."""
        v = self._last_value(3)
        return None if v is None else bool(v)

    @property
    def last_step_tensors(self):
        """(L+, L-, g, skipped) of the last step as 1-element device tensors (no sync)."""
        return self._last

    # ---- state -------------------------------------------------------------------------------

    def state_dict(self):
        """torch's optimizer state plus a "mezo" entry: step counter, seed, options and the fp32
        masters (when master_weights). It does not hold the parameters: restore() before saving
        them."""
        sd = super().state_dict()
        sd["mezo"] = {
            "step": self.step_count, "seed": self.seed, "dist": self.dist,
            "rounding": self.rounding, "fuse_next": self.fuse_next,
            "masters": [None if m is None else m.clone() for m in self._masters],
        }
        return sd

    def load_state_dict(self, state_dict):
        """Loads what state_dict() saved. With masters the 16-bit working copies are rewritten from
        them (round to nearest); the parameters are left unperturbed."""
        state_dict = dict(state_dict)
        mezo = state_dict.pop("mezo", None)
        super().load_state_dict(state_dict)
        self.plan.restore()
        if mezo is None:
            return
        self.step_count = int(mezo["step"])
        self.seed = int(mezo["seed"])
        with torch.no_grad():
            for p, m, saved in zip(self._params, self._masters, mezo.get("masters") or []):
                if m is not None and saved is not None:
                    m.copy_(saved)
                    p.copy_(m)

    def sync_masters(self):
        """Re-reads the fp32 masters from the parameters, after you changed the parameters
        yourself (e.g. loaded a checkpoint into the model). Restores first."""
        self.plan.restore()
        with torch.no_grad():
            for p, m in zip(self._params, self._masters):
                if m is not None:
                    m.copy_(p)

    def close(self):
        """Frees the plan (the context too, when the optimizer created it)."""
        self.plan.close()
        if self._own_context:
            self.context.close()
