"""lmfuse: Python (ctypes) bindings of liblmfuse, a C/CUDA kernel library for adapting LLMs.

    import lmfuse
    opt = lmfuse.MeZO(model.parameters(), lr=1e-6, eps=1e-3)   # zeroth-order fine-tuning
    loss = opt.step(lambda: loss_fn(model(x), y))              # forward passes only
    opt.restore()                                              # before evaluating / saving

What is here:
    MeZO                     the optimizer (torch tensors, CPU or CUDA); lmfuse.optim
    Plan, fill_z             the low-level MeZO passes (torch tensors or numpy arrays); lmfuse.mezo
    combine_logits           fused multi-model logit combination + sampling (EFT, proxy-tuning,
                             DExperts, contrastive, CFG, GeDi); with LogitsInput, SparseLogitsInput,
                             GeDi, GeDiState, verify_draft and the method helpers eft, proxy_tune,
                             dexperts, contrastive, cfg, emulated_disalignment, gedi; lmfuse.logits
    Vocab, merge_batch       batch-level BPE merging of a tokenized batch ("dynamic tokenization")
                             over a real tokenizer.json vocabulary; MergeResult; lmfuse.dyntok
    embed_batch              merging + embeddings in one call: inputs_embeds, attention mask, merged
                             ids, spans (EmbedCache keeps predicted rows); lmfuse.pipeline
    Hypernet, fvt            embeddings for new tokens: the ZeTT hypernetwork (config.json +
                             model.safetensors) and the FVT mean baseline; lmfuse.hypernet
    Context                  which backend runs the work ("auto", "cpu", "cuda")
    LmfuseError              raised by every failed library call (.status, .status_name, .message)
    version(), version_string(), backend_available(name), cuda_device_count(), library_path()

The shared library is found through $LMFUSE_LIBRARY, this package's directory, the repository's
build*/host/, then the system (see lmfuse._lib); it is loaded on first use, not at import.
"""

from . import _ffi
from ._lib import find_library
from .context import Context
from .errors import LmfuseError
from .mezo import Plan, StepResult, fill_z
from .dyntok import MergeResult, Vocab, merge_batch
from . import hypernet
from .hypernet import Hypernet, HypernetOutput, InputCache, fvt
from .pipeline import EmbedCache, EmbeddedBatch, embed_batch

from .logits import (ROW_ALL_MASKED, ROW_BAD_INDEX, ROW_NONFINITE, ROW_OK, DraftResult, GeDi,
                     GeDiState, LogitsInput, LogitsResult, SparseLogitsInput, cfg, combine_logits,
                     contrastive, dexperts, eft, emulated_disalignment, gedi, proxy_tune,
                     verify_draft)

try:
    from .optim import MeZO, step_seed
except ImportError:  # torch is not installed: Plan and fill_z still work on numpy arrays
    MeZO = step_seed = None

__all__ = ["Context", "DraftResult", "EmbedCache", "EmbeddedBatch", "GeDi", "GeDiState", "Hypernet",
           "HypernetOutput", "InputCache", "LmfuseError", "LogitsInput", "LogitsResult", "MeZO",
           "MergeResult", "Plan", "SparseLogitsInput", "StepResult", "Vocab", "backend_available",
           "cfg", "combine_logits", "contrastive", "cuda_device_count", "dexperts", "eft",
           "embed_batch", "emulated_disalignment", "fill_z", "find_library", "fvt", "gedi",
           "library_path", "merge_batch", "proxy_tune", "step_seed", "verify_draft", "version",
           "version_string", "ROW_OK", "ROW_ALL_MASKED", "ROW_NONFINITE", "ROW_BAD_INDEX"]


def version():
    """The loaded library's version as (major, minor, patch)."""
    v = _ffi.lib().lmf_version()
    return (v // 10000, v // 100 % 100, v % 100)


def version_string():
    """The loaded library's "MAJOR.MINOR.PATCH"."""
    return _ffi.lib().lmf_version_string().decode()


def backend_available(name):
    """True if backend ``name`` ("auto", "cpu" or "cuda") is built in and usable here now."""
    if name not in _ffi.BACKENDS:
        raise ValueError("backend must be 'auto', 'cpu' or 'cuda', not %r" % (name,))
    return bool(_ffi.lib().lmf_backend_available(_ffi.BACKENDS[name]))


def cuda_device_count():
    """Usable CUDA devices (0 in a CPU-only build or without a driver)."""
    return int(_ffi.lib().lmf_cuda_device_count())


def library_path():
    """Path of the loaded liblmfuse (loads it if needed)."""
    from . import _lib
    return _lib.path()
