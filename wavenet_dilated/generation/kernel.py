"""Build and load the compiled libraries whose C++ sources live in ``csrc/``: the fast-generation kernel and the
benchmark's machine-limits library.

A source is compiled in place (so a compiler error names the real file and line) on first use with the system C++
compiler (``$CXX``, else ``c++``/``g++``/``clang++``) into a small shared library with a C ABI, loaded with
:mod:`ctypes` — no Python headers, no torch headers, no pybind11, no ninja, so a build takes seconds, not minutes. The
library is cached under :func:`cache_dir`, keyed by a hash of the source and every header in ``csrc/``, the compiler,
its flags and the CPU's feature flags (it is built with ``-march=native``), and installed atomically so concurrent
first uses cannot load a half-written file.

One source serves every CPU: ``csrc/simd.h`` writes the kernel's vectors with compiler vector extensions and picks
their width from what ``-march=native`` enables — AVX-512 (16 floats), else AVX2 + FMA (8), NEON on aarch64 (4), else
the compiler's generic lowering (4). :func:`kernel_isa` names what the build got. ``$WAVENET_DILATED_ISA`` overrides the
target (read when a library is first loaded): ``native`` (the default), ``avx2`` (``-mavx2 -mfma``: what an AVX2-only
x86 CPU runs, testable on an AVX-512 one) or ``generic`` (no ``-march``: the portable fallback).

The kernel's structs are mirrored by the ctypes structs of :mod:`.abi`; every load compares the two layouts (the
kernel's ``wn_layout``) and refuses a library that disagrees.

What the kernel computes is documented in :mod:`wavenet_dilated.generation.fast`; the data layout is:

* every weight matrix is *packed* in row blocks of ``8·ry`` rows: block ``i`` holds rows ``[8·ry·i, 8·ry·(i+1))`` as
  ``(in, 8·ry)`` contiguous (input-major), so a block's product is a stream of FMAs over contiguous memory
  (``ry`` is chosen from the batch size: 8 for batch 1, fewer for more columns); the elements are fp32, or the bf16
  or int8 codes of :mod:`.precision` with one fp32 scale per row in a second array (``WNModel.scales``);
* activations are ``(batch, channels)`` row-major; ring buffers are ``(slots, batch, R)``;
* the per-step additive term (conditioning projections + speaker projection + conv bias) is ``(steps, batch, L, G)``,
  or one ``(batch, L, G)`` for every step (stride 0), or the input rows of the conditioning upsampler's last stage,
  which the kernel finishes per step (``WNTerm`` in ``csrc/wavenet_kernel.h``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import abi

__all__ = ["CSRC", "KERNEL_SOURCE", "FLAGS", "ISA_FLAGS", "KernelUnavailable", "load_kernel", "load_library",
           "cache_dir", "compiler", "build_target", "kernel_isa", "kernel_int8_dot"]

#: the C++ sources (package data)
CSRC = Path(__file__).resolve().parent / "csrc"

#: the fast-generation kernel's source in :data:`CSRC`
KERNEL_SOURCE = "wavenet_kernel.cpp"

#: compiler flags besides the target's (:data:`ISA_FLAGS`)
FLAGS = ("-O3", "-std=c++17", "-fPIC", "-shared", "-pthread", "-fno-math-errno", "-fno-plt")

#: the target flags of each ``$WAVENET_DILATED_ISA`` value; "native" is why the CPU's feature flags are part of the
#: cache key (``-mcpu=native`` on 64-bit ARM, which GCC and Clang both take there)
ISA_FLAGS = {
    "native": ("-mcpu=native",) if platform.machine().lower() in ("aarch64", "arm64") else ("-march=native",),
    "avx2": ("-mavx2", "-mfma"),
    "generic": (),
}


class KernelUnavailable(RuntimeError):
    """The compiled kernel cannot be built or loaded here (no compiler, a build failure …)."""


def build_target() -> str:
    """The target the libraries are built for: ``$WAVENET_DILATED_ISA`` (a key of :data:`ISA_FLAGS`), else
    ``"native"``. Raises :class:`KernelUnavailable` for another value or ``avx2`` on a CPU that is not x86-64."""
    isa = os.environ.get("WAVENET_DILATED_ISA", "").strip().lower() or "native"
    if isa not in ISA_FLAGS:
        raise KernelUnavailable(f"WAVENET_DILATED_ISA must be one of {sorted(ISA_FLAGS)}, found {isa!r}")
    if isa == "avx2" and platform.machine().lower() not in ("x86_64", "amd64"):
        raise KernelUnavailable(f"WAVENET_DILATED_ISA=avx2 needs an x86-64 CPU; this machine is {platform.machine()}")
    return isa


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX`` when set, else the first of ``c++``, ``g++``, ``clang++`` on PATH."""
    env = os.environ.get("CXX")
    if env:
        return shutil.which(env) or env
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


def cache_dir() -> Path:
    """Where built libraries are kept: ``$WAVENET_DILATED_CACHE``, else ``$XDG_CACHE_HOME/wavenet_dilated``, else
    ``~/.cache/wavenet_dilated``."""
    env = os.environ.get("WAVENET_DILATED_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wavenet_dilated"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):  # x86, ARM
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _source_digest(source: str) -> str:
    """sha256 over ``source`` and every header of :data:`CSRC` (names and contents): what a build reads."""
    digest = hashlib.sha256()
    for path in [CSRC / source, *sorted(CSRC.glob("*.h"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _build_failure(what: str, cxx: str, output: str) -> str:
    """One line: what failed, the compiler's first error (``file:line: error: …``) and the last lines of its output."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    tail = lines[-5:]
    first_error = next((line for line in lines if ": error" in line or ": fatal error" in line), None)
    shown = ([first_error] if first_error is not None and first_error not in tail else []) + tail
    return f"building {what} with {cxx} failed: " + " | ".join(shown)


def _build(cxx: str, flags: tuple[str, ...], source: Path, target: Path, what: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        out = Path(tmp) / target.name
        proc = subprocess.run([cxx, *flags, str(source), "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise KernelUnavailable(_build_failure(what, cxx, proc.stderr or proc.stdout))
        os.replace(out, target)  # atomic: a concurrent process sees either no file or the whole library


@functools.cache
def load_library(source: str, what: str, isa: str | None = None) -> ctypes.CDLL:
    """Build (once per machine, target and source contents, cached on disk) and load the library of ``csrc/<source>``
    for the target ``isa`` (a key of :data:`ISA_FLAGS`; ``None``: :func:`build_target`, read once per process).

    ``what`` names it in error messages. Raises :class:`KernelUnavailable` when it cannot be had: no compiler, a failed
    build, an unknown target.
    """
    isa = build_target() if isa is None else isa
    if isa not in ISA_FLAGS:
        raise KernelUnavailable(f"the build target must be one of {sorted(ISA_FLAGS)}, found {isa!r}")
    flags = (*FLAGS, *ISA_FLAGS[isa])
    cpu_flags = _cpu_flags().split()
    if isa == "avx2" and not {"avx2", "fma"} <= set(cpu_flags):
        raise KernelUnavailable("WAVENET_DILATED_ISA=avx2 needs a CPU with AVX2 and FMA")
    cxx = compiler()
    if cxx is None:
        raise KernelUnavailable("no C++ compiler found (set $CXX, or install g++)")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise KernelUnavailable(f"the C++ compiler {cxx} does not run: {err}") from None
    try:
        digest = _source_digest(source)
    except OSError as err:
        raise KernelUnavailable(f"cannot read the sources of {what} in {CSRC}: {err}") from None
    key = hashlib.sha256("\0".join([digest, " ".join(flags), version, platform.machine(),
                                    " ".join(sorted(cpu_flags))]).encode()).hexdigest()
    target = cache_dir() / f"{Path(source).stem}-{key[:20]}.so"
    if not target.exists():
        try:
            _build(cxx, flags, CSRC / source, target, what)
        except OSError as err:
            raise KernelUnavailable(f"cannot build {what} in {target.parent}: {err}") from None
    try:
        return ctypes.CDLL(str(target))
    except OSError as err:
        raise KernelUnavailable(f"cannot load {what} {target}: {err}") from None


def kernel_layout(lib: ctypes.CDLL) -> list[abi.StructLayout]:
    """The kernel's own description of its structs (``wn_layout``, ``wn_layout_names``), as :func:`.abi.c_layout`."""
    lib.wn_layout.restype = ctypes.c_int64
    lib.wn_layout.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.wn_layout_names.restype = ctypes.c_char_p
    lib.wn_layout_names.argtypes = []
    n = lib.wn_layout(None, 0)
    values = (ctypes.c_int64 * n)()
    lib.wn_layout(values, n)
    return abi.c_layout(list(values), lib.wn_layout_names().decode())


@functools.cache
def load_kernel(isa: str | None = None) -> ctypes.CDLL:
    """Build (once per machine, target and source version, cached on disk) and load the fast-generation kernel for the
    target ``isa`` (as :func:`load_library`), after checking that its structs match :mod:`.abi`.

    Raises :class:`KernelUnavailable` when it cannot be had: no compiler, a failed build, a struct layout that differs
    from the ctypes mirror, an unknown target.
    """
    lib = load_library(KERNEL_SOURCE, "the fast-generation kernel", isa)
    try:
        mismatch = abi.layout_mismatch(kernel_layout(lib))
    except (AttributeError, ValueError) as err:  # a library without wn_layout, or a malformed description
        raise KernelUnavailable(f"the fast-generation kernel does not describe its structs: {err}") from None
    if mismatch is not None:
        raise KernelUnavailable(f"the fast-generation kernel's structs differ from generation/abi.py: {mismatch}")
    lib.wn_isa.restype = ctypes.c_char_p
    lib.wn_isa.argtypes = []
    lib.wn_int8_dot.restype = ctypes.c_char_p
    lib.wn_int8_dot.argtypes = []
    lib.wn_run.restype = ctypes.c_int
    lib.wn_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_int32, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.wn_quantize.restype = None
    lib.wn_quantize.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p,
                                ctypes.c_void_p, ctypes.c_void_p]
    lib.wn_qproduct.restype = None
    lib.wn_qproduct.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p,
                                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32,
                                ctypes.c_void_p, ctypes.c_void_p]
    lib.wn_project.restype = None
    lib.wn_project.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64,
                               ctypes.c_void_p]
    lib.wn_polyphase.restype = None
    lib.wn_polyphase.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                 ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                 ctypes.c_void_p]
    return lib


def kernel_isa() -> str:
    """The vector ISA the fast-generation kernel was built for — ``"avx512"``, ``"avx2+fma"``, ``"neon"`` or
    ``"generic"`` — or ``"none: <why>"`` when it cannot be built or loaded here (builds it on first call)."""
    try:
        return load_kernel().wn_isa().decode()
    except KernelUnavailable as err:
        return f"none: {err}"


def kernel_int8_dot() -> str:
    """How the kernel's ``"w8a8"`` products multiply int8 by int8: ``"avx512-vnni"`` or ``"avx-vnni"`` (one
    ``vpdpbusd`` per 4 products and lane), else ``"int32 lanes"`` (the same exact sums from widened lanes: correct,
    not faster than ``"int8"``); ``"none: <why>"`` without a kernel."""
    try:
        return load_kernel().wn_int8_dot().decode()
    except KernelUnavailable as err:
        return f"none: {err}"
