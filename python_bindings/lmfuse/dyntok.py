"""Batch-level BPE merging ("dynamic tokenization"): include/lmfuse/vocab.h and dyntok.h.

    vocab = lmfuse.Vocab.from_tokenizer_json("data/tokenizers/mistral-7b/tokenizer.json")
    res = lmfuse.merge_batch(vocab, [row["ids"] for row in batch], max_merges=200)
    res.sequences()          # merged ids per sequence (ids >= vocab.size are new tokens)
    res.new_tokens           # their raw bytes; res.decompositions: their base ids
    ids, mask = res.padded(pad_id=0, side="right")     # [B, L'] and the attention mask

Semantics (the reference's, exactly): docs/dyntok.md. Inputs are sequences of ids (lists, numpy
arrays or torch tensors, any device: they are read on the host), or flat ids plus offsets.
Every failed library call raises LmfuseError naming the argument; nothing is changed.
"""

import ctypes

import numpy as np

from . import _ffi
from .errors import check
from ._handle import Closeable

FLAG_SPECIAL = _ffi.LMF_TOKEN_SPECIAL
FLAG_BYTE_FALLBACK = _ffi.LMF_TOKEN_BYTE_FALLBACK
FLAG_UNUSED = _ffi.LMF_TOKEN_UNUSED


def _as_int_array(x, dtype, what):
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().to("cpu").numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError("%s must hold integers, not %s" % (what, a.dtype))
    return np.ascontiguousarray(a, dtype=dtype)


class Vocab(Closeable):
    """A tokenizer's vocabulary as raw byte strings (lmf_vocab_t). Immutable; thread-safe."""

    def __init__(self, handle):
        self._handle = handle
        lib = _ffi.lib()
        n = ctypes.c_int32()
        check(lib.lmf_vocab_size(handle, ctypes.byref(n)))
        self.size = n.value
        check(lib.lmf_vocab_format(handle, ctypes.byref(n)))
        self.format = _ffi.VOCAB_FORMAT_NAMES.get(n.value, str(n.value))

    @classmethod
    def from_tokenizer_json(cls, path):
        """Loads a HuggingFace tokenizer.json (byte-level or metaspace/byte-fallback BPE)."""
        h = ctypes.c_void_p()
        check(_ffi.require("lmf_vocab_load_json")(ctypes.byref(h), str(path).encode()))
        return cls(h)

    @classmethod
    def from_json_string(cls, text):
        """The same from the file's contents (str or bytes)."""
        data = text.encode() if isinstance(text, str) else bytes(text)
        h = ctypes.c_void_p()
        check(_ffi.require("lmf_vocab_parse_json")(ctypes.byref(h), data, len(data)))
        return cls(h)

    @classmethod
    def from_tokens(cls, tokens, flags=None, merges=None, pretokenizer_pattern=None):
        """A vocabulary from token byte strings (id = position), optional per-token flags
        (FLAG_SPECIAL, ...), merges as (left id, right id) pairs in priority order, and a pattern."""
        toks = [bytes(t) for t in tokens]
        offsets = np.zeros(len(toks) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in toks], out=offsets[1:])
        blob = np.frombuffer(b"".join(toks) or b"\0", dtype=np.uint8)
        fl = None if flags is None else np.ascontiguousarray(flags, dtype=np.uint8)
        mg = None if merges is None or len(merges) == 0 else _as_int_array(merges, np.int32, "merges")
        a = _ffi.new(_ffi.VocabArrays, num_tokens=len(toks), bytes=blob.ctypes.data,
                     offsets=offsets.ctypes.data,
                     flags=None if fl is None else fl.ctypes.data,
                     num_merges=0 if mg is None else mg.size // 2,
                     merges=None if mg is None else mg.ctypes.data,
                     pretokenizer_pattern=None if pretokenizer_pattern is None
                     else pretokenizer_pattern.encode())
        h = ctypes.c_void_p()
        check(_ffi.require("lmf_vocab_create")(ctypes.byref(h), ctypes.byref(a)))
        return cls(h)

    @property
    def handle(self):
        if self._handle is None:
            raise ValueError("this lmfuse.Vocab is closed")
        return self._handle

    def token_bytes(self, token_id):
        """The raw bytes of a token."""
        p, n = ctypes.c_void_p(), ctypes.c_int64()
        check(_ffi.lib().lmf_vocab_token_bytes(self.handle, int(token_id), ctypes.byref(p),
                                               ctypes.byref(n)))
        return ctypes.string_at(p.value, n.value) if n.value else b""

    def flags(self, token_id):
        f = ctypes.c_uint32()
        check(_ffi.lib().lmf_vocab_token_flags(self.handle, int(token_id), ctypes.byref(f)))
        return f.value

    def find(self, data):
        """The canonical non-special id of a byte string, or None."""
        data = bytes(data)
        i = ctypes.c_int32()
        check(_ffi.lib().lmf_vocab_find(self.handle, data, len(data), ctypes.byref(i)))
        return None if i.value < 0 else i.value

    @property
    def num_merges(self):
        n = ctypes.c_int32()
        check(_ffi.lib().lmf_vocab_num_merges(self.handle, ctypes.byref(n)))
        return n.value

    def merge(self, rank):
        """Merge ``rank`` as (left, right, result) ids."""
        l, r, x = ctypes.c_int32(), ctypes.c_int32(), ctypes.c_int32()
        check(_ffi.lib().lmf_vocab_merge(self.handle, int(rank), ctypes.byref(l), ctypes.byref(r),
                                         ctypes.byref(x)))
        return l.value, r.value, x.value

    @property
    def pretokenizer_pattern(self):
        """The file's Split pre-tokenizer regex, or None."""
        p = ctypes.c_char_p()
        check(_ffi.lib().lmf_vocab_pretokenizer_pattern(self.handle, ctypes.byref(p)))
        return None if p.value is None else p.value.decode()

    def close(self):
        if self._handle is not None:
            _ffi.lib().lmf_vocab_destroy(self._handle)
            self._handle = None

    def __len__(self):
        return self.size

    def __repr__(self):
        return "lmfuse.Vocab(%d ids, %s)" % (self.size, self.format)


class MergeResult:
    """What lmf_dyntok_merge returns, copied into numpy arrays.

    offsets [B+1] and ids: the merged batch (CSR); span_start / span_len [num_tokens]: the input
    positions (flat) each output token covers; merges: (left, right, result, count) per merge;
    new_tokens: bytes of the new ids base_size, base_size + 1, ...; decompositions: their base ids.
    """

    def __init__(self, handle, base_size):
        lib = _ffi.lib()
        self.base_size = base_size
        try:
            def field(f, dtype):
                p, n = ctypes.c_void_p(), ctypes.c_int64()
                check(lib.lmf_dyntok_result_field(handle, f, ctypes.byref(p), ctypes.byref(n), None))
                if n.value == 0:
                    return np.zeros(0, dtype=dtype)
                buf = (ctypes.c_char * (n.value * np.dtype(dtype).itemsize)).from_address(p.value)
                return np.frombuffer(bytes(buf), dtype=dtype)
            self.offsets = field(_ffi.LMF_DYNTOK_FIELD_OFFSETS, np.int64)
            self.ids = field(_ffi.LMF_DYNTOK_FIELD_IDS, np.int32)
            self.span_start = field(_ffi.LMF_DYNTOK_FIELD_SPAN_START, np.int64)
            self.span_len = field(_ffi.LMF_DYNTOK_FIELD_SPAN_LEN, np.int32)
            pairs = field(_ffi.LMF_DYNTOK_FIELD_MERGE_PAIRS, np.int32).reshape(-1, 2)
            results = field(_ffi.LMF_DYNTOK_FIELD_MERGE_RESULTS, np.int32)
            counts = field(_ffi.LMF_DYNTOK_FIELD_MERGE_COUNTS, np.int64)
            self.merges = [(int(a), int(b), int(r), int(c))
                           for (a, b), r, c in zip(pairs, results, counts)]
            noff = field(_ffi.LMF_DYNTOK_FIELD_NEW_OFFSETS, np.int64)
            nbytes = field(_ffi.LMF_DYNTOK_FIELD_NEW_BYTES, np.uint8).tobytes()
            self.new_tokens = [nbytes[noff[k]:noff[k + 1]] for k in range(len(noff) - 1)]
            doff = field(_ffi.LMF_DYNTOK_FIELD_DECOMP_OFFSETS, np.int64)
            dec = field(_ffi.LMF_DYNTOK_FIELD_DECOMP, np.int32)
            self.decompositions = [dec[doff[k]:doff[k + 1]].tolist() for k in range(len(doff) - 1)]
        finally:
            lib.lmf_dyntok_result_destroy(handle)

    @property
    def num_merges(self):
        return len(self.merges)

    @property
    def num_tokens(self):
        return int(self.ids.size)

    def sequences(self):
        """The merged ids as a list of lists."""
        return [self.ids[self.offsets[s]:self.offsets[s + 1]].tolist()
                for s in range(len(self.offsets) - 1)]

    def spans(self):
        """Per sequence, (start, length) of the input positions (within the sequence) each output
        token covers."""
        out = []
        for s in range(len(self.offsets) - 1):
            a, b = self.offsets[s], self.offsets[s + 1]
            first = self.span_start[a] if b > a else 0
            out.append(list(zip((self.span_start[a:b] - first).tolist(),
                                self.span_len[a:b].tolist())))
        return out

    def token_bytes(self, vocab, token_id):
        """Bytes of any id of the result: a base token's (from vocab) or a new token's."""
        if token_id >= self.base_size:
            return self.new_tokens[token_id - self.base_size]
        return vocab.token_bytes(token_id)

    def padded(self, pad_id, side="right", as_torch=True):
        """(ids [B, L'], attention mask [B, L']) padded with pad_id on the given side."""
        if side not in ("left", "right"):
            raise ValueError("side must be 'left' or 'right'")
        lens = np.diff(self.offsets)
        width = int(lens.max()) if lens.size else 0
        ids = np.full((lens.size, width), pad_id, dtype=np.int64)
        mask = np.zeros((lens.size, width), dtype=np.int64)
        for s, n in enumerate(lens):
            row = self.ids[self.offsets[s]:self.offsets[s + 1]]
            sl = slice(0, n) if side == "right" else slice(width - n, width)
            ids[s, sl] = row
            mask[s, sl] = 1
        if as_torch:
            import torch
            return torch.from_numpy(ids), torch.from_numpy(mask)
        return ids, mask


def _flatten(seqs, offsets):
    if offsets is not None:
        return _as_int_array(seqs, np.int32, "ids"), _as_int_array(offsets, np.int64, "offsets")
    rows = [_as_int_array(s, np.int32, "ids") for s in seqs]
    off = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([r.size for r in rows], out=off[1:])
    flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)
    return np.ascontiguousarray(flat, dtype=np.int32), off


def _merge_handle(vocab, seqs, max_merges, boundary, pattern, word_ids, offsets, context,
                  target_reduction=0.0):
    """Runs lmf_dyntok_merge; returns the raw lmf_dyntok_result_t handle (the caller destroys it)."""
    if boundary not in _ffi.BOUNDARIES:
        raise ValueError("boundary must be one of %s, not %r" % (sorted(_ffi.BOUNDARIES), boundary))
    ids, off = _flatten(seqs, offsets)
    words = None
    if word_ids is not None:
        words, _ = _flatten(word_ids, offsets)
    batch = _ffi.new(_ffi.DyntokBatch, num_seqs=off.size - 1, offsets=off.ctypes.data,
                     ids=ids.ctypes.data,
                     word_ids=None if words is None else words.ctypes.data)
    cfg = _ffi.new(_ffi.DyntokConfig, max_merges=int(max_merges),
                   boundary=_ffi.BOUNDARIES[boundary],
                   pattern=None if pattern is None else pattern.encode(),
                   target_reduction=float(target_reduction))
    h = ctypes.c_void_p()
    check(_ffi.require("lmf_dyntok_merge")(context.handle, vocab.handle, ctypes.byref(batch),
                                           ctypes.byref(cfg), ctypes.byref(h)))
    return h


def merge_batch(vocab, seqs, max_merges=200, boundary="pretokens", pattern=None, word_ids=None,
                offsets=None, context=None, target_reduction=0.0):
    """Merges a tokenized batch; returns a MergeResult.

    seqs: a list of id sequences, or (with ``offsets``, [B+1]) the flat ids. boundary:
    "pretokens" (the reference; ``pattern`` overrides the default pre-tokenizer regex),
    "words" (``word_ids`` per token, same layout as seqs; < 0 never merges) or "whitespace".
    target_reduction: in (0, 1), also stop once the batch is that much shorter (0: off).
    context: an lmfuse.Context (default: a CPU context made for the call).
    """
    own = None
    if context is None:
        from .context import Context
        own = context = Context("cpu")
    try:
        h = _merge_handle(vocab, seqs, max_merges, boundary, pattern, word_ids, offsets, context,
                          target_reduction)
        return MergeResult(h, vocab.size)
    finally:
        if own is not None:
            own.close()
