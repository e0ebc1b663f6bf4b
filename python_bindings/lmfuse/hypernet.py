"""Embeddings for new tokens: a ZeTT hypernetwork (``lmf_hypernet_*``) and the FVT baseline
(``lmf_fvt_predict``); include/lmfuse/hypernet.h, docs/hypernet.md, specs/hypernetwork.md.

    hn = lmfuse.Hypernet.load("zett-hypernetwork-xlm-roberta-base")   # config.json + model.safetensors
    out = hn.predict(surface_forms,              # int [U, L]: base-tokenizer ids, right-padded
                     source_in=model.get_input_embeddings().weight,
                     lang_index=hn.lang_index("en"),
                     copy_ids=copy_ids,          # optional int [U]: -1 predicts, else copy that row
                     bias=True)
    out.e_in, out.e_out, out.bias                # float32 [U, n_embd], [U, n_embd] or None, [U] or None

    e_in, e_out = lmfuse.fvt([[5, 17], [9]], source_in=E_in, source_out=E_out, unk_id=0)

Surface forms are the new tokens already decomposed by the original tokenizer, truncated to the
hypernetwork's ``surface_maxlen`` and right-padded with its ``pad_token_id``. Source embeddings are
tensors (float32, float16 or bfloat16) of shape [rows >= V0, n_embd] whose rows may be strided
(``E[:, :n]`` of a concatenated matrix works without a copy). Outputs are new float32 tensors.

A hypernetwork is built from the released files (``Hypernet.load``) or from tensors named as ZeTT's
PyTorch module names them (``Hypernet.from_tensors``, e.g. a ``state_dict()``); every tensor is
checked and copied (as float32).

On a CUDA context (``Hypernet.load(path, context=lmfuse.Context("cuda"))``) the weights live on the
device; ``predict`` takes source embeddings on that device, returns CUDA tensors, and enqueues the
work on torch's current stream (a workspace is taken from torch's allocator); surface forms and
copy ids are read on the host (CUDA tensors are copied there). ``tf32=True`` runs the GEMMs in TF32
(docs/hypernet.md gives its error). An ``InputCache`` of a CUDA hypernetwork keeps its rows on the
device and its flags on the host. ``fvt(..., context=)`` on a CUDA context likewise takes source
embeddings on the device and returns CUDA tensors, enqueued on torch's current stream.

The ctypes declarations of include/lmfuse/hypernet.h live in this module.
"""

import ctypes
import json
import os
import threading
from ctypes import POINTER, Structure, c_char_p, c_int32, c_int64, c_size_t, c_uint32, c_void_p

from . import _ffi
from ._tensors import torch
from ._handle import Closeable
from .errors import check

__all__ = ["Hypernet", "HypernetOutput", "InputCache", "config_from_json", "param_count",
           "tensor_table", "fvt", "CONFIG_FIELDS"]

# ---- ctypes mirror of include/lmfuse/hypernet.h -----------------------------------------------------

LMF_HYPERNET_CONFIG_VERSION = 1
LMF_HYPERNET_ARGS_VERSION = 1
LMF_FVT_ARGS_VERSION = 1

CONFIG_FIELDS = ("num_layers", "hidden_size", "intermediate_size", "num_heads", "n_embd",
                 "surface_maxlen", "pad_token_id", "original_vocab_size", "n_extra_tokens",
                 "separate_out_embeddings", "rescale_embeddings", "predict_bias", "single_head",
                 "embed_lang_id", "n_langs", "max_position_embeddings")


class HypernetConfig(Structure):
    """lmf_hypernet_config_t"""
    _fields_ = [("struct_size", c_size_t), ("version", c_uint32)] + \
               [(name, c_int32) for name in CONFIG_FIELDS]


class HypernetTensor(Structure):
    """lmf_hypernet_tensor_t (a fixed-size record)"""
    _fields_ = [
        ("name", c_char_p),
        ("data", c_void_p),
        ("dtype", c_int32),
        ("ndim", c_int32),
        ("shape", c_int64 * 4),
    ]


class HypernetArgs(Structure):
    """lmf_hypernet_args_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("num_tokens", c_int64),
        ("surface_len", c_int32),
        ("surface_forms", c_void_p),     # const int32_t *
        ("source_in", c_void_p),
        ("source_out", c_void_p),
        ("source_dtype", c_int32),
        ("source_rows", c_int64),
        ("source_row_stride", c_int64),
        ("lang_index", c_int32),
        ("copy_ids", c_void_p),          # const int32_t *
        ("input_cache", c_void_p),       # float *
        ("input_cache_valid", c_void_p), # uint8_t *
        ("out_in", c_void_p),
        ("out_out", c_void_p),
        ("out_bias", c_void_p),
        ("allow_tf32", c_int32),
    ]


class FvtArgs(Structure):
    """lmf_fvt_args_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("num_tokens", c_int64),
        ("offsets", c_void_p),           # const int64_t *
        ("ids", c_void_p),               # const int32_t *
        ("copy_ids", c_void_p),          # const int32_t *
        ("source_in", c_void_p),
        ("source_out", c_void_p),
        ("source_dtype", c_int32),
        ("n_embd", c_int32),
        ("source_rows", c_int64),
        ("source_row_stride", c_int64),
        ("unk_id", c_int32),
        ("out_in", c_void_p),
        ("out_out", c_void_p),
    ]


_S = ctypes.c_int
_P = c_void_p
_PROTOS = {
    "lmf_hypernet_config_init": (_S, [_P, c_size_t]),
    "lmf_hypernet_config_from_json": (_S, [POINTER(HypernetConfig), c_char_p, c_size_t]),
    "lmf_hypernet_config_from_file": (_S, [POINTER(HypernetConfig), c_char_p]),
    "lmf_hypernet_config_check": (_S, [POINTER(HypernetConfig)]),
    "lmf_hypernet_param_count": (_S, [POINTER(HypernetConfig), POINTER(c_int64)]),
    "lmf_hypernet_tensor_count": (_S, [POINTER(HypernetConfig), POINTER(c_size_t)]),
    "lmf_hypernet_tensor_info": (_S, [POINTER(HypernetConfig), c_size_t, c_char_p, c_size_t,
                                      POINTER(c_int32), POINTER(c_int64), POINTER(c_int32)]),
    "lmf_hypernet_load": (_S, [POINTER(_P), _P, c_char_p]),
    "lmf_hypernet_load_files": (_S, [POINTER(_P), _P, c_char_p, c_char_p]),
    "lmf_hypernet_create": (_S, [POINTER(_P), _P, POINTER(HypernetConfig), POINTER(HypernetTensor),
                                 c_size_t]),
    "lmf_hypernet_destroy": (None, [_P]),
    "lmf_hypernet_get_config": (_S, [_P, POINTER(HypernetConfig)]),
    "lmf_hypernet_lang_index": (_S, [_P, c_char_p, POINTER(c_int32)]),
    "lmf_hypernet_args_init": (_S, [_P, c_size_t]),
    "lmf_hypernet_workspace_size": (_S, [_P, POINTER(HypernetArgs), POINTER(c_size_t)]),
    "lmf_hypernet_predict": (_S, [_P, POINTER(HypernetArgs), _P, c_size_t, _P]),
    "lmf_fvt_args_init": (_S, [_P, c_size_t]),
    "lmf_fvt_predict": (_S, [_P, POINTER(FvtArgs), _P]),
}

_bound = None
_bind_lock = threading.Lock()


def _lib():
    """The loaded library with this module's prototypes bound (once)."""
    global _bound
    lib = _ffi.lib()
    if _bound is lib:
        return lib
    with _bind_lock:
        if _bound is not lib:
            for name, (restype, argtypes) in _PROTOS.items():
                try:
                    fn = getattr(lib, name)
                except AttributeError:
                    raise NotImplementedError(
                        "lmfuse: %s does not export %s; rebuild liblmfuse from this source tree"
                        % (getattr(lib, "_lmfuse_path", "liblmfuse"), name)) from None
                fn.restype = restype
                fn.argtypes = argtypes
            _bound = lib
    return lib


def _new(cls, init_name, version):
    s = cls()
    check(getattr(_lib(), init_name)(ctypes.byref(s), ctypes.sizeof(cls)))
    s.version = version
    return s


def _need_torch():
    if torch is None:
        raise ImportError("lmfuse.hypernet needs torch (python3-torch)")


# ---- configs -----------------------------------------------------------------------------------------

def _config_struct(config):
    """An lmf_hypernet_config_t from a dict of CONFIG_FIELDS (missing keys: the library's defaults),
    a path to config.json, or an HypernetConfig."""
    if isinstance(config, HypernetConfig):
        return config
    c = _new(HypernetConfig, "lmf_hypernet_config_init", LMF_HYPERNET_CONFIG_VERSION)
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        check(_lib().lmf_hypernet_config_from_file(ctypes.byref(c), path.encode()))
        return c
    if not isinstance(config, dict):
        raise TypeError("config must be a dict, a path or a HypernetConfig, not %s"
                        % type(config).__name__)
    unknown = set(config) - set(CONFIG_FIELDS)
    if unknown:
        raise ValueError("unknown config fields %s; the fields are %s" % (sorted(unknown),
                                                                          CONFIG_FIELDS))
    for k, v in config.items():
        setattr(c, k, int(v))
    return c


def _config_dict(c):
    return {name: int(getattr(c, name)) for name in CONFIG_FIELDS}


def config_from_json(source):
    """The hypernetwork fields (a dict of CONFIG_FIELDS) of a ZeTT config.json, given as a path (a
    file or a directory holding config.json), a JSON string, or a dict (serialised first)."""
    c = _new(HypernetConfig, "lmf_hypernet_config_init", LMF_HYPERNET_CONFIG_VERSION)
    if isinstance(source, dict):
        source = json.dumps(source)
    if isinstance(source, str) and source.lstrip().startswith("{"):
        data = source.encode()
        check(_lib().lmf_hypernet_config_from_json(ctypes.byref(c), data, len(data)))
    else:
        c = _config_struct(source)
    return _config_dict(c)


def param_count(config):
    """Parameters of the architecture, from the config alone (no weights are allocated)."""
    c = _config_struct(config)
    n = c_int64()
    check(_lib().lmf_hypernet_param_count(ctypes.byref(c), ctypes.byref(n)))
    return n.value


def tensor_table(config):
    """[(name, shape, required)] of every tensor of the configuration, in the library's order."""
    c = _config_struct(config)
    lib = _lib()
    n = c_size_t()
    check(lib.lmf_hypernet_tensor_count(ctypes.byref(c), ctypes.byref(n)))
    out = []
    buf = ctypes.create_string_buffer(128)
    ndim, req = c_int32(), c_int32()
    shape = (c_int64 * 4)()
    for i in range(n.value):
        check(lib.lmf_hypernet_tensor_info(ctypes.byref(c), i, buf, 128, ctypes.byref(ndim), shape,
                                           ctypes.byref(req)))
        out.append((buf.value.decode(), tuple(shape[d] for d in range(ndim.value)), bool(req.value)))
    return out


# ---- tensors ------------------------------------------------------------------------------------------

_TORCH_FLOATS = None


def _float_code(t):
    global _TORCH_FLOATS
    if _TORCH_FLOATS is None:
        _TORCH_FLOATS = {torch.float32: _ffi.LMF_DTYPE_F32, torch.float16: _ffi.LMF_DTYPE_F16,
                         torch.bfloat16: _ffi.LMF_DTYPE_BF16}
    return _TORCH_FLOATS.get(t.dtype)


def _as_torch(x, what):
    _need_torch()
    if isinstance(x, torch.Tensor):
        return x
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None and isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, (list, tuple)):
        return torch.tensor(x)
    raise TypeError("%s must be a torch.Tensor or numpy.ndarray, not %s" % (what, type(x).__name__))


def _cpu(t, what):
    if t.device.type != "cpu":
        raise ValueError("%s is on %s; the hypernet family takes CPU tensors here" % (what, t.device))
    return t


def _on(t, context, what):
    """t must live where the context's backend reads it: CPU memory, or the CUDA device."""
    if context is None or context.backend == "cpu":
        return _cpu(t, what)
    if t.device.type != "cuda" or (t.device.index if t.device.index is not None else 0) != context.device:
        raise ValueError("%s is on %s; this hypernetwork's context runs on cuda:%d: pass tensors on that "
                         "device" % (what, t.device, context.device))
    return t


def _ids(x, what, ndim):
    """Host int32 ids (the library reads them on the host on either backend)."""
    t = _as_torch(x, what)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError("%s must hold integer ids, not %s" % (what, t.dtype))
    if t.dim() != ndim:
        raise ValueError("%s must have %d dimension(s), not shape %s" % (what, ndim, tuple(t.shape)))
    return t.to(device="cpu", dtype=torch.int32).contiguous()


def _rows(x, what, context=None):
    """(tensor, dtype code, rows, row stride) of a 2-D float matrix whose last dimension is
    contiguous, in the context's memory."""
    t = _on(_as_torch(x, what), context, what)
    code = _float_code(t)
    if code is None:
        raise TypeError("%s has dtype %s; lmfuse takes float32, float16 or bfloat16" % (what, t.dtype))
    if t.dim() != 2:
        raise ValueError("%s must be [rows, n_embd], not shape %s" % (what, tuple(t.shape)))
    if t.shape[1] > 1 and t.stride(1) != 1:
        t = t.contiguous()
    stride = t.stride(0) if t.shape[0] > 1 else t.shape[1]
    return t, code, t.shape[0], stride


# ---- the hypernetwork -------------------------------------------------------------------------------

_default_ctx = None
_default_lock = threading.Lock()


def _context(context):
    global _default_ctx
    if context is not None:
        return context
    with _default_lock:
        if _default_ctx is None or _default_ctx.closed:
            from .context import Context
            _default_ctx = Context("cpu")
        return _default_ctx


class HypernetOutput:
    """What ``Hypernet.predict`` returns: e_in float32 [U, n_embd]; e_out float32 [U, n_embd] (separate
    output embeddings) or None; bias float32 [U] (when asked for) or None."""

    __slots__ = ("e_in", "e_out", "bias")

    def __init__(self, e_in, e_out, bias):
        self.e_in = e_in
        self.e_out = e_out
        self.bias = bias

    def __iter__(self):
        return iter((self.e_in, self.e_out, self.bias))

    def __repr__(self):
        return "lmfuse.HypernetOutput(e_in=%s, e_out=%s, bias=%s)" % (
            tuple(self.e_in.shape), None if self.e_out is None else tuple(self.e_out.shape),
            None if self.bias is None else tuple(self.bias.shape))


class InputCache:
    """Input projections by sub-token id, filled as predictions need them (``lmf_hypernet_args_t``'s
    input_cache): float32 [V0 + fallback rows, H] plus uint8 flags. Valid for one hypernetwork and
    one set of source embeddings: ``clear()`` it when the source embeddings change. For a CUDA
    hypernetwork the rows are on its device and the flags on the host (a flag is set when the row's
    write is enqueued: use the cache from one stream)."""

    def __init__(self, hypernet):
        _need_torch()
        c = hypernet.config
        n = c["original_vocab_size"] + max(1, c["n_extra_tokens"])
        ctx = hypernet.context
        device = "cuda:%d" % ctx.device if ctx.backend == "cuda" else "cpu"
        self.rows = torch.empty((n, c["hidden_size"]), dtype=torch.float32, device=device)
        self.valid = torch.zeros(n, dtype=torch.uint8)

    def clear(self):
        self.valid.zero_()

    def __len__(self):
        return int(self.valid.sum())


class Hypernet(Closeable):
    """A ZeTT hypernetwork in liblmfuse (see the module docstring)."""

    def __init__(self, handle, context):
        self._handle = handle
        self.context = context
        context._adopt(self)
        c = _new(HypernetConfig, "lmf_hypernet_config_init", LMF_HYPERNET_CONFIG_VERSION)
        check(_lib().lmf_hypernet_get_config(handle, ctypes.byref(c)))
        self.config = _config_dict(c)

    @classmethod
    def load(cls, path, weights=None, *, context=None):
        """From a directory holding config.json and model.safetensors, or from the two paths
        (``load(config_path, weights_path)``)."""
        ctx = _context(context)
        h = c_void_p()
        if weights is None:
            check(_lib().lmf_hypernet_load(ctypes.byref(h), ctx.handle, os.fspath(path).encode()))
        else:
            check(_lib().lmf_hypernet_load_files(ctypes.byref(h), ctx.handle, os.fspath(path).encode(),
                                                 os.fspath(weights).encode()))
        return cls(h, ctx)

    @classmethod
    def from_tensors(cls, config, tensors, *, context=None):
        """From a dict name -> tensor (float32/float16/bfloat16; e.g. a ZettHypernet
        ``state_dict()``): CPU tensors, or on a CUDA context also tensors on its device (converted
        there). ``config``: a dict of CONFIG_FIELDS, a config.json path, or a dict read from
        config.json (its ZeTT field names are translated by ``config_from_json``)."""
        _need_torch()
        if isinstance(config, dict) and not set(config) <= set(CONFIG_FIELDS):
            config = config_from_json(config)
        c = _config_struct(config)
        ctx = _context(context)
        keep = []
        on_device = False
        recs = (HypernetTensor * max(1, len(tensors)))()
        for i, (name, x) in enumerate(tensors.items()):
            t = _as_torch(x, "tensors[%r]" % name)
            if t.device.type != "cpu":
                t = _on(t, ctx, "tensors[%r]" % name)
                on_device = True
            if _float_code(t) is None:
                raise TypeError("tensors[%r] has dtype %s; lmfuse takes float32, float16 or bfloat16"
                                % (name, t.dtype))
            if t.dim() < 1 or t.dim() > 4:
                raise ValueError("tensors[%r] has %d dimensions (1 to 4)" % (name, t.dim()))
            t = t.contiguous()
            bname = name.encode()
            keep.append((t, bname))
            recs[i].name = bname
            recs[i].data = t.data_ptr()
            recs[i].dtype = _float_code(t)
            recs[i].ndim = t.dim()
            for d in range(t.dim()):
                recs[i].shape[d] = t.shape[d]
        if on_device:  # the library reads device tensors on the legacy default stream
            torch.cuda.current_stream(ctx.device).synchronize()
        h = c_void_p()
        check(_lib().lmf_hypernet_create(ctypes.byref(h), ctx.handle, ctypes.byref(c), recs,
                                         len(tensors)))
        del keep
        return cls(h, ctx)

    @property
    def handle(self):
        if self._handle is None:
            raise ValueError("this lmfuse.Hypernet is closed")
        return self._handle

    @property
    def closed(self):
        return self._handle is None

    @property
    def param_count(self):
        return param_count(self.config)

    def lang_index(self, code):
        """Index of a language code in config.json's "langs"."""
        i = c_int32()
        check(_lib().lmf_hypernet_lang_index(self.handle, code.encode(), ctypes.byref(i)))
        return i.value

    def input_cache(self):
        """A fresh ``InputCache`` sized for this hypernetwork."""
        return InputCache(self)

    def predict(self, surface_forms, source_in, source_out=None, *, lang_index=None, copy_ids=None,
                bias=False, cache=None, tf32=False):
        """Predicts embeddings for U new tokens; returns a ``HypernetOutput``.

        surface_forms: int [U, L] ids of the original vocabulary (>= V0: fallback rows), padded with
            pad_token_id. source_in / source_out: [rows >= V0, n_embd] float tensors (source_out
            only for separate output embeddings), same dtype and row stride; on the context's
            device. lang_index: for hypernetworks with a language embedding (an int, or a code from
            config "langs"). copy_ids: optional int [U]: -1 predicts, an id copies that source row
            (special tokens). bias: also return the predicted bias. cache: an ``InputCache`` to
            reuse input projections across calls. tf32: CUDA only, TF32 GEMMs.
        On a CUDA context the outputs are CUDA tensors and the work is enqueued on torch's current
        stream.
        """
        _need_torch()
        cfg = self.config
        ctx = self.context
        cuda = ctx.backend == "cuda"
        S = _ids(surface_forms, "surface_forms", 2)
        U, L = S.shape
        si, dt, rows, stride = _rows(source_in, "source_in", ctx)
        so = None
        if source_out is not None:
            so, dto, rows_o, stride_o = _rows(source_out, "source_out", ctx)
            if dto != dt or rows_o != rows or stride_o != stride:
                raise ValueError("source_out must have source_in's dtype, rows and row stride "
                                 "(%s, %d, %d vs %s, %d, %d)" % (so.dtype, rows_o, stride_o, si.dtype,
                                                                 rows, stride))
        if si.shape[1] != cfg["n_embd"] or (so is not None and so.shape[1] != cfg["n_embd"]):
            raise ValueError("source embeddings must be [rows, n_embd = %d]" % cfg["n_embd"])
        if isinstance(lang_index, str):
            lang_index = self.lang_index(lang_index)
        if cfg["embed_lang_id"] and lang_index is None:
            raise ValueError("this hypernetwork embeds a language id: pass lang_index")
        cp = _ids(copy_ids, "copy_ids", 1) if copy_ids is not None else None
        if cp is not None and cp.shape[0] != U:
            raise ValueError("copy_ids has %d entries for %d tokens" % (cp.shape[0], U))
        E = cfg["n_embd"]
        dev = si.device
        e_in = torch.empty((U, E), dtype=torch.float32, device=dev)
        e_out = (torch.empty((U, E), dtype=torch.float32, device=dev)
                 if cfg["separate_out_embeddings"] else None)
        b = torch.empty(U, dtype=torch.float32, device=dev) if bias else None
        a = _new(HypernetArgs, "lmf_hypernet_args_init", LMF_HYPERNET_ARGS_VERSION)
        a.num_tokens = U
        a.surface_len = L
        a.surface_forms = S.data_ptr()
        a.source_in = si.data_ptr()
        a.source_out = so.data_ptr() if so is not None else None
        a.source_dtype = dt
        a.source_rows = rows
        a.source_row_stride = stride
        a.lang_index = -1 if lang_index is None else int(lang_index)
        a.copy_ids = cp.data_ptr() if cp is not None else None
        if cache is not None:
            if cache.rows.device != dev or cache.rows.shape[1] != cfg["hidden_size"]:
                raise ValueError("cache was made for another hypernetwork or device (rows on %s)"
                                 % cache.rows.device)
            a.input_cache = cache.rows.data_ptr()
            a.input_cache_valid = cache.valid.data_ptr()
        a.out_in = e_in.data_ptr()
        a.out_out = e_out.data_ptr() if e_out is not None else None
        a.out_bias = b.data_ptr() if b is not None else None
        a.allow_tf32 = 1 if tf32 else 0
        lib = _lib()
        if not cuda:
            check(lib.lmf_hypernet_predict(self.handle, ctypes.byref(a), None, 0, None))
            return HypernetOutput(e_in, e_out, b)
        n = c_size_t(0)
        check(lib.lmf_hypernet_workspace_size(self.handle, ctypes.byref(a), ctypes.byref(n)))
        # torch's allocator is stream-ordered: freeing ws after the call is safe on this stream.
        ws = torch.empty(max(int(n.value), 1), dtype=torch.uint8, device=dev)
        stream = torch.cuda.current_stream(dev).cuda_stream or None
        check(lib.lmf_hypernet_predict(self.handle, ctypes.byref(a), ws.data_ptr(), int(n.value), stream))
        return HypernetOutput(e_in, e_out, b)

    def close(self):
        """Frees the hypernetwork. Idempotent."""
        if self._handle is None:
            return
        _lib().lmf_hypernet_destroy(self._handle)
        self._handle = None

    def __repr__(self):
        c = self.config
        return ("lmfuse.Hypernet(layers=%d, hidden=%d, intermediate=%d, heads=%d, n_embd=%d, "
                "separate_out_embeddings=%d, lang=%d%s)" % (
                    c["num_layers"], c["hidden_size"], c["intermediate_size"], c["num_heads"],
                    c["n_embd"], c["separate_out_embeddings"], c["embed_lang_id"],
                    ", closed" if self.closed else ""))


# ---- FVT ----------------------------------------------------------------------------------------------

def fvt(decompositions, source_in, source_out=None, *, unk_id, copy_ids=None, context=None):
    """FVT embeddings: the mean of each token's decomposition rows (an id outside the source counts
    as ``unk_id``; an empty decomposition gives the unk row; ``copy_ids[u] >= 0`` copies a row).

    decompositions: a list of id lists, or ``(offsets, ids)`` (int64 [U + 1], int [n]) as lmf_dyntok's
    DECOMP fields give them. Returns (e_in, e_out) float32 [U, n_embd] (e_out None without
    source_out). On a CUDA ``context`` the sources must be tensors on its device, the results are
    made there and the call is enqueued on torch's current stream; the decompositions and copy_ids
    are read on the host (CUDA tensors are copied there)."""
    _need_torch()
    ctx = _context(context)
    if isinstance(decompositions, tuple) and len(decompositions) == 2:
        offsets = _as_torch(decompositions[0], "offsets").to(device="cpu", dtype=torch.int64).contiguous()
        ids = _ids(decompositions[1], "ids", 1)
    else:
        lens = [len(d) for d in decompositions]
        offsets = torch.zeros(len(lens) + 1, dtype=torch.int64)
        if lens:
            offsets[1:] = torch.cumsum(torch.tensor(lens, dtype=torch.int64), 0)
        flat = [int(i) for d in decompositions for i in d]
        ids = torch.tensor(flat, dtype=torch.int32)
    U = offsets.shape[0] - 1
    si, dt, rows, stride = _rows(source_in, "source_in", ctx)
    so = None
    if source_out is not None:
        so, dto, rows_o, stride_o = _rows(source_out, "source_out", ctx)
        if dto != dt or rows_o != rows or stride_o != stride or so.shape[1] != si.shape[1]:
            raise ValueError("source_out must have source_in's dtype, shape and row stride")
    E = si.shape[1]
    cp = _ids(copy_ids, "copy_ids", 1) if copy_ids is not None else None
    dev = si.device
    e_in = torch.empty((U, E), dtype=torch.float32, device=dev)
    e_out = torch.empty((U, E), dtype=torch.float32, device=dev) if so is not None else None
    a = _new(FvtArgs, "lmf_fvt_args_init", LMF_FVT_ARGS_VERSION)
    a.num_tokens = U
    a.offsets = offsets.data_ptr()
    a.ids = ids.data_ptr() if ids.numel() else None
    a.copy_ids = cp.data_ptr() if cp is not None else None
    a.source_in = si.data_ptr()
    a.source_out = so.data_ptr() if so is not None else None
    a.source_dtype = dt
    a.n_embd = E
    a.source_rows = rows
    a.source_row_stride = stride
    a.unk_id = int(unk_id)
    a.out_in = e_in.data_ptr()
    a.out_out = e_out.data_ptr() if e_out is not None else None
    stream = (torch.cuda.current_stream(dev).cuda_stream or None) if dev.type == "cuda" else None
    check(_lib().lmf_fvt_predict(ctx.handle, ctypes.byref(a), stream))
    return e_in, e_out
