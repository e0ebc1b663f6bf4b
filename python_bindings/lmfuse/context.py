"""Context: which backend runs lmfuse's work (``lmf_context_t``).

    with lmfuse.Context("cpu", cpu_threads=4) as ctx:
        plan = lmfuse.Plan(ctx, tensors)

``backend``: "auto" (CUDA when the library has it and a device is present, else CPU), "cpu" or
"cuda". Asking for "cuda" where it is not built or no device is present raises LmfuseError
(LMF_ERR_NOT_COMPILED / LMF_ERR_NO_DEVICE). ``ctx.backend`` is the backend actually used ("cpu" or
"cuda"). A CPU context takes host memory (CPU tensors, numpy arrays) and finishes every call before
returning; a CUDA context takes device memory on ``device`` and enqueues on the stream given
(torch's current stream by default).

``close()`` (or leaving the ``with`` block) first closes the plans made from the context, then frees
it; objects are also freed when garbage-collected.
"""

import ctypes
import weakref

from . import _ffi
from .errors import check
from ._handle import Closeable


class Context(Closeable):
    """An lmfuse context; see the module docstring."""

    def __init__(self, backend="auto", device=0, cpu_threads=0):
        if backend not in _ffi.BACKENDS:
            raise ValueError("backend must be 'auto', 'cpu' or 'cuda', not %r" % (backend,))
        lib = _ffi.lib()
        self._handle = None
        self._children = weakref.WeakSet()
        cfg = _ffi.new(_ffi.ContextConfig, backend=_ffi.BACKENDS[backend], device=int(device),
                       cpu_threads=int(cpu_threads))
        h = ctypes.c_void_p()
        check(lib.lmf_context_create(ctypes.byref(h), ctypes.byref(cfg)))
        self._handle = h
        b = ctypes.c_int32()
        check(lib.lmf_context_backend(h, ctypes.byref(b)))
        self.backend = _ffi.BACKEND_NAMES[b.value]
        self.device = int(device)
        self.cpu_threads = int(cpu_threads)

    @property
    def handle(self):
        """The ``lmf_context_t *`` as a ctypes.c_void_p; raises ValueError once closed."""
        if self._handle is None:
            raise ValueError("this lmfuse.Context is closed")
        return self._handle

    @property
    def closed(self):
        return self._handle is None

    def _adopt(self, child):
        self._children.add(child)

    def synchronize(self, stream=None):
        """Waits for the work this context enqueued on ``stream`` (a no-op on the CPU)."""
        from ._tensors import stream_handle
        check(_ffi.lib().lmf_stream_synchronize(self.handle, stream_handle(self, stream)))

    def close(self):
        """Closes the plans made from this context, then frees it. Idempotent."""
        if self._handle is None:
            return
        for child in list(self._children):
            child.close()
        _ffi.lib().lmf_context_destroy(self._handle)
        self._handle = None

    def __repr__(self):
        state = "closed" if self.closed else self.backend
        if not self.closed and self.backend == "cuda":
            state += ":%d" % self.device
        return "lmfuse.Context(%s)" % state
