"""The ctypes mirror against the C headers (sizes and offsets of every public struct, enum values),
the loader's search order, version and backend queries."""

import ctypes
import os
import shutil
import subprocess
import sys

import pytest

import lmfuse
from lmfuse import _ffi, pipeline

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
INCLUDE = os.path.join(REPO, "include")

STRUCTS = {
    "lmf_context_config_t": _ffi.ContextConfig,
    "lmf_mezo_tensor_t": _ffi.MezoTensor,
    "lmf_mezo_config_t": _ffi.MezoConfig,
    "lmf_mezo_step_args_t": _ffi.MezoStepArgs,
    "lmf_mezo_multi_args_t": _ffi.MezoMultiArgs,
    "lmf_mezo_driver_args_t": _ffi.MezoDriverArgs,
    "lmf_mezo_step_result_t": _ffi.MezoStepResult,
    "lmf_vocab_arrays_t": _ffi.VocabArrays,
    "lmf_dyntok_config_t": _ffi.DyntokConfig,
    "lmf_dyntok_batch_t": _ffi.DyntokBatch,
    "lmf_dyntok_embed_args_t": pipeline.DyntokEmbedArgs,
    "lmf_embed_cache_config_t": pipeline.EmbedCacheConfig,
}
CONSTANTS = ["LMF_CONTEXT_CONFIG_VERSION", "LMF_MEZO_CONFIG_VERSION", "LMF_MEZO_STEP_ARGS_VERSION",
             "LMF_MEZO_MULTI_ARGS_VERSION", "LMF_MEZO_DRIVER_ARGS_VERSION", "LMF_MEZO_MAX_SEEDS",
             "LMF_BACKEND_AUTO", "LMF_BACKEND_CPU", "LMF_BACKEND_CUDA", "LMF_DTYPE_F32",
             "LMF_DTYPE_F16", "LMF_DTYPE_BF16", "LMF_DTYPE_I32", "LMF_DTYPE_I64",
             "LMF_MEZO_GAUSSIAN", "LMF_MEZO_RADEMACHER", "LMF_ROUND_NEAREST",
             "LMF_ROUND_STOCHASTIC", "LMF_DTYPE_U8", "LMF_VOCAB_FORMAT_RAW",
             "LMF_VOCAB_FORMAT_BYTE_LEVEL", "LMF_VOCAB_FORMAT_METASPACE", "LMF_TOKEN_SPECIAL",
             "LMF_TOKEN_BYTE_FALLBACK", "LMF_TOKEN_UNUSED", "LMF_VOCAB_ARRAYS_VERSION",
             "LMF_DYNTOK_PRETOKENS", "LMF_DYNTOK_WORDS", "LMF_DYNTOK_WHITESPACE",
             "LMF_DYNTOK_CONFIG_VERSION", "LMF_DYNTOK_BATCH_VERSION", "LMF_DYNTOK_FIELD_OFFSETS",
             "LMF_DYNTOK_FIELD_IDS", "LMF_DYNTOK_FIELD_SPAN_START", "LMF_DYNTOK_FIELD_SPAN_LEN",
             "LMF_DYNTOK_FIELD_MERGE_PAIRS", "LMF_DYNTOK_FIELD_MERGE_RESULTS",
             "LMF_DYNTOK_FIELD_MERGE_COUNTS", "LMF_DYNTOK_FIELD_NEW_OFFSETS",
             "LMF_DYNTOK_FIELD_NEW_BYTES", "LMF_DYNTOK_FIELD_DECOMP_OFFSETS",
             "LMF_DYNTOK_FIELD_DECOMP"] + sorted(_ffi.STATUS_NAMES.values())


def _layout_program():
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include \"lmfuse/mezo.h\"",
             "#include \"lmfuse/dyntok.h\"", "int main(void) {"]
    for cname, cls in STRUCTS.items():
        lines.append('printf("%s sizeof %%zu\\n", sizeof(%s));' % (cname, cname))
        for field, _ in cls._fields_:
            lines.append('printf("%s %s %%zu\\n", offsetof(%s, %s));' % (cname, field, cname, field))
    for c in CONSTANTS:
        lines.append('printf("%s %%lld\\n", (long long)%s);' % (c, c))
    lines += ["return 0;", "}"]
    return "\n".join(lines)


def test_layout_matches_headers(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or not os.path.exists(os.path.join(INCLUDE, "lmfuse", "mezo.h")):
        pytest.skip("needs a C compiler and the headers")
    src, exe = tmp_path / "layout.c", tmp_path / "layout"
    src.write_text(_layout_program())
    subprocess.run([cc, "-std=c99", "-I", INCLUDE, str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            cname, field, value = parts[0], parts[1], int(parts[2])
            cls = STRUCTS[cname]
            got = ctypes.sizeof(cls) if field == "sizeof" else getattr(cls, field).offset
            assert got == value, "%s.%s: ctypes %d, C %d" % (cname, field, got, value)
        else:
            name, value = parts[0], int(parts[1])
            assert getattr(_ffi, name) == value, name


def test_struct_defaults_and_sizes():
    for cls in (_ffi.ContextConfig, _ffi.MezoConfig, _ffi.MezoStepArgs, _ffi.MezoMultiArgs,
                _ffi.MezoDriverArgs, _ffi.VocabArrays, _ffi.DyntokConfig, _ffi.DyntokBatch):
        s = _ffi.new(cls)
        assert s.struct_size == ctypes.sizeof(cls) and s.version == 1
    assert _ffi.new(_ffi.MezoDriverArgs).eps == pytest.approx(1e-3)
    assert _ffi.new(_ffi.ContextConfig).backend == _ffi.LMF_BACKEND_AUTO


def test_version_and_backends():
    assert lmfuse.version()[0] == 0 and lmfuse.version() >= (0, 1, 0)
    assert lmfuse.version_string() == "%d.%d.%d" % lmfuse.version()
    assert lmfuse.backend_available("cpu") and lmfuse.backend_available("auto")
    assert lmfuse.backend_available("cuda") == (lmfuse.cuda_device_count() > 0)
    with pytest.raises(ValueError):
        lmfuse.backend_available("metal")
    with lmfuse.Context("auto") as c:
        assert c.backend == ("cuda" if lmfuse.backend_available("cuda") else "cpu")
    lib = _ffi.lib()
    assert lib.lmf_status_string(6).startswith(b"LMF_ERR_OVERLAP")
    assert lib.lmf_status_string(999)  # never NULL
    assert lib.lmf_dtype_size(_ffi.LMF_DTYPE_BF16) == 2 and lib.lmf_dtype_name(2) == b"bf16"


def _import_in_subprocess(env_value):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(REPO, "python_bindings")
    env["LMFUSE_LIBRARY"] = env_value
    code = "import lmfuse; print(lmfuse.library_path())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_loader_honours_env_var():
    path = lmfuse.library_path()
    r = _import_in_subprocess(path)
    assert r.returncode == 0 and r.stdout.strip() == path
    r = _import_in_subprocess("/nonexistent/liblmfuse.so")
    assert r.returncode != 0 and "/nonexistent/liblmfuse.so" in r.stderr


def test_loader_search_order(tmp_path, monkeypatch):
    from lmfuse import _lib
    pkg, repo = tmp_path / "repo" / "python_bindings" / "lmfuse", tmp_path / "repo"
    pkg.mkdir(parents=True)
    monkeypatch.setattr(_lib, "_package_dir", lambda: pkg)
    monkeypatch.delenv("LMFUSE_LIBRARY", raising=False)
    monkeypatch.setattr(_lib.ctypes.util, "find_library", lambda name: None)
    path, why = _lib.find_library()
    assert path is None and "LMFUSE_LIBRARY" in why
    old, new = repo / "build" / "host", repo / "build-cuda" / "host"
    for d in (old, new):
        d.mkdir(parents=True)
    (old / "liblmfuse.so").write_bytes(b"")
    os.utime(old / "liblmfuse.so", (1, 1))
    (new / "liblmfuse.so").write_bytes(b"")
    assert _lib.find_library() == (str(new / "liblmfuse.so"), "repo build")  # newest build first
    (pkg / "liblmfuse.so").write_bytes(b"")
    assert _lib.find_library() == (str(pkg / "liblmfuse.so"), "package")
    monkeypatch.setenv("LMFUSE_LIBRARY", "/x/liblmfuse.so")
    assert _lib.find_library() == ("/x/liblmfuse.so", "env")
