"""LmfuseError: what a failed liblmfuse call raises.

Every C call that returns a non-zero ``lmf_status_t`` raises ``LmfuseError`` with

- ``status``: the int status code (e.g. 6),
- ``status_name``: its name (e.g. ``"LMF_ERR_OVERLAP"``),
- ``message``: the library's ``lmf_last_error()`` text, naming the function and argument at fault.

A failed call changed nothing (the library's contract). Mistakes the bindings can see before calling
C (a non-contiguous or integer tensor, a tensor on the wrong device) raise ``TypeError`` or
``ValueError`` instead.
"""

from . import _ffi


class LmfuseError(Exception):
    """A liblmfuse call failed; see ``status``, ``status_name`` and ``message``."""

    def __init__(self, status, message):
        self.status = int(status)
        self.status_name = _ffi.STATUS_NAMES.get(self.status, "LMF_ERR_UNKNOWN_%d" % self.status)
        self.message = message
        super().__init__("%s (%d): %s" % (self.status_name, self.status, message))

    def __reduce__(self):  # picklable (e.g. across multiprocessing)
        return (type(self), (self.status, self.message))


def check(status):
    """Raises LmfuseError for a non-zero status (reading this thread's lmf_last_error())."""
    if status == 0:
        return
    lib = _ffi.lib()
    raw = lib.lmf_last_error()
    message = raw.decode("utf-8", "replace") if raw else ""
    if not message:
        raw = lib.lmf_status_string(status)
        message = raw.decode("utf-8", "replace") if raw else ""
    raise LmfuseError(status, message)
