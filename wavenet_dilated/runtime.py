"""Process settings for training and benchmarking on the CPU: OpenMP's wait policy and glibc's malloc thresholds.

This module imports nothing but the standard library, so that it can run before torch is loaded. The settings are
environment variables that the C runtime reads when it starts, not when Python later changes ``os.environ``:

* ``OMP_WAIT_POLICY`` is read by libgomp when it is loaded — by ``import torch``. Set before that, it holds; after,
  it does nothing.
* ``MALLOC_*`` are read by glibc when the process starts, before any Python runs: setting them in ``os.environ``
  never changes the running process (measured with ``mallinfo2``: a 4 MiB block is still ``mmap``-ed). What they
  set can still be changed at run time with ``mallopt``, which :func:`apply_runtime_env` does.

Why: on cores shared with other work, OpenMP threads that spin while they wait for a descheduled partner make
every parallel op several times slower, and glibc's default of handing large blocks back to the system after every
step costs page faults. The measurements are in ``benchmarks/README.md``.

Two ways to apply them, both keeping values the user already set (``setdefault``):

* :func:`apply_runtime_env` — in this process: call it before torch is imported (the training recipe does, at the
  top of ``recipes/train_ljspeech.py``).
* :func:`reexec_with_runtime_env` — replace the process by the same command line started with the settings in its
  environment, exactly as if they had been exported in the shell; for programs that have already imported torch
  (``wavenet-dilated bench``). It costs one more interpreter start and ``import torch`` (a few seconds).

The package's ``__init__`` imports nothing, so ``import wavenet_dilated.runtime`` loads no torch::

    import wavenet_dilated.runtime

    wavenet_dilated.runtime.apply_runtime_env()   # before `import torch`
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["RUNTIME_ENV", "REEXEC_MARKER", "apply_runtime_env", "configure_malloc", "reexec_with_runtime_env"]

#: the settings, as environment variables (values are strings)
RUNTIME_ENV: dict[str, str] = {
    "OMP_WAIT_POLICY": "PASSIVE",  # idle OpenMP workers sleep instead of spinning
    "MALLOC_MMAP_THRESHOLD_": "33554432",  # activations up to 32 MiB come from the heap and are reused ...
    "MALLOC_TRIM_THRESHOLD_": "17179869184",  # ... and the heap is not trimmed after every step
    "MALLOC_TOP_PAD_": "1073741824",
}

#: set in the environment of a process started by :func:`reexec_with_runtime_env`, so that it never re-executes again
REEXEC_MARKER = "WAVENET_DILATED_RUNTIME_REEXEC"

# mallopt(3) parameter numbers (glibc's malloc.h) of the MALLOC_* variables above
_MALLOPT_PARAMS = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2, "MALLOC_MMAP_THRESHOLD_": -3}
_INT_MAX = 2**31 - 1  # mallopt takes a C int


def apply_runtime_env() -> dict[str, str]:
    """Set each of :data:`RUNTIME_ENV` that is not in ``os.environ`` yet, then apply the malloc ones with ``mallopt``.

    Call it before torch is imported: ``OMP_WAIT_POLICY`` holds only for an OpenMP runtime loaded afterwards. The
    ``MALLOC_*`` values in the environment afterwards (the user's where they were set) are the ones in effect.

    Returns the settings this call added (``{}`` when every one was already set).
    """
    added = {key: value for key, value in RUNTIME_ENV.items() if key not in os.environ}
    os.environ.update(added)
    configure_malloc()
    return added


def configure_malloc() -> bool:
    """Apply the ``MALLOC_*`` values of :data:`RUNTIME_ENV` found in ``os.environ`` to this process with ``mallopt``.

    Values above ``INT_MAX`` (``mallopt`` takes an int) are clamped to it: a trim threshold of 2 GiB instead of 16 GiB
    still means "never trim" for this package's working sets. A value that is not an integer is skipped (glibc
    ignored it at start-up too).

    Returns whether every value present was applied: ``False`` off glibc.
    """
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    ok = True
    for key, param in _MALLOPT_PARAMS.items():
        text = os.environ.get(key)
        if text is None:
            continue
        try:
            value = int(text)
        except ValueError:
            ok = False
            continue
        ok = mallopt(param, min(max(value, 0), _INT_MAX)) == 1 and ok
    return ok


def _glibc_mallopt():  # -> glibc's mallopt, or None elsewhere (musl's mallopt does nothing; macOS has none)
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):
        return None
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def reexec_with_runtime_env() -> None:
    """Restart this process's command line with :data:`RUNTIME_ENV` added to its environment; return if not needed.

    Nothing happens when every setting is already in the environment or when this process was itself started by this
    function (:data:`REEXEC_MARKER`). Otherwise ``os.execv`` replaces the process (same PID, same arguments, same
    interpreter options, from ``sys.orig_argv``) and this function does not return. Call it early: whatever the
    process did before is done again.
    """
    missing = {key: value for key, value in RUNTIME_ENV.items() if key not in os.environ}
    if not missing or os.environ.get(REEXEC_MARKER):
        return
    os.environ.update(missing)
    os.environ[REEXEC_MARKER] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
