"""From a tokenized batch to ``inputs_embeds`` in one call: batch-level BPE merging (lmfuse.dyntok)
then embeddings for the new tokens from a ZeTT hypernetwork or FVT (lmfuse.hypernet), assembled as a
padded batch a model consumes (include/lmfuse/dyntok.h: lmf_dyntok_embed).

    vocab = lmfuse.Vocab.from_tokenizer_json("data/tokenizers/mistral-7b/tokenizer.json")
    out = lmfuse.embed_batch(vocab, [row["ids"] for row in batch], model.get_input_embeddings().weight,
                             hypernet=hn, max_merges=200, pad_side="left")
    logits = model(inputs_embeds=out.inputs_embeds, attention_mask=out.attention_mask).logits

Tokens left alone get their row of the source embeddings exactly; with max_merges=0 the result is the
model's own embedding lookup. ``EmbedCache`` keeps predicted rows across batches (keyed by token
bytes, LRU, never evicting rows of the batch in progress). On a CPU context the tensors are CPU
tensors; on a CUDA context (``context=lmfuse.Context("cuda")`` or a hypernetwork made on one) the
source embeddings must be on its device, inputs_embeds / new_out / new_bias come back there, and the
mask, ids and spans on the CPU; the call returns when the batch is ready (it synchronises).
"""

import ctypes
from ctypes import POINTER, Structure, c_float, c_int32, c_int64, c_size_t, c_uint32, c_void_p

from . import _ffi
from ._handle import Closeable
from .dyntok import MergeResult, _merge_handle
from .errors import check
from .hypernet import _context, _float_code, _need_torch, _rows, torch

LMF_DYNTOK_EMBED_ARGS_VERSION = 1
LMF_EMBED_CACHE_CONFIG_VERSION = 1
METHODS = {"hypernet": 0, "fvt": 1}
PAD_SIDES = {"right": 0, "left": 1}


class DyntokEmbedArgs(Structure):
    """lmf_dyntok_embed_args_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("method", c_int32),
        ("hypernet", c_void_p),
        ("cache", c_void_p),
        ("lang_index", c_int32),
        ("surface_len", c_int32),
        ("hn_input_cache", c_void_p),
        ("hn_input_cache_valid", c_void_p),
        ("fvt_unk_id", c_int32),
        ("n_embd", c_int32),
        ("source_in", c_void_p),
        ("source_out", c_void_p),
        ("source_rows", c_int64),
        ("source_row_stride", c_int64),
        ("source_dtype", c_int32),
        ("out_dtype", c_int32),
        ("pad_side", c_int32),
        ("pad_id", c_int32),
        ("seq_len", c_int64),
        ("out_embeds", c_void_p),
        ("out_mask", c_void_p),
        ("out_ids", c_void_p),
        ("out_span_start", c_void_p),
        ("out_span_len", c_void_p),
        ("out_new_out", c_void_p),
        ("out_new_bias", c_void_p),
        ("out_max_len", c_void_p),
    ]


class EmbedCacheConfig(Structure):
    """lmf_embed_cache_config_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("n_embd", c_int32),
        ("capacity", c_int64),
        ("with_out", c_int32),
    ]


_S, _P = ctypes.c_int, c_void_p
_PROTOS = {
    "lmf_dyntok_embed_args_init": (_S, [_P, c_size_t]),
    "lmf_dyntok_embed_shape": (_S, [_P, POINTER(c_int64), POINTER(c_int64), POINTER(c_int32)]),
    "lmf_dyntok_embed": (_S, [_P, _P, _P, POINTER(DyntokEmbedArgs)]),
    "lmf_embed_cache_config_init": (_S, [_P, c_size_t]),
    "lmf_embed_cache_create": (_S, [POINTER(_P), POINTER(EmbedCacheConfig)]),
    "lmf_embed_cache_destroy": (None, [_P]),
    "lmf_embed_cache_begin_batch": (_S, [_P]),
    "lmf_embed_cache_clear": (_S, [_P]),
    "lmf_embed_cache_stats": (_S, [_P] + [POINTER(c_int64)] * 6),
}


_bound = None


def _fn(name):
    """The library's function ``name`` with this module's prototypes bound (all at once, per
    loaded library)."""
    global _bound
    lib = _ffi.lib()
    if _bound is not lib:
        for n, (restype, argtypes) in _PROTOS.items():
            f = _ffi.require(n)
            f.restype, f.argtypes = restype, argtypes
        _bound = lib
    return getattr(lib, name)


def _new(cls, init_name, version):
    s = cls()
    check(_fn(init_name)(ctypes.byref(s), ctypes.sizeof(cls)))
    s.version = version
    return s


class EmbedCache(Closeable):
    """Predicted rows by token bytes across batches (lmf_embed_cache_t): n_embd wide, ``capacity``
    rows, ``with_out`` when rows also hold e_out (models with separate output embeddings). Not
    thread-safe: one per thread."""

    def __init__(self, n_embd, capacity=5000, with_out=False):
        cfg = _new(EmbedCacheConfig, "lmf_embed_cache_config_init", LMF_EMBED_CACHE_CONFIG_VERSION)
        cfg.n_embd, cfg.capacity, cfg.with_out = int(n_embd), int(capacity), int(bool(with_out))
        h = c_void_p()
        check(_fn("lmf_embed_cache_create")(ctypes.byref(h), ctypes.byref(cfg)))
        self._handle = h
        self.n_embd, self.capacity, self.with_out = int(n_embd), int(capacity), bool(with_out)

    @property
    def handle(self):
        if self._handle is None:
            raise ValueError("this lmfuse.EmbedCache is closed")
        return self._handle

    def stats(self):
        """dict of rows, pinned, hits, misses, evictions, dropped."""
        vals = [c_int64() for _ in range(6)]
        check(_fn("lmf_embed_cache_stats")(self.handle, *[ctypes.byref(v) for v in vals]))
        return dict(zip(("rows", "pinned", "hits", "misses", "evictions", "dropped"),
                        (v.value for v in vals)))

    def clear(self):
        check(_fn("lmf_embed_cache_clear")(self.handle))

    def close(self):
        if self._handle is not None:
            _fn("lmf_embed_cache_destroy")(self._handle)
            self._handle = None


class EmbeddedBatch:
    """What ``embed_batch`` returns (torch tensors on the CPU):

    inputs_embeds [B, L, d] (out_dtype), attention_mask int64 [B, L], ids int64 [B, L] (merged ids:
    >= len(vocab) for new tokens; pad_id on padding), span_start / span_len int64 [B, L] (input
    positions each token covers, from its sequence's start; -1 / 0 on padding), new_out [num_new, d]
    and new_bias [num_new] (when asked for), and ``merges``: the MergeResult (merge list, new tokens'
    bytes and decompositions)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return "lmfuse.EmbeddedBatch(inputs_embeds=%s, %d merges, %d new tokens)" % (
            tuple(self.inputs_embeds.shape), self.merges.num_merges, len(self.merges.new_tokens))


def embed_batch(vocab, seqs, source_in, *, hypernet=None, method=None, source_out=None,
                max_merges=200, target_reduction=0.0, boundary="pretokens", pattern=None,
                word_ids=None, offsets=None, pad_side="right", pad_id=-1, out_dtype=None, cache=None,
                input_cache=None, lang_index=-1, surface_len=0, fvt_unk_id=0, new_outputs=False,
                context=None):
    """Merges a tokenized batch and embeds it; returns an EmbeddedBatch.

    source_in (and source_out for models with separate output embeddings): [V0, d] float tensors
    (float32, float16 or bfloat16; the model's embedding matrices). method: "hypernet" (default when
    ``hypernet`` is given) or "fvt". out_dtype: torch dtype of inputs_embeds (default: source_in's).
    pad_id: -1 pads with zero rows, else with that id's embedding row. cache: an EmbedCache;
    input_cache: a lmfuse.InputCache of the hypernetwork. new_outputs: also return the new tokens'
    e_out and bias (decoder models scoring them). The merge arguments are merge_batch's."""
    _need_torch()
    if method is None:
        method = "hypernet" if hypernet is not None else "fvt"
    if method not in METHODS:
        raise ValueError("method must be 'hypernet' or 'fvt', not %r" % (method,))
    if pad_side not in PAD_SIDES:
        raise ValueError("pad_side must be 'left' or 'right', not %r" % (pad_side,))
    if method == "hypernet" and hypernet is None:
        raise ValueError("method 'hypernet' needs a hypernet")
    ctx = _context(context if context is not None else getattr(hypernet, "context", None))
    src, code, rows, stride = _rows(source_in, "source_in", ctx)
    d = src.shape[1]
    out_src = None
    if source_out is not None:
        out_src, ocode, orows, ostride = _rows(source_out, "source_out", ctx)
        if (ocode, orows, ostride, out_src.shape[1]) != (code, rows, stride, d):
            raise ValueError("source_out must match source_in's dtype, shape and row stride")
    out_dtype = src.dtype if out_dtype is None else out_dtype
    out_code = _float_code(torch.empty(0, dtype=out_dtype))
    if out_code is None:
        raise TypeError("out_dtype must be float32, float16 or bfloat16")

    h = _merge_handle(vocab, seqs, max_merges, boundary, pattern, word_ids, offsets, ctx,
                      target_reduction)
    try:
        B, L, nn = c_int64(), c_int64(), c_int32()
        check(_fn("lmf_dyntok_embed_shape")(h, ctypes.byref(B), ctypes.byref(L), ctypes.byref(nn)))
        B, L, nn = B.value, L.value, nn.value
        dev = src.device  # the context's memory: the CPU, or its CUDA device
        if dev.type == "cuda":
            torch.cuda.current_stream(dev).synchronize()  # the library reads the sources on its own
        embeds = torch.empty((B, L, d), dtype=out_dtype, device=dev)
        mask = torch.empty((B, L), dtype=torch.int32)
        ids = torch.empty((B, L), dtype=torch.int32)
        s0 = torch.empty((B, L), dtype=torch.int32)
        sl = torch.empty((B, L), dtype=torch.int32)
        new_out = new_bias = None
        if new_outputs:
            new_bias = torch.empty(nn, dtype=torch.float32, device=dev)
            if out_src is not None or (hypernet is not None and
                                       hypernet.config.get("separate_out_embeddings")):
                new_out = torch.empty((nn, d), dtype=out_dtype, device=dev)
        a = _new(DyntokEmbedArgs, "lmf_dyntok_embed_args_init", LMF_DYNTOK_EMBED_ARGS_VERSION)
        a.method = METHODS[method]
        a.hypernet = hypernet.handle if method == "hypernet" else None
        a.cache = cache.handle if cache is not None else None
        a.lang_index, a.surface_len, a.fvt_unk_id = int(lang_index), int(surface_len), int(fvt_unk_id)
        if input_cache is not None:
            a.hn_input_cache = input_cache.rows.data_ptr()
            a.hn_input_cache_valid = input_cache.valid.data_ptr()
        a.n_embd = d
        a.source_in = src.data_ptr()
        a.source_out = out_src.data_ptr() if out_src is not None else None
        a.source_rows, a.source_row_stride, a.source_dtype = rows, stride, code
        a.out_dtype, a.pad_side, a.pad_id, a.seq_len = out_code, PAD_SIDES[pad_side], int(pad_id), L
        a.out_embeds, a.out_mask, a.out_ids = embeds.data_ptr(), mask.data_ptr(), ids.data_ptr()
        a.out_span_start, a.out_span_len = s0.data_ptr(), sl.data_ptr()
        a.out_new_out = new_out.data_ptr() if new_out is not None else None
        a.out_new_bias = new_bias.data_ptr() if new_bias is not None else None
        check(_fn("lmf_dyntok_embed")(ctx.handle, vocab.handle, h, ctypes.byref(a)))
    except BaseException:
        _ffi.lib().lmf_dyntok_result_destroy(h)
        raise
    merges = MergeResult(h, vocab.size)  # copies the result's arrays, then destroys it
    return EmbeddedBatch(inputs_embeds=embeds, attention_mask=mask.long(), ids=ids.long(),
                         span_start=s0.long(), span_len=sl.long(), new_out=new_out,
                         new_bias=new_bias, merges=merges)
