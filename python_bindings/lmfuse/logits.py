"""Decoding-time model arithmetic: several models' next-token logits combined, masked, filtered and
sampled in one fused call (``lmf_logits_combine``, include/lmfuse/logits.h; semantics in
docs/logits.md and specs/logit-combination.md).

    out = lmfuse.combine_logits(**lmfuse.proxy_tune(base[:, -1], expert[:, -1], anti[:, -1]),
                                temperature=0.8, top_p=0.9, seeds=seeds, offsets=step)
    next_ids = out.tokens                      # int32 [B]; -1 where out.status != 0

Per output row b and token v in [0, V_out):

    x_k(v) = z_k(v) / tau_k           model k's logits (v >= V_k: -inf; sparse rows: the fill value)
    s(v)   = sum_k c_k x_k(v) [+ omega logP(desired | v)] [+ bias(v)]     (accumulated in fp32)

then the masks (contrastive plausibility, one model's nucleus, GeDi's class filter), the temperature
T, top-k, top-p, min-p and a Gumbel-max sample keyed by (row seed, row offset, token id): a row's
token depends only on its own inputs, seed and offset, never on the batch around it. T = 0 is greedy
(argmax, ties to the lowest id; no seeds needed).

Inputs (``models``) are ``LogitsInput`` (dense rows), ``SparseLogitsInput`` (top-k rows of a
black-box model) or bare tensors. Logits are torch tensors of float32, float16 or bfloat16, shape
[rows, V_k] (or [V_k] for one row) whose LAST dimension is contiguous; rows may be strided, so
``model(ids).logits[:, -1, :]`` is passed without a copy. A model wider than ``vocab_out`` (a padded
lm_head) is read only up to ``vocab_out``; a narrower one counts as -inf beyond its width.

Outputs, workspace and small per-row vectors (seeds, offsets, coefficients) are allocated as torch
tensors on the inputs' device. CUDA tensors run on a CUDA context of their device and are enqueued
on ``torch.cuda.current_stream()``: nothing synchronises. CPU tensors run on a CPU context and the
call returns when the work is done. ``context=`` picks a context yourself (its backend must be
where the tensors are).

The method helpers (``eft``, ``proxy_tune``, ``dexperts``, ``contrastive``, ``cfg``,
``emulated_disalignment``, ``gedi``) return the keyword arguments of ``combine_logits`` for one
method from the spec's table: ``combine_logits(**lmfuse.eft(zL, zSf, zSb), seeds=...)``.

Mistakes visible in Python (a coefficient list of the wrong length, integer or float64 logits, a
non-contiguous last dimension, tensors on different devices, wrong GeDi state dtypes, a missing
``seeds`` when sampling) raise TypeError / ValueError before any C call; the library's own checks
raise ``LmfuseError``. Row-level problems (non-finite inputs, every token masked, a bad sparse id)
are not exceptions: they are per-row ``status`` values with token -1.
"""

import ctypes
import numbers
import threading

from . import _ffi
from ._tensors import torch
from .errors import check

__all__ = ["LogitsInput", "SparseLogitsInput", "GeDi", "GeDiState", "LogitsResult", "DraftResult",
           "combine_logits", "verify_draft", "eft", "proxy_tune", "dexperts", "contrastive", "cfg",
           "emulated_disalignment", "gedi", "ROW_OK", "ROW_ALL_MASKED", "ROW_NONFINITE",
           "ROW_BAD_INDEX", "MAX_MODELS"]

ROW_OK = _ffi.LMF_ROW_OK
ROW_ALL_MASKED = _ffi.LMF_ROW_ALL_MASKED
ROW_NONFINITE = _ffi.LMF_ROW_NONFINITE
ROW_BAD_INDEX = _ffi.LMF_ROW_BAD_INDEX
MAX_MODELS = _ffi.LMF_LOGITS_MAX_MODELS

_U64 = (1 << 64) - 1


def _need_torch():
    if torch is None:
        raise ImportError("lmfuse.combine_logits needs torch (python3-torch)")


# ---- inputs ----------------------------------------------------------------------------------------

class LogitsInput:
    """One model's dense next-token logits.

    Args:
        logits: float32/float16/bfloat16 tensor [rows, V_k] (or [V_k]); last dimension contiguous,
            rows may be strided (e.g. ``out.logits[:, -1, :]``). A row stride of 0 (``z.expand(B,
            V)``) means every row reads the one row.
        coeff: c_k, the model's weight in s (a float; 0 for a model used only by a mask or GeDi).
        temperature: tau_k > 0; the model's logits are divided by it (contrastive decoding's amateur
            uses 0.5).
        row_index: optional int tensor [B]: output row b reads input row row_index[b] (e.g. one
            prompt's row shared by several samples). Its values are checked on the host unless
            ``combine_logits(validate_indices=False)``.
        coeff_rows: optional float tensor [B]: per-row coefficients replacing ``coeff`` (CoGenesis'
            learned per-row weights).
    """

    sparse = False

    def __init__(self, logits, coeff=1.0, temperature=1.0, row_index=None, coeff_rows=None):
        self.logits = logits
        self.coeff = coeff
        self.temperature = temperature
        self.row_index = row_index
        self.coeff_rows = coeff_rows

    def replace(self, **changes):
        """A copy with some attributes changed (the tensors are shared, not copied)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        for k, v in changes.items():
            if k not in self.__dict__:
                raise TypeError("%s has no attribute %r" % (type(self).__name__, k))
            setattr(new, k, v)
        return new

    def __repr__(self):
        shape = tuple(self.logits.shape) if hasattr(self.logits, "shape") else "?"
        return "lmfuse.%s(shape=%s, coeff=%r, temperature=%r)" % (
            type(self).__name__, shape, self.coeff, self.temperature)


class SparseLogitsInput(LogitsInput):
    """A black-box model's sparse rows: ``indices`` [rows, k] (token ids) and ``values`` [rows, k]
    (their raw logits / log-probs); every other token of the model's vocabulary gets ``fill``
    (finite; GeDi's GPT-3 path used -50000 -- never 0). ``vocab``: the vocabulary the ids come from
    (default: ``vocab_out``). Ids outside [0, vocab_out), or an id repeated within a row, give
    that row status ROW_BAD_INDEX.

    ``indices`` may be int32 or int64 (converted: ``torch.topk`` gives int64); indices and values
    share one row stride (both are made contiguous when they do not).
    """

    sparse = True

    def __init__(self, indices, values, fill=-50000.0, vocab=None, coeff=1.0, temperature=1.0,
                 row_index=None, coeff_rows=None):
        super().__init__(values, coeff, temperature, row_index, coeff_rows)
        self.indices = indices
        self.fill = fill
        self.vocab = vocab

    @property
    def values(self):
        return self.logits


class GeDiState:
    """GeDi's per-row state, updated IN PLACE by every ``combine_logits(gedi=...)`` call for the
    token it picks (rows whose status is not OK are left as they were):

        L_pos, L_neg: float32 [B], the generated prefix's summed log-likelihood under the desired /
                      undesired control code;
        n:            int32 [B], the prefix length.
    """

    def __init__(self, L_pos, L_neg, n):
        self.L_pos = L_pos
        self.L_neg = L_neg
        self.n = n

    @classmethod
    def zeros(cls, batch, device="cpu"):
        """The state of B empty prefixes (L = 0, n = 0) on ``device``."""
        _need_torch()
        return cls(torch.zeros(batch, dtype=torch.float32, device=device),
                   torch.zeros(batch, dtype=torch.float32, device=device),
                   torch.zeros(batch, dtype=torch.int32, device=device))

    def clone(self):
        return GeDiState(self.L_pos.clone(), self.L_neg.clone(), self.n.clone())

    def __repr__(self):
        return "lmfuse.GeDiState(L_pos=%s, L_neg=%s, n=%s)" % (self.L_pos, self.L_neg, self.n)


class GeDi:
    """GeDi guidance for ``combine_logits(gedi=...)``.

    ``pos`` / ``neg``: the models (an index into ``models`` or the input object itself) holding the
    class-conditional LM's rows under the desired and the undesired control code (usually with
    coeff 0). ``state``: a ``GeDiState``. The rest are GeDi's generation parameters, with its
    defaults: omega = disc_weight 30, logit_scale 1, the two class biases 0, class_bias 0 (added to
    the desired class's logit), filter_p 0.8 (= 1 - rho; 0 turns the class filter off) and target_p
    0.8 (= tau).
    """

    def __init__(self, pos, neg, state, *, omega=30.0, logit_scale=1.0, bias_pos=0.0, bias_neg=0.0,
                 class_bias=0.0, filter_p=0.8, target_p=0.8):
        self.pos = pos
        self.neg = neg
        self.state = state
        self.omega = omega
        self.logit_scale = logit_scale
        self.bias_pos = bias_pos
        self.bias_neg = bias_neg
        self.class_bias = class_bias
        self.filter_p = filter_p
        self.target_p = target_p

    def __repr__(self):
        return ("lmfuse.GeDi(pos=%r, neg=%r, omega=%r, filter_p=%r, target_p=%r, class_bias=%r)"
                % (self.pos, self.neg, self.omega, self.filter_p, self.target_p, self.class_bias))


# ---- results ---------------------------------------------------------------------------------------

class LogitsResult:
    """What ``combine_logits`` returns (torch tensors on the inputs' device; on CUDA they are
    ready once the current stream reaches them).

    tokens: int32 [B], the chosen token, -1 where status is not ROW_OK.
    status: int32 [B], ROW_OK, ROW_ALL_MASKED, ROW_NONFINITE or ROW_BAD_INDEX.
    token_logprob: float32 [B], the token's log-prob in the final (masked, filtered, tempered)
        distribution.
    lse: float32 [B], logsumexp of s/T over the surviving tokens.
    logprobs: float32 [B, V_out] (s/T - lse, -inf where masked) when ``return_logprobs``, else None.
    gedi_logp_desired: float32 [B], logP(desired | token), with ``gedi``; else None.
    """

    __slots__ = ("tokens", "status", "token_logprob", "lse", "logprobs", "gedi_logp_desired")

    def __init__(self, tokens, status, token_logprob, lse, logprobs=None, gedi_logp_desired=None):
        self.tokens = tokens
        self.status = status
        self.token_logprob = token_logprob
        self.lse = lse
        self.logprobs = logprobs
        self.gedi_logp_desired = gedi_logp_desired

    @property
    def ok(self):
        """bool [B]: rows whose status is ROW_OK."""
        return self.status == ROW_OK

    def __repr__(self):
        return "lmfuse.LogitsResult(tokens=%s, status=%s)" % (self.tokens, self.status)


class DraftResult:
    """What ``verify_draft`` returns: accepted (int32 [S], 0 .. draft_len draft tokens kept),
    next_token (int32 [S], the correction at the first rejection, or the bonus token when all were
    accepted; -1 when status is not ROW_OK) and status (int32 [S], per sequence)."""

    __slots__ = ("accepted", "next_token", "status")

    def __init__(self, accepted, next_token, status):
        self.accepted = accepted
        self.next_token = next_token
        self.status = status

    def __repr__(self):
        return "lmfuse.DraftResult(accepted=%s, next_token=%s)" % (self.accepted, self.next_token)


# ---- helpers ---------------------------------------------------------------------------------------

_default_contexts = {}
_ctx_lock = threading.Lock()


def _device_key(t):
    if t.is_cuda:
        index = t.device.index
        return ("cuda", index if index is not None else torch.cuda.current_device())
    if t.device.type == "cpu":
        return ("cpu", 0)
    raise ValueError("tensor on device %s; lmfuse takes CPU or CUDA tensors" % (t.device,))


def _device_of(key):
    return torch.device("cpu") if key[0] == "cpu" else torch.device("cuda", key[1])


def _default_context(key):
    from .context import Context
    with _ctx_lock:
        ctx = _default_contexts.get(key)
        if ctx is None or ctx.closed:
            ctx = Context("cpu") if key[0] == "cpu" else Context("cuda", device=key[1])
            _default_contexts[key] = ctx
        return ctx


_LMF_DTYPES = None


def _logits_dtype(t, what):
    global _LMF_DTYPES
    if _LMF_DTYPES is None:
        _LMF_DTYPES = {torch.float32: _ffi.LMF_DTYPE_F32, torch.float16: _ffi.LMF_DTYPE_F16,
                       torch.bfloat16: _ffi.LMF_DTYPE_BF16}
    d = _LMF_DTYPES.get(t.dtype)
    if d is None:
        hint = " (call .float())" if t.dtype == torch.float64 else ""
        raise TypeError("%s has dtype %s; lmfuse takes float32, float16 or bfloat16 logits%s"
                        % (what, t.dtype, hint))
    return d


def _tensor(x, what):
    if not isinstance(x, torch.Tensor):
        raise TypeError("%s must be a torch.Tensor, not %s" % (what, type(x).__name__))
    return x


class _Call:
    """Collects what one C call needs: the device, and every temporary tensor (kept alive until
    the call has been issued)."""

    def __init__(self):
        self.device_key = None
        self.device_from = None
        self.keep = []
        self.seed_unit = "rows"

    def see(self, t, what):
        key = _device_key(t)
        if self.device_key is None:
            self.device_key, self.device_from = key, what
        elif key != self.device_key:
            raise ValueError("%s is on %s but %s is on %s; every tensor of one call must be on one "
                             "device" % (what, _device_of(key), self.device_from,
                                         _device_of(self.device_key)))
        return t

    @property
    def device(self):
        return _device_of(self.device_key)

    def hold(self, t):
        self.keep.append(t)
        return t

    def rows2d(self, t, what):
        """(tensor [R, C] with unit last stride, row_stride) for a 1-D or 2-D tensor."""
        if t.dim() == 1:
            t = t.unsqueeze(0)
        elif t.dim() != 2:
            raise ValueError("%s has shape %s; lmfuse takes [rows, vocab] (take the last position "
                             "first, e.g. logits[:, -1, :])" % (what, tuple(t.shape)))
        if t.shape[1] < 1 or t.shape[0] < 1:
            raise ValueError("%s is empty (shape %s)" % (what, tuple(t.shape)))
        if t.shape[1] > 1 and t.stride(1) != 1:
            raise ValueError("%s's last dimension is not contiguous (shape %s, stride %s); pass "
                             ".contiguous()" % (what, tuple(t.shape), tuple(t.stride())))
        stride = t.stride(0)
        if t.shape[0] == 1:
            stride = t.shape[1]
        elif stride < t.shape[1] and stride != 0:
            raise ValueError("%s has overlapping rows (row stride %d < %d columns)"
                             % (what, stride, t.shape[1]))
        return t, stride

    def int32_vec(self, x, n, what, validate_below=None):
        """An int32 contiguous [n] tensor on the call's device from a tensor or sequence."""
        if isinstance(x, torch.Tensor):
            self.see(x, what)
            if x.dtype not in (torch.int32, torch.int64, torch.int16, torch.uint8, torch.int8):
                raise TypeError("%s has dtype %s; it takes integers" % (what, x.dtype))
            t = x.reshape(-1)
        else:
            t = torch.as_tensor(list(x), dtype=torch.int64, device=self.device)
        if t.numel() != n:
            raise ValueError("%s has %d entries for %d rows" % (what, t.numel(), n))
        if validate_below is not None and n:
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= validate_below:
                raise ValueError("%s has values in [%d, %d]; they index %d input rows"
                                 % (what, lo, hi, validate_below))
        t = t.to(torch.int32).contiguous()
        return self.hold(t)

    def float32_vec(self, x, n, what):
        if isinstance(x, torch.Tensor):
            self.see(x, what)
            if not x.is_floating_point():
                raise TypeError("%s has dtype %s; it takes floating point values" % (what, x.dtype))
            t = x.reshape(-1)
        else:
            t = torch.as_tensor([float(v) for v in x], dtype=torch.float32, device=self.device)
        if t.numel() != n:
            raise ValueError("%s has %d entries for %d rows" % (what, t.numel(), n))
        return self.hold(t.to(torch.float32).contiguous())

    def u64_vec(self, x, n, what):
        """uint64 values as an int64 [n] tensor (same bits) on the call's device."""
        if x is None:
            return None
        if isinstance(x, torch.Tensor):
            self.see(x, what)
            if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
                raise TypeError("%s has dtype %s; it takes integers (int64 holds the bits of "
                                "uint64)" % (what, x.dtype))
            t = x.reshape(-1)
            if t.numel() == 1 and n != 1:
                t = t.expand(n)
        else:
            if isinstance(x, numbers.Integral):
                vals = [int(x)] * n
            else:
                vals = [int(v) for v in x]
            for v in vals:
                if not 0 <= v <= _U64:
                    raise ValueError("%s must be in [0, 2**64), got %d" % (what, v))
            vals = [v - (1 << 64) if v >= 1 << 63 else v for v in vals]
            t = torch.tensor(vals, dtype=torch.int64, device=self.device)
        if t.numel() != n:
            raise ValueError("%s has %d entries for %d %s" % (what, t.numel(), n, self.seed_unit))
        return self.hold(t.to(torch.int64).contiguous())


def _as_input(x, what):
    if isinstance(x, LogitsInput):
        return x
    if torch is not None and isinstance(x, torch.Tensor):
        return LogitsInput(x)
    raise TypeError("%s must be a torch.Tensor, lmfuse.LogitsInput or lmfuse.SparseLogitsInput, "
                    "not %s" % (what, type(x).__name__))


def _model_list(models):
    if isinstance(models, LogitsInput) or (torch is not None and isinstance(models, torch.Tensor)):
        return [models]
    return list(models)


def _model_index(ref, models, what):
    """An index into ``models`` from an int or from the input object itself (by identity)."""
    if isinstance(ref, numbers.Integral) and not isinstance(ref, bool):
        i = int(ref)
        if not 0 <= i < len(models):
            raise ValueError("%s refers to model %d of %d" % (what, i, len(models)))
        return i
    for i, m in enumerate(models):
        if m is ref or (isinstance(m, LogitsInput) and m.logits is ref):
            return i
    raise ValueError("%s must be a model index or one of the models passed; got %r" % (what, ref))


def _mask_arg(arg, models, what):
    """(model index, value) from None, (model, value) or {"model": m, <key>: value}."""
    if arg is None:
        return -1, 0.0
    if isinstance(arg, dict):
        arg = (arg.get("model"), arg.get("alpha", arg.get("p")))
    try:
        ref, value = arg
    except (TypeError, ValueError):
        raise TypeError("%s must be (model, value), e.g. (0, 0.1), not %r" % (what, arg)) from None
    return _model_index(ref, models, what), float(value)


def _i32(value, what):
    """An int that fits int32_t (ctypes would wrap a bigger one silently)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError("%s must be an int, not %r" % (what, value))
    value = int(value)
    if not -(1 << 31) <= value < (1 << 31):
        raise ValueError("%s is %d; it must fit in int32" % (what, value))
    return value


_SPEC_KEYS = ("models", "plausibility", "nucleus", "gedi", "vocab_out", "coeffs", "bias")


def _unpack_spec(models, given):
    """A method helper's dict passed as ``models`` (``combine_logits(lmfuse.eft(...), ...)``):
    its entries fill the keyword arguments the caller left at None."""
    if not isinstance(models, dict):
        return models, given
    extra = set(models) - set(_SPEC_KEYS)
    if extra or "models" not in models:
        raise TypeError("models is a dict with keys %s; pass a list of models, or the dict a "
                        "method helper (lmfuse.eft, ...) returns" % sorted(models))
    given = dict(given)
    for key, value in models.items():
        if key == "models":
            continue
        if given.get(key) is not None:
            raise ValueError("%s is given twice: by the method helper's dict and as an argument"
                             % key)
        given[key] = value
    return models["models"], given


class _Fields:
    """Attribute bag for the params fields (0 / NULL until set)."""

    def __getattr__(self, name):
        return 0


def _build(models, coeffs, vocab_out, plausibility, nucleus, bias, gedi, temperature, top_k, top_p,
           min_p, seeds, offsets, validate_indices, context, caller, check_rows=None,
           seed_count=None):
    """Fills the C model table and params; returns (call, table, n, params, context).
    ``check_rows(num_rows)`` may raise for a row count the caller cannot take; ``seed_count``:
    entries of seeds / offsets (default: one per row)."""
    _need_torch()
    models = _model_list(models)
    k = len(models)
    if k == 0:
        raise ValueError("%s: models is empty" % caller)
    if k > MAX_MODELS:
        raise ValueError("%s: %d models; one call combines at most %d" % (caller, k, MAX_MODELS))
    if coeffs is not None:
        coeffs = list(coeffs.tolist() if isinstance(coeffs, torch.Tensor) else coeffs)
        if len(coeffs) != k:
            raise ValueError("%s: %d coefficients for %d models" % (caller, len(coeffs), k))
    inputs = [_as_input(m, "models[%d]" % i) for i, m in enumerate(models)]
    call = _Call()

    # shapes and devices first: the number of rows and vocab_out
    dense_vocabs, rows, infos = set(), [], []
    for i, m in enumerate(inputs):
        what = "models[%d]" % i
        t = call.see(_tensor(m.logits, what + (".values" if m.sparse else ".logits")), what)
        dt = _logits_dtype(t, what + (".values" if m.sparse else ".logits"))
        t2, stride = call.rows2d(t, what + (".values" if m.sparse else ".logits"))
        if m.sparse:
            idx = call.see(_tensor(m.indices, what + ".indices"), what + ".indices")
            if idx.dtype not in (torch.int32, torch.int64):
                raise TypeError("%s.indices has dtype %s; it takes int32 or int64 token ids"
                                % (what, idx.dtype))
            if idx.dim() == 1:
                idx = idx.unsqueeze(0)
            if tuple(idx.shape) != tuple(t2.shape):
                raise ValueError("%s: indices %s and values %s differ in shape"
                                 % (what, tuple(idx.shape), tuple(t2.shape)))
            idx = idx.to(torch.int32)
            k_sp = t2.shape[1]
            idx_stride = k_sp if idx.shape[0] == 1 else idx.stride(0)
            if (k_sp > 1 and idx.stride(1) != 1) or idx_stride != stride:
                idx = idx.contiguous()           # one row stride for ids and values
                t2, stride = t2.contiguous(), k_sp
            call.hold(idx)
            infos.append((t2, dt, stride, idx))
        else:
            dense_vocabs.add(t2.shape[1])
            infos.append((t2, dt, stride, None))
        if m.row_index is not None:
            rows.append(_tensor(m.row_index, what + ".row_index").numel())
        else:
            rows.append(t2.shape[0])
    num_rows = rows[0]
    if any(r != num_rows for r in rows):
        raise ValueError("%s: the models give different numbers of rows %s (a model's rows, or its "
                         "row_index's length)" % (caller, rows))
    if check_rows is not None:
        check_rows(num_rows)
    if vocab_out is None:
        if any(m.sparse for m in inputs) and not dense_vocabs:
            vocab_out = next((m.vocab for m in inputs if m.vocab is not None), None)
            if vocab_out is None:
                raise ValueError("%s: only sparse models: pass vocab_out" % caller)
        elif len(dense_vocabs) > 1:
            raise ValueError("%s: the models have different vocabularies %s; pass vocab_out (the "
                             "output vocabulary; wider models are cut to it, narrower ones count "
                             "as -inf beyond their width)" % (caller, sorted(dense_vocabs)))
        else:
            vocab_out = dense_vocabs.pop()
    vocab_out = _i32(vocab_out, "vocab_out")
    if vocab_out < 1:
        raise ValueError("%s: vocab_out must be >= 1, got %d" % (caller, vocab_out))

    if context is None:
        context = _default_context(call.device_key)
    else:
        want = ("cpu", 0) if context.backend == "cpu" else ("cuda", context.device)
        if call.device_key != want:
            raise ValueError("%s: the tensors are on %s but the context runs on %s" % (
                caller, call.device, _device_of(want)))

    table = (_ffi.LogitsModel * k)()
    for i, (m, (t2, dt, stride, idx)) in enumerate(zip(inputs, infos)):
        what = "models[%d]" % i
        d = table[i]
        d.logits = t2.data_ptr()
        call.hold(t2)
        d.dtype = dt
        coeff = coeffs[i] if coeffs is not None else m.coeff
        if isinstance(coeff, torch.Tensor):
            if coeff.numel() == 1:
                coeff = float(coeff)
            else:
                raise TypeError("%s: coeff must be a float; per-row coefficients go in "
                                "coeff_rows" % what)
        d.coeff = float(coeff)
        d.temperature = float(m.temperature)
        in_rows = t2.shape[0]
        row_index = m.row_index
        if stride == 0:  # broadcast rows: every row reads row 0
            stride = t2.shape[1]
            if row_index is None:
                row_index = torch.zeros(num_rows, dtype=torch.int32, device=call.device)
            in_rows = 1
        d.row_stride = stride
        if row_index is not None:
            ri = call.int32_vec(row_index, num_rows, what + ".row_index",
                                in_rows if validate_indices else None)
            d.row_index = ri.data_ptr()
        if m.coeff_rows is not None:
            d.coeff_rows = call.float32_vec(m.coeff_rows, num_rows, what + ".coeff_rows").data_ptr()
        if m.sparse:
            d.sparse_index = idx.data_ptr()
            d.sparse_k = t2.shape[1]
            d.sparse_fill = float(m.fill)
            d.vocab = _i32(m.vocab if m.vocab is not None else vocab_out, what + ".vocab")
        else:
            d.vocab = min(t2.shape[1], vocab_out)

    p = _Fields()                     # every check first; the C struct at the end
    p.num_rows = num_rows
    p.vocab_out = vocab_out
    p.plausibility_model, alpha = _mask_arg(plausibility, models, "plausibility")
    if p.plausibility_model >= 0:
        p.plausibility_alpha = alpha
    p.nucleus_model, nuc = _mask_arg(nucleus, models, "nucleus")
    if p.nucleus_model >= 0:
        p.nucleus_p = nuc
    if bias is not None:
        b = call.see(_tensor(bias, "bias"), "bias")
        if not b.is_floating_point():
            raise TypeError("bias has dtype %s; it takes floating point values" % b.dtype)
        b = b.to(torch.float32)
        if b.dim() == 1:
            if b.shape[0] != vocab_out:
                raise ValueError("bias has %d entries; vocab_out is %d" % (b.shape[0], vocab_out))
            b = b.contiguous()
            p.bias_row_stride = 0
        elif b.dim() == 2:
            if tuple(b.shape) != (num_rows, vocab_out):
                raise ValueError("bias has shape %s; it takes [vocab_out] or [rows, vocab_out] = "
                                 "%s" % (tuple(b.shape), (num_rows, vocab_out)))
            b, bstride = call.rows2d(b, "bias")
            if bstride == 0:
                b = b[:1].contiguous()
            p.bias_row_stride = bstride
        else:
            raise ValueError("bias has shape %s; it takes [vocab_out] or [rows, vocab_out]"
                             % (tuple(b.shape),))
        p.bias = call.hold(b).data_ptr()
    p.gedi_pos_model = p.gedi_neg_model = -1
    if gedi is not None:
        if not isinstance(gedi, GeDi):
            raise TypeError("gedi must be an lmfuse.GeDi, not %s" % type(gedi).__name__)
        p.gedi_pos_model = _model_index(gedi.pos, models, "gedi.pos")
        p.gedi_neg_model = _model_index(gedi.neg, models, "gedi.neg")
        for name in ("omega", "logit_scale", "bias_pos", "bias_neg", "class_bias", "filter_p",
                     "target_p"):
            setattr(p, "gedi_" + name, float(getattr(gedi, name)))
        st = gedi.state
        if not isinstance(st, GeDiState):
            raise TypeError("gedi.state must be an lmfuse.GeDiState, not %s" % type(st).__name__)
        for name, want in (("L_pos", torch.float32), ("L_neg", torch.float32),
                           ("n", torch.int32)):
            t = call.see(_tensor(getattr(st, name), "gedi.state." + name), "gedi.state." + name)
            if t.dtype != want:
                raise TypeError("gedi.state.%s has dtype %s; it must be %s (it is updated in "
                                "place)" % (name, t.dtype, want))
            if not t.is_contiguous() or t.numel() != num_rows:
                raise ValueError("gedi.state.%s must be a contiguous tensor of %d elements (one "
                                 "per row), got shape %s" % (name, num_rows, tuple(t.shape)))
            setattr(p, "gedi_" + name, t.data_ptr())

    sampling = True
    if isinstance(temperature, torch.Tensor) and temperature.numel() != 1:
        p.temperature = 1.0
        p.temperature_rows = call.float32_vec(temperature, num_rows, "temperature").data_ptr()
    elif isinstance(temperature, (list, tuple)):
        p.temperature = 1.0
        p.temperature_rows = call.float32_vec(temperature, num_rows, "temperature").data_ptr()
    else:
        p.temperature = float(temperature)
        sampling = p.temperature != 0.0
    p.top_k = _i32(top_k, "top_k")
    p.top_p = float(top_p)
    p.min_p = float(min_p)
    if seeds is None and sampling and not p.temperature_rows:
        raise ValueError("%s: temperature %g samples: pass seeds (one per row, or one int for "
                         "all) or temperature=0 for greedy decoding" % (caller, p.temperature))
    n_seeds = num_rows if seed_count is None else seed_count
    if seed_count is not None:
        call.seed_unit = "sequences"
    s = call.u64_vec(seeds, n_seeds, "seeds")
    if s is not None:
        p.seeds = s.data_ptr()
    o = call.u64_vec(offsets, n_seeds, "offsets")
    if o is not None:
        p.offsets = o.data_ptr()
    p = _ffi.new(_ffi.LogitsParams, **vars(p))
    return call, table, k, p, context


def _stream(context):
    if context.backend == "cpu":
        return None
    return torch.cuda.current_stream(context.device).cuda_stream or None


def _workspace(call, context, table, k, p):
    n = ctypes.c_size_t(0)
    check(_ffi.require("lmf_logits_workspace_size")(context.handle, table, k, ctypes.byref(p),
                                                     ctypes.byref(n)))
    ws = call.hold(torch.empty(max(int(n.value), 1), dtype=torch.uint8, device=call.device))
    return ws, int(n.value)


def combine_logits(models, *, coeffs=None, vocab_out=None, plausibility=None, nucleus=None,
                   bias=None, gedi=None, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
                   seeds=None, offsets=None, return_logprobs=False, validate_indices=True,
                   context=None):
    """Combines, masks, filters and samples B rows of next-token logits in one fused call.

    Args:
        models: a list of ``LogitsInput`` / ``SparseLogitsInput`` / tensors (a bare tensor is a
            ``LogitsInput`` with coeff 1), at most ``MAX_MODELS``.
        coeffs: optional list of one coefficient per model, replacing each model's ``coeff``.
        vocab_out: V_out (default: the models' common vocabulary; required when they differ).
        plausibility: ``(model, alpha)``: contrastive decoding's mask, keep v with
            x_m(v) >= max x_m + log(alpha). ``model`` is an index into ``models`` or the input.
        nucleus: ``(model, p)``: DExperts' mask, keep model m's own smallest top-p set.
        bias: float tensor [V_out] (every row) or [B, V_out], added to s.
        gedi: an ``lmfuse.GeDi`` (its state is updated in place for the chosen tokens).
        temperature: T >= 0 (0: greedy), or a float tensor / list of one T per row.
        top_k (0: off), top_p (1: off), min_p (0: off): filters, applied in this order after T.
        seeds: per-row uint64 seeds (a list, an int64 tensor [B] holding the bits, or one int for
            every row); required when sampling (T > 0).
        offsets: per-row step / offset of the RNG stream (list, int64 tensor, or one int;
            default 0).
            Advance it each decoding step: (seed, offset) fixes the noise of a row.
        return_logprobs: also return the final log-probabilities [B, V_out] (fp32).
        validate_indices: check every ``row_index`` against its model's rows on the host (a device
            sync on CUDA; pass False in hot loops whose indices are known good).
        context: an ``lmfuse.Context`` (default: one per device, made on first use).

    ``models`` may also be the dict a method helper returns (``combine_logits(lmfuse.eft(zL, zSf,
    zSb), seeds=...)`` equals ``combine_logits(**lmfuse.eft(...), seeds=...)``).

    Returns an ``LogitsResult``; raises ``LmfuseError`` when the library rejects an argument
    (nothing is written then).
    """
    models, kw = _unpack_spec(models, dict(coeffs=coeffs, vocab_out=vocab_out, bias=bias,
                                           plausibility=plausibility, nucleus=nucleus, gedi=gedi))
    coeffs, vocab_out, bias = kw["coeffs"], kw["vocab_out"], kw["bias"]
    plausibility, nucleus, gedi = kw["plausibility"], kw["nucleus"], kw["gedi"]
    call, table, k, p, ctx = _build(models, coeffs, vocab_out, plausibility, nucleus, bias, gedi,
                                    temperature, top_k, top_p, min_p, seeds, offsets,
                                    validate_indices, context, "combine_logits")
    B, V = p.num_rows, p.vocab_out
    dev = call.device
    tokens = torch.empty(B, dtype=torch.int32, device=dev)
    status = torch.empty(B, dtype=torch.int32, device=dev)
    token_logprob = torch.empty(B, dtype=torch.float32, device=dev)
    lse = torch.empty(B, dtype=torch.float32, device=dev)
    logprobs = torch.empty(B, V, dtype=torch.float32, device=dev) if return_logprobs else None
    glp = torch.empty(B, dtype=torch.float32, device=dev) if gedi is not None else None
    out = _ffi.new(_ffi.LogitsOutputs, tokens=tokens.data_ptr(), status=status.data_ptr(),
                   token_logprob=token_logprob.data_ptr(), lse=lse.data_ptr())
    if logprobs is not None:
        out.logprobs = logprobs.data_ptr()
        out.logprobs_row_stride = V
    if glp is not None:
        out.gedi_logp_desired = glp.data_ptr()
    ws, ws_bytes = _workspace(call, ctx, table, k, p)
    check(_ffi.require("lmf_logits_combine")(ctx.handle, table, k, ctypes.byref(p),
                                              ctypes.byref(out), ws.data_ptr(), ws_bytes,
                                              _stream(ctx)))
    return LogitsResult(tokens, status, token_logprob, lse, logprobs, glp)


def verify_draft(models, draft_tokens, *, draft_model, coeffs=None, vocab_out=None,
                 plausibility=None, nucleus=None, bias=None, temperature=1.0, top_k=0, top_p=1.0,
                 min_p=0.0, seeds=None, offsets=None, validate_indices=True, context=None):
    """Speculative verification (EFT's speculative up-scaling): each of S sequences has a draft of
    L = draft_tokens.shape[1] tokens drafted by ``models[draft_model]`` (its softmax(x) is q),
    scored by the combined distribution p of ``models``.

    The models' rows are laid out per sequence: row s * (L + 1) + i holds position i of sequence s
    (B = S * (L + 1) rows; use ``row_index`` to avoid copies). Draft token i is accepted with
    probability min(1, p(d_i) / q(d_i)); at the first rejection the correction is sampled from
    normalise(max(0, p - q)); when all L are accepted the bonus token is sampled from p at
    position L. Masks, filters and the temperature apply to p as in ``combine_logits`` (T = 0:
    a draft token is accepted iff it is p's argmax). GeDi is not allowed here.

    ``seeds`` / ``offsets`` are per SEQUENCE here ([S], or one int for all): position i of
    sequence s draws with (seeds[s], offsets[s] + i).

    Returns a ``DraftResult`` (accepted [S], next_token [S], status [S]). A sequence whose walk
    meets a failed row or a draft token outside [0, V_out) gets that status, next_token -1 and
    the count accepted before it.
    """
    _need_torch()
    models, kw = _unpack_spec(models, dict(coeffs=coeffs, vocab_out=vocab_out, bias=bias,
                                           plausibility=plausibility, nucleus=nucleus))
    if kw.get("gedi") is not None:
        raise ValueError("verify_draft: GeDi is not allowed here")
    coeffs, vocab_out, bias = kw["coeffs"], kw["vocab_out"], kw["bias"]
    plausibility, nucleus = kw["plausibility"], kw["nucleus"]
    models = _model_list(models)
    dt = _tensor(draft_tokens, "draft_tokens")
    if dt.dtype not in (torch.int32, torch.int64):
        raise TypeError("draft_tokens has dtype %s; it takes int32 or int64 token ids" % dt.dtype)
    if dt.dim() == 1:
        dt = dt.unsqueeze(0)
    if dt.dim() != 2:
        raise ValueError("draft_tokens has shape %s; it takes [num_seqs, draft_len]"
                         % (tuple(dt.shape),))
    S, L = dt.shape

    def check_rows(num_rows):
        if num_rows != S * (L + 1):
            raise ValueError("verify_draft: %d sequences with drafts of %d tokens need %d rows "
                             "(S * (L + 1)); the models give %d" % (S, L, S * (L + 1), num_rows))

    call, table, k, p, ctx = _build(models, coeffs, vocab_out, plausibility, nucleus, bias, None,
                                    temperature, top_k, top_p, min_p, seeds, offsets,
                                    validate_indices, context, "verify_draft", check_rows,
                                    seed_count=S)
    call.see(dt, "draft_tokens")
    dm = _model_index(draft_model, _model_list(models), "draft_model")
    dt = call.hold(dt.to(torch.int32).contiguous())
    dev = call.device
    accepted = torch.empty(S, dtype=torch.int32, device=dev)
    next_token = torch.empty(S, dtype=torch.int32, device=dev)
    status = torch.empty(S, dtype=torch.int32, device=dev)
    ws, ws_bytes = _workspace(call, ctx, table, k, p)
    check(_ffi.require("lmf_logits_verify_draft")(ctx.handle, table, k, ctypes.byref(p), dm,
                                                   dt.data_ptr(), L, accepted.data_ptr(),
                                                   next_token.data_ptr(), status.data_ptr(),
                                                   ws.data_ptr(), ws_bytes, _stream(ctx)))
    return DraftResult(accepted, next_token, status)


# ---- the methods of the spec's table ---------------------------------------------------------------

def _with(x, what, coeff, temperature=None):
    m = _as_input(x, what)
    changes = {"coeff": coeff}
    if temperature is not None:
        changes["temperature"] = temperature
    return m.replace(**changes)


def eft(large_base, small_ft, small_base, beta=1.0, weights=None):
    """EFT up-scaling: s = x_large_base + beta * (x_small_ft - x_small_base).

    ``small_ft`` may be a list of fine-tuned models with ``weights`` (behaviour interpolation:
    ``eft(L, [helpful, safe], Sb, weights=[lam, 1 - lam])``). beta != 1 on the fine-tuning delta
    equals RL with KL coefficient 1/beta times the original.
    """
    models = [_with(large_base, "large_base", 1.0)]
    if isinstance(small_ft, (list, tuple)):
        if weights is None or len(weights) != len(small_ft):
            raise ValueError("eft: %d fine-tuned models need as many weights, got %r"
                             % (len(small_ft), weights))
        models += [_with(m, "small_ft[%d]" % i, beta * float(w))
                   for i, (m, w) in enumerate(zip(small_ft, weights))]
    else:
        if weights is not None:
            raise ValueError("eft: weights go with a list of fine-tuned models")
        models.append(_with(small_ft, "small_ft", float(beta)))
    models.append(_with(small_base, "small_base", -float(beta)))
    return {"models": models}


def proxy_tune(base, expert, antiexpert, alpha=1.0):
    """Proxy-tuning: s = x_base + alpha * (x_expert - x_antiexpert) (raw logits)."""
    return {"models": [_with(base, "base", 1.0), _with(expert, "expert", float(alpha)),
                       _with(antiexpert, "antiexpert", -float(alpha))]}


def dexperts(base, expert, antiexpert, alpha=2.0, nucleus_p=0.9):
    """DExperts: proxy-tuning's coefficients (alpha 2.0 for toxicity, 3.2 for sentiment) with the
    base model's own nucleus (top-p ``nucleus_p``) as the candidate set."""
    kw = proxy_tune(base, expert, antiexpert, alpha)
    kw["nucleus"] = (0, float(nucleus_p))
    return kw


def contrastive(expert, amateur, st_coef=1.0, amateur_temperature=0.5, alpha=0.1, expert_coeff=1.0):
    """Contrastive decoding: s = expert_coeff * x_e - st_coef * x_a (the amateur at temperature
    ``amateur_temperature``), keeping only tokens with x_e(v) >= max x_e + log(alpha)."""
    return {"models": [_with(expert, "expert", float(expert_coeff)),
                       _with(amateur, "amateur", -float(st_coef), float(amateur_temperature))],
            "plausibility": (0, float(alpha))}


def cfg(cond, uncond, gamma=1.5):
    """Classifier-free guidance: s = gamma * x_cond + (1 - gamma) * x_uncond."""
    return {"models": [_with(cond, "cond", float(gamma)),
                       _with(uncond, "uncond", 1.0 - float(gamma))]}


def emulated_disalignment(base, aligned, alpha=1.0):
    """Emulated disalignment: s = (1 + alpha) * x_base - alpha * x_aligned."""
    return {"models": [_with(base, "base", 1.0 + float(alpha)),
                       _with(aligned, "aligned", -float(alpha))]}


def gedi(lm, pos, neg, state, **params):
    """GeDi: the LM's logits guided by a class-conditional LM run under the desired (``pos``) and
    the undesired (``neg``) control code; ``state`` an ``lmfuse.GeDiState``; ``params`` those of
    ``lmfuse.GeDi`` (omega, logit_scale, bias_pos, bias_neg, class_bias, filter_p, target_p).
    GeDi's own script decodes greedily: pass temperature=0 for that."""
    return {"models": [_with(lm, "lm", 1.0), _with(pos, "pos", 0.0), _with(neg, "neg", 0.0)],
            "gedi": GeDi(1, 2, state, **params)}
