"""ctypes mirror of the public C ABI: include/lmfuse/lmfuse.h, mezo.h, logits.h, vocab.h, dyntok.h.

Every public struct is a ``ctypes.Structure`` with the fields of the header in the same order;
``new(cls)`` gives one filled with the library's defaults (through its ``*_init(ptr, struct_size)``
function, which writes exactly ``ctypes.sizeof(cls)`` bytes), with the version these bindings were
written for. ``bind(lib)``
sets argtypes/restype of every exported function. Users normally need none of this: see
``lmfuse.Context``, ``lmfuse.Plan``, ``lmfuse.MeZO`` and ``lmfuse.combine_logits``.

A family's functions missing from the loaded library (an older build) are left unbound rather than
failing the load: the other families keep working and ``require(name)`` says what is missing.
"""

import ctypes
from ctypes import (POINTER, Structure, c_char_p, c_float, c_int, c_int32, c_int64, c_size_t,
                    c_uint, c_uint32, c_uint64, c_void_p)

# ---- lmfuse.h --------------------------------------------------------------------------------------

VERSION_MAJOR = 0          # LMF_VERSION_MAJOR these bindings were written for
VERSION_MIN = 100          # oldest LMF_VERSION_NUMBER they accept (0.1.0)

STATUS_NAMES = {
    0: "LMF_OK",
    1: "LMF_ERR_INVALID_ARGUMENT",
    2: "LMF_ERR_NULL_POINTER",
    3: "LMF_ERR_UNSUPPORTED_DTYPE",
    4: "LMF_ERR_INVALID_SIZE",
    5: "LMF_ERR_STRUCT_SIZE",
    6: "LMF_ERR_OVERLAP",
    7: "LMF_ERR_OUT_OF_MEMORY",
    8: "LMF_ERR_NO_DEVICE",
    9: "LMF_ERR_NOT_COMPILED",
    10: "LMF_ERR_CUDA",
    11: "LMF_ERR_INVALID_STATE",
    12: "LMF_ERR_CALLBACK",
    13: "LMF_ERR_NONFINITE",
    14: "LMF_ERR_IO",
    15: "LMF_ERR_PARSE",
    16: "LMF_ERR_INTERNAL",
}
globals().update({name: code for code, name in STATUS_NAMES.items()})

LMF_BACKEND_AUTO, LMF_BACKEND_CPU, LMF_BACKEND_CUDA = 0, 1, 2
BACKENDS = {"auto": LMF_BACKEND_AUTO, "cpu": LMF_BACKEND_CPU, "cuda": LMF_BACKEND_CUDA}
BACKEND_NAMES = {v: k for k, v in BACKENDS.items()}

LMF_DTYPE_F32, LMF_DTYPE_F16, LMF_DTYPE_BF16, LMF_DTYPE_I32, LMF_DTYPE_I64, LMF_DTYPE_U8 = 0, 1, 2, 3, 4, 5

LMF_CONTEXT_CONFIG_VERSION = 1


class ContextConfig(Structure):
    """lmf_context_config_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("backend", c_int32),
        ("device", c_int32),
        ("cpu_threads", c_int32),
    ]


# ---- mezo.h ----------------------------------------------------------------------------------------

LMF_MEZO_GAUSSIAN, LMF_MEZO_RADEMACHER = 0, 1
DISTS = {"gaussian": LMF_MEZO_GAUSSIAN, "rademacher": LMF_MEZO_RADEMACHER}
LMF_ROUND_NEAREST, LMF_ROUND_STOCHASTIC = 0, 1
ROUNDINGS = {"nearest": LMF_ROUND_NEAREST, "stochastic": LMF_ROUND_STOCHASTIC}
LMF_MEZO_MAX_SEEDS = 64
LMF_MEZO_CONFIG_VERSION = 1
LMF_MEZO_STEP_ARGS_VERSION = 1
LMF_MEZO_MULTI_ARGS_VERSION = 1
LMF_MEZO_DRIVER_ARGS_VERSION = 1


class MezoTensor(Structure):
    """lmf_mezo_tensor_t (a fixed-size record, no struct_size)"""
    _fields_ = [
        ("data", c_void_p),
        ("master", c_void_p),        # float *
        ("numel", c_int64),
        ("global_offset", c_int64),
        ("uid", c_uint32),
        ("dtype", c_int32),
        ("weight_decay", c_int32),
        ("reserved", c_int32),
    ]


class MezoConfig(Structure):
    """lmf_mezo_config_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("dist", c_int32),
        ("rounding", c_int32),
    ]


class MezoStepArgs(Structure):
    """lmf_mezo_step_args_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("seed", c_uint64),
        ("grad", c_float),
        ("lr", c_float),
        ("weight_decay", c_float),
        ("perturb_next", c_int32),
        ("next_seed", c_uint64),
        ("next_scale", c_float),
        ("grad_ptr", c_void_p),      # const float *
        ("skipped_ptr", c_void_p),   # int32_t *
    ]


class MezoMultiArgs(Structure):
    """lmf_mezo_multi_args_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("num_seeds", c_size_t),
        ("seeds", c_void_p),         # const uint64_t *
        ("coeffs", c_void_p),        # const float *
        ("coeffs_ptr", c_void_p),    # const float *
        ("lr", c_float),
        ("weight_decay", c_float),
        ("skipped_ptr", c_void_p),   # int32_t *
    ]


class MezoDriverArgs(Structure):
    """lmf_mezo_driver_args_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("seed", c_uint64),
        ("eps", c_float),
        ("lr", c_float),
        ("weight_decay", c_float),
        ("perturb_next", c_int32),
        ("next_seed", c_uint64),
    ]


class MezoStepResult(Structure):
    """lmf_mezo_step_result_t (an output record, no struct_size)"""
    _fields_ = [
        ("loss_plus", c_float),
        ("loss_minus", c_float),
        ("grad", c_float),
        ("skipped", c_int32),
    ]


# ---- logits.h --------------------------------------------------------------------------------------

LMF_ROW_OK, LMF_ROW_ALL_MASKED, LMF_ROW_NONFINITE, LMF_ROW_BAD_INDEX = 0, 1, 2, 3
ROW_STATUS_NAMES = {LMF_ROW_OK: "LMF_ROW_OK", LMF_ROW_ALL_MASKED: "LMF_ROW_ALL_MASKED",
                    LMF_ROW_NONFINITE: "LMF_ROW_NONFINITE", LMF_ROW_BAD_INDEX: "LMF_ROW_BAD_INDEX"}
LMF_LOGITS_MAX_MODELS = 16
LMF_LOGITS_PARAMS_VERSION = 1
LMF_LOGITS_OUTPUTS_VERSION = 1


class LogitsModel(Structure):
    """lmf_logits_model_t (a fixed-size record, no struct_size; reserved must be 0)"""
    _fields_ = [
        ("logits", c_void_p),        # const void *
        ("row_index", c_void_p),     # const int32_t *
        ("coeff_rows", c_void_p),    # const float *
        ("sparse_index", c_void_p),  # const int32_t *
        ("row_stride", c_int64),
        ("dtype", c_int32),
        ("vocab", c_int32),
        ("coeff", c_float),
        ("temperature", c_float),
        ("sparse_k", c_int32),
        ("sparse_fill", c_float),
        ("reserved", c_int32 * 2),
    ]


class LogitsParams(Structure):
    """lmf_logits_params_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("num_rows", c_int32),
        ("vocab_out", c_int32),
        ("plausibility_model", c_int32),
        ("plausibility_alpha", c_float),
        ("nucleus_model", c_int32),
        ("nucleus_p", c_float),
        ("bias", c_void_p),              # const float *
        ("bias_row_stride", c_int64),
        ("gedi_pos_model", c_int32),
        ("gedi_neg_model", c_int32),
        ("gedi_omega", c_float),
        ("gedi_logit_scale", c_float),
        ("gedi_bias_pos", c_float),
        ("gedi_bias_neg", c_float),
        ("gedi_class_bias", c_float),
        ("gedi_filter_p", c_float),
        ("gedi_target_p", c_float),
        ("gedi_L_pos", c_void_p),        # float *
        ("gedi_L_neg", c_void_p),        # float *
        ("gedi_n", c_void_p),            # int32_t *
        ("temperature", c_float),
        ("temperature_rows", c_void_p),  # const float *
        ("top_k", c_int32),
        ("top_p", c_float),
        ("min_p", c_float),
        ("seeds", c_void_p),             # const uint64_t *
        ("offsets", c_void_p),           # const uint64_t *
    ]


class LogitsOutputs(Structure):
    """lmf_logits_outputs_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("tokens", c_void_p),            # int32_t *
        ("status", c_void_p),            # int32_t *
        ("token_logprob", c_void_p),     # float *
        ("lse", c_void_p),               # float *
        ("logprobs", c_void_p),          # float *
        ("logprobs_row_stride", c_int64),
        ("gedi_logp_desired", c_void_p), # float *
    ]


# ---- vocab.h, dyntok.h ----------------------------------------------------------------------------

LMF_VOCAB_FORMAT_RAW, LMF_VOCAB_FORMAT_BYTE_LEVEL, LMF_VOCAB_FORMAT_METASPACE = 0, 1, 2
VOCAB_FORMAT_NAMES = {0: "raw", 1: "byte_level", 2: "metaspace"}
LMF_TOKEN_SPECIAL, LMF_TOKEN_BYTE_FALLBACK, LMF_TOKEN_UNUSED = 1, 2, 4
LMF_VOCAB_ARRAYS_VERSION = 1


class VocabArrays(Structure):
    """lmf_vocab_arrays_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("num_tokens", c_int32),
        ("bytes", c_void_p),
        ("offsets", c_void_p),
        ("flags", c_void_p),
        ("num_merges", c_int32),
        ("merges", c_void_p),
        ("pretokenizer_pattern", c_char_p),
    ]


LMF_DYNTOK_PRETOKENS, LMF_DYNTOK_WORDS, LMF_DYNTOK_WHITESPACE = 0, 1, 2
BOUNDARIES = {"pretokens": LMF_DYNTOK_PRETOKENS, "words": LMF_DYNTOK_WORDS,
              "whitespace": LMF_DYNTOK_WHITESPACE}
LMF_DYNTOK_CONFIG_VERSION = 1
LMF_DYNTOK_BATCH_VERSION = 1
(LMF_DYNTOK_FIELD_OFFSETS, LMF_DYNTOK_FIELD_IDS, LMF_DYNTOK_FIELD_SPAN_START,
 LMF_DYNTOK_FIELD_SPAN_LEN, LMF_DYNTOK_FIELD_MERGE_PAIRS, LMF_DYNTOK_FIELD_MERGE_RESULTS,
 LMF_DYNTOK_FIELD_MERGE_COUNTS, LMF_DYNTOK_FIELD_NEW_OFFSETS, LMF_DYNTOK_FIELD_NEW_BYTES,
 LMF_DYNTOK_FIELD_DECOMP_OFFSETS, LMF_DYNTOK_FIELD_DECOMP) = range(11)


class DyntokConfig(Structure):
    """lmf_dyntok_config_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("max_merges", c_int32),
        ("boundary", c_int32),
        ("pattern", c_char_p),
        ("target_reduction", c_float),
    ]


class DyntokBatch(Structure):
    """lmf_dyntok_batch_t"""
    _fields_ = [
        ("struct_size", c_size_t),
        ("version", c_uint32),
        ("num_seqs", c_int64),
        ("offsets", c_void_p),
        ("ids", c_void_p),
        ("word_ids", c_void_p),
    ]


# int (*lmf_mezo_loss_fn)(void *user_data, float *loss)
LOSS_FN = ctypes.CFUNCTYPE(c_int, c_void_p, POINTER(c_float))

# struct -> (init function, version constant)
_INIT = {
    ContextConfig: ("lmf_context_config_init", LMF_CONTEXT_CONFIG_VERSION),
    MezoConfig: ("lmf_mezo_config_init", LMF_MEZO_CONFIG_VERSION),
    MezoStepArgs: ("lmf_mezo_step_args_init", LMF_MEZO_STEP_ARGS_VERSION),
    MezoMultiArgs: ("lmf_mezo_multi_args_init", LMF_MEZO_MULTI_ARGS_VERSION),
    MezoDriverArgs: ("lmf_mezo_driver_args_init", LMF_MEZO_DRIVER_ARGS_VERSION),
    LogitsParams: ("lmf_logits_params_init", LMF_LOGITS_PARAMS_VERSION),
    LogitsOutputs: ("lmf_logits_outputs_init", LMF_LOGITS_OUTPUTS_VERSION),
    VocabArrays: ("lmf_vocab_arrays_init", LMF_VOCAB_ARRAYS_VERSION),
    DyntokConfig: ("lmf_dyntok_config_init", LMF_DYNTOK_CONFIG_VERSION),
    DyntokBatch: ("lmf_dyntok_batch_init", LMF_DYNTOK_BATCH_VERSION),
}

_S = c_int  # lmf_status_t
_P = c_void_p
_PROTOS = {
    "lmf_version": (c_uint, []),
    "lmf_version_string": (c_char_p, []),
    "lmf_status_string": (c_char_p, [c_int]),
    "lmf_last_error": (c_char_p, []),
    "lmf_clear_error": (None, []),
    "lmf_dtype_size": (c_size_t, [c_int32]),
    "lmf_dtype_name": (c_char_p, [c_int32]),
    "lmf_convert_host": (_S, [_P, c_int32, _P, c_int32, c_int64]),
    "lmf_backend_available": (c_int, [c_int32]),
    "lmf_cuda_device_count": (c_int, []),
    "lmf_context_config_init": (_S, [_P, c_size_t]),
    "lmf_context_create": (_S, [POINTER(_P), POINTER(ContextConfig)]),
    "lmf_context_destroy": (None, [_P]),
    "lmf_context_backend": (_S, [_P, POINTER(c_int32)]),
    "lmf_stream_synchronize": (_S, [_P, _P]),
    "lmf_mezo_config_init": (_S, [_P, c_size_t]),
    "lmf_mezo_plan_create": (_S, [POINTER(_P), _P, POINTER(MezoTensor), c_size_t,
                                  POINTER(MezoConfig)]),
    "lmf_mezo_plan_destroy": (None, [_P]),
    "lmf_mezo_plan_numel": (_S, [_P, POINTER(c_int64)]),
    "lmf_mezo_plan_perturbation": (_S, [_P, POINTER(c_uint64), POINTER(c_float)]),
    "lmf_mezo_perturb": (_S, [_P, c_uint64, c_float, _P]),
    "lmf_mezo_restore": (_S, [_P, _P]),
    "lmf_mezo_step_args_init": (_S, [_P, c_size_t]),
    "lmf_mezo_step": (_S, [_P, POINTER(MezoStepArgs), _P]),
    "lmf_mezo_multi_args_init": (_S, [_P, c_size_t]),
    "lmf_mezo_update_multi": (_S, [_P, POINTER(MezoMultiArgs), _P]),
    "lmf_mezo_fill_z": (_S, [_P, c_int32, c_uint64, c_uint32, c_int64, c_int64, _P, _P]),
    "lmf_mezo_driver_args_init": (_S, [_P, c_size_t]),
    "lmf_mezo_train_step": (_S, [_P, POINTER(MezoDriverArgs), LOSS_FN, _P, POINTER(MezoStepResult),
                                 _P]),
    "lmf_philox4x32_10": (None, [POINTER(c_uint32), POINTER(c_uint32), POINTER(c_uint32)]),
}

# Families that a library may lack (built before they existed): bound when present.
_OPTIONAL_PROTOS = {
    "lmf_logits_params_init": (_S, [_P, c_size_t]),
    "lmf_logits_outputs_init": (_S, [_P, c_size_t]),
    "lmf_logits_workspace_size": (_S, [_P, POINTER(LogitsModel), c_size_t, POINTER(LogitsParams),
                                       POINTER(c_size_t)]),
    "lmf_logits_combine": (_S, [_P, POINTER(LogitsModel), c_size_t, POINTER(LogitsParams),
                                POINTER(LogitsOutputs), _P, c_size_t, _P]),
    "lmf_logits_verify_draft": (_S, [_P, POINTER(LogitsModel), c_size_t, POINTER(LogitsParams),
                                     c_int32, _P, c_int32, _P, _P, _P, _P, c_size_t, _P]),
    "lmf_vocab_load_json": (_S, [POINTER(_P), c_char_p]),
    "lmf_vocab_parse_json": (_S, [POINTER(_P), c_char_p, c_size_t]),
    "lmf_vocab_arrays_init": (_S, [_P, c_size_t]),
    "lmf_vocab_create": (_S, [POINTER(_P), POINTER(VocabArrays)]),
    "lmf_vocab_destroy": (None, [_P]),
    "lmf_vocab_size": (_S, [_P, POINTER(c_int32)]),
    "lmf_vocab_format": (_S, [_P, POINTER(c_int32)]),
    "lmf_vocab_token_bytes": (_S, [_P, c_int32, POINTER(_P), POINTER(c_int64)]),
    "lmf_vocab_token_flags": (_S, [_P, c_int32, POINTER(c_uint32)]),
    "lmf_vocab_find": (_S, [_P, c_char_p, c_int64, POINTER(c_int32)]),
    "lmf_vocab_num_merges": (_S, [_P, POINTER(c_int32)]),
    "lmf_vocab_merge": (_S, [_P, c_int32, POINTER(c_int32), POINTER(c_int32), POINTER(c_int32)]),
    "lmf_vocab_pretokenizer_pattern": (_S, [_P, POINTER(c_char_p)]),
    "lmf_dyntok_config_init": (_S, [_P, c_size_t]),
    "lmf_dyntok_batch_init": (_S, [_P, c_size_t]),
    "lmf_dyntok_merge": (_S, [_P, _P, POINTER(DyntokBatch), POINTER(DyntokConfig), POINTER(_P)]),
    "lmf_dyntok_result_destroy": (None, [_P]),
    "lmf_dyntok_result_sizes": (_S, [_P, POINTER(c_int64), POINTER(c_int64), POINTER(c_int32),
                                     POINTER(c_int32)]),
    "lmf_dyntok_result_field": (_S, [_P, c_int32, POINTER(_P), POINTER(c_int64), POINTER(c_int32)]),
}

_lib = None


def bind(lib):
    """Sets argtypes and restype of every public function on ``lib`` (a ctypes.CDLL)."""
    global _lib
    for name, (restype, argtypes) in _PROTOS.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    for name, (restype, argtypes) in _OPTIONAL_PROTOS.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    _lib = lib


def require(name):
    """The bound function ``name`` of the loaded library; raises NotImplementedError naming the
    library when it does not export it (a build older than the family ``name`` belongs to)."""
    l = lib()
    try:
        return getattr(l, name)
    except AttributeError:
        raise NotImplementedError("lmfuse: %s does not export %s; rebuild liblmfuse from this "
                                  "source tree" % (getattr(l, "_lmfuse_path", "liblmfuse"), name)) \
            from None


def new(cls, **fields):
    """A ``cls`` config struct holding the library's defaults, then ``fields``.

    struct_size is ``ctypes.sizeof(cls)`` and version the constant these bindings know.
    """
    init_name, version = _INIT[cls]
    s = cls()
    status = require(init_name)(ctypes.byref(s), ctypes.sizeof(cls))
    if status != 0:  # a library whose struct differs in size from these bindings'
        from .errors import check
        check(status)
    s.version = version
    for k, v in fields.items():
        setattr(s, k, v)
    return s


def lib():
    """The bound CDLL (loads it if needed)."""
    if _lib is None:
        from . import _lib as loader
        loader.load()
    return _lib
