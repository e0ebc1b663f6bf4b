"""Finds and loads liblmfuse (the C library these bindings wrap), once per process.

Search order (the first hit wins):

1. the environment variable ``LMFUSE_LIBRARY``: the full path of ``liblmfuse.so``. When it is set it
   is the only place looked at; a path that does not load is an error, never a silent fallback;
2. this package's directory (a copy shipped next to ``__init__.py``);
3. ``build*/host/`` in the repository that holds this package (``<repo>/python_bindings/lmfuse``),
   the newest build first, so ``cmake -B build && cmake --build build`` just works;
4. the system's library path (``ctypes.util.find_library("lmfuse")``).

``load()`` binds every prototype (see ``_ffi.bind``) and checks the library's major version.
"""

import ctypes
import ctypes.util
import os
import pathlib
import threading

from . import _ffi

ENV_VAR = "LMFUSE_LIBRARY"
_NAMES = ("liblmfuse.so", "liblmfuse.dylib", "lmfuse.dll")

_lock = threading.Lock()
_lib = None


def _package_dir():
    return pathlib.Path(__file__).resolve().parent


def _repo_dir():
    return _package_dir().parents[1]


def _repo_build_candidates():
    found = []
    for name in _NAMES:
        found.extend(p for p in _repo_dir().glob("build*/host/" + name) if p.exists())
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def find_library():
    """Returns (path, where) of the library the search order above picks, or (None, reasons).

    ``where`` says which rule matched ("env", "package", "repo build", "system"). Loads nothing.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return env, "env"
    for name in _NAMES:
        p = _package_dir() / name
        if p.exists():
            return str(p), "package"
    builds = _repo_build_candidates()
    if builds:
        return str(builds[0]), "repo build"
    sys_name = ctypes.util.find_library("lmfuse")
    if sys_name:
        return sys_name, "system"
    return None, ("%s is not set; no liblmfuse in %s, in %s/build*/host/, or on the system library "
                  "path" % (ENV_VAR, _package_dir(), _repo_dir()))


def load():
    """Returns the loaded ``ctypes.CDLL`` with every prototype bound; loads it on the first call.

    Raises OSError when no library is found or it does not load, ImportError when its major version
    is not the one these bindings were written for.
    """
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        path, where = find_library()
        if path is None:
            raise OSError("lmfuse: cannot find liblmfuse: " + where +
                          ". Build it (cmake -S . -B build && cmake --build build) or set " + ENV_VAR)
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise OSError("lmfuse: cannot load %s (found via %s): %s" % (path, where, e)) from e
        _ffi.bind(lib)
        v = lib.lmf_version()
        if v // 10000 != _ffi.VERSION_MAJOR or v < _ffi.VERSION_MIN:
            raise ImportError("lmfuse: %s is version %d.%d.%d; these bindings need %d.x >= %d.%d" % (
                path, v // 10000, v // 100 % 100, v % 100, _ffi.VERSION_MAJOR,
                _ffi.VERSION_MIN // 10000, _ffi.VERSION_MIN // 100 % 100))
        lib._lmfuse_path = path
        _lib = lib
        return lib


def path():
    """The path of the loaded library (loads it if needed)."""
    return load()._lmfuse_path
