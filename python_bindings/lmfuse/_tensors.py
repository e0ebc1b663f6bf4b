"""What the bindings need to know about a torch tensor or numpy array: pointer, dtype, size, device.

``describe(x, what)`` checks that ``x`` can be handed to C (contiguous, a supported dtype, writable)
and returns a ``TensorInfo``; it raises TypeError / ValueError with a message naming ``what``.
torch is optional: numpy arrays work without it (f32 and f16; bf16 via an ml_dtypes array).
"""

import collections

from . import _ffi

try:
    import torch
except ImportError:  # numpy-only use
    torch = None

try:
    import numpy as np
except ImportError:
    np = None

# device: ("cpu", 0) or ("cuda", index)
TensorInfo = collections.namedtuple("TensorInfo", "ptr dtype numel device obj")

_FLOAT_DTYPES = (_ffi.LMF_DTYPE_F32, _ffi.LMF_DTYPE_F16, _ffi.LMF_DTYPE_BF16)


def _torch_dtype(t):
    m = {torch.float32: _ffi.LMF_DTYPE_F32, torch.float16: _ffi.LMF_DTYPE_F16,
         torch.bfloat16: _ffi.LMF_DTYPE_BF16, torch.int32: _ffi.LMF_DTYPE_I32,
         torch.int64: _ffi.LMF_DTYPE_I64}
    return m.get(t.dtype)


def _numpy_dtype(a):
    name = a.dtype.name
    return {"float32": _ffi.LMF_DTYPE_F32, "float16": _ffi.LMF_DTYPE_F16,
            "bfloat16": _ffi.LMF_DTYPE_BF16, "int32": _ffi.LMF_DTYPE_I32,
            "int64": _ffi.LMF_DTYPE_I64}.get(name)


def is_torch(x):
    return torch is not None and isinstance(x, torch.Tensor)


def describe(x, what, dtypes=_FLOAT_DTYPES):
    """TensorInfo of a contiguous torch tensor or numpy array whose dtype is one of ``dtypes``."""
    allowed = "/".join(_ffi_dtype_name(d) for d in dtypes)
    if is_torch(x):
        dtype = _torch_dtype(x)
        if dtype not in dtypes:
            raise TypeError("%s has dtype %s; lmfuse takes %s here" % (what, x.dtype, allowed))
        if not x.is_contiguous():
            raise ValueError("%s is not contiguous (shape %s, stride %s); pass .contiguous() (a copy "
                             "that lmfuse would update instead of your tensor) or a contiguous "
                             "tensor" % (what, tuple(x.shape), tuple(x.stride())))
        if x.is_cuda:
            device = ("cuda", x.device.index if x.device.index is not None else 0)
        elif x.device.type == "cpu":
            device = ("cpu", 0)
        else:
            raise ValueError("%s is on device %s; lmfuse takes CPU or CUDA tensors" % (what, x.device))
        return TensorInfo(x.data_ptr(), dtype, x.numel(), device, x)
    if np is not None and isinstance(x, np.ndarray):
        dtype = _numpy_dtype(x)
        if dtype not in dtypes:
            raise TypeError("%s has dtype %s; lmfuse takes %s here" % (what, x.dtype, allowed))
        if not x.flags["C_CONTIGUOUS"]:
            raise ValueError("%s is not C-contiguous (strides %s); pass np.ascontiguousarray(...)"
                             % (what, x.strides))
        if not x.flags["WRITEABLE"]:
            raise ValueError("%s is read-only" % what)
        return TensorInfo(x.ctypes.data, dtype, x.size, ("cpu", 0), x)
    raise TypeError("%s must be a torch.Tensor or numpy.ndarray, not %s" % (what, type(x).__name__))


def _ffi_dtype_name(d):
    return {_ffi.LMF_DTYPE_F32: "float32", _ffi.LMF_DTYPE_F16: "float16",
            _ffi.LMF_DTYPE_BF16: "bfloat16", _ffi.LMF_DTYPE_I32: "int32",
            _ffi.LMF_DTYPE_I64: "int64"}[d]


def device_str(device):
    kind, index = device
    return "cpu" if kind == "cpu" else "cuda:%d" % index


def check_device(info, context, what):
    """Raises ValueError unless the tensor lives where the context's backend reads memory."""
    want = ("cpu", 0) if context.backend == "cpu" else ("cuda", context.device)
    if info.device != want:
        raise ValueError("%s is on %s but the lmfuse context runs on %s; tensors must live in the "
                         "backend's memory" % (what, device_str(info.device), device_str(want)))


def stream_handle(context, stream):
    """The cudaStream_t to pass for ``stream`` (None: torch's current stream on a CUDA context).

    CPU contexts ignore streams: returns None (NULL).
    """
    if context.backend == "cpu":
        return None
    if stream is None:
        if torch is None:
            return None
        return torch.cuda.current_stream(context.device).cuda_stream or None
    if hasattr(stream, "cuda_stream"):
        return stream.cuda_stream or None
    return int(stream) or None
