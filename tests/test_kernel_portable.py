"""The kernel's one source on every ISA it targets: tests/kernel_products.cpp (the packed products of every precision,
the gate, exp) built and run natively for AVX-512 (where the CPU has it), AVX2 + FMA and the generic layer, and
cross-compiled for aarch64 (NEON) and run under qemu-aarch64 — skipped where those tools are absent. The whole kernel
and the benchmark library are cross-compiled too, so the aarch64 build of what kernel.py loads is known to compile."""

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from wavenet_dilated.generation import kernel as K

CHECK = Path(__file__).resolve().parent / "kernel_products.cpp"
STD = ("-O2", "-std=c++17", f"-I{K.CSRC}")
X86 = platform.machine().lower() in ("x86_64", "amd64")
CROSS, QEMU = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")


def _run(cmd: list[str], timeout: float = 240) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd[:3])} …: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def _cpu_flags() -> set[str]:
    return set(K._cpu_flags().split())


def _native_targets() -> list:
    """(build target of kernel.py, the ISA its build reports) that this machine can run."""
    flags = _cpu_flags()
    out = [pytest.param("generic", "neon" if platform.machine() == "aarch64" else "generic", id="generic")]
    if X86 and {"avx2", "fma"} <= flags:
        out.append(pytest.param("avx2", "avx2+fma", id="avx2"))
    if X86 and "avx512f" in flags:
        out.append(pytest.param("native", "avx512", id="avx512"))
    return out


@pytest.mark.parametrize("target,isa", _native_targets())
def test_products_exact_on_each_native_isa(tmp_path, target, isa):
    cxx = K.compiler()
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "products"
    _run([cxx, *STD, *K.ISA_FLAGS[target], str(CHECK), "-o", str(exe)])
    out = _run([str(exe)]).split()
    assert out[:2] == ["ok", isa] and int(out[2]) > 100_000


def test_kernel_reports_the_isa_it_was_built_for():
    for target, isa in [(p.values[0], p.values[1]) for p in _native_targets()]:
        try:
            assert K.load_kernel(target).wn_isa().decode() == isa
        except K.KernelUnavailable as err:
            pytest.skip(f"compiled kernel unavailable: {err}")
    assert K.kernel_isa() in {"avx512", "avx2+fma", "neon", "generic"}


def test_unknown_build_target_is_refused(monkeypatch):
    monkeypatch.setenv("WAVENET_DILATED_ISA", "sse9")
    with pytest.raises(K.KernelUnavailable, match=r"WAVENET_DILATED_ISA must be one of \['avx2', 'generic', 'native'\], "
                                                 r"found 'sse9'"):
        K.build_target()


@pytest.mark.skipif(CROSS is None or QEMU is None, reason="needs aarch64-linux-gnu-g++ and qemu-aarch64 "
                                                          "(apt: g++-aarch64-linux-gnu qemu-user)")
def test_aarch64_neon_products_exact_under_qemu(tmp_path):
    exe = tmp_path / "products-aarch64"
    _run([CROSS, *STD, "-static", str(CHECK), "-o", str(exe)])
    out = _run([QEMU, str(exe)]).split()
    assert out[:2] == ["ok", "neon"] and int(out[2]) > 100_000
    for source in (K.KERNEL_SOURCE, "bench.cpp"):  # what kernel.py builds, with its flags (-O1: only that it compiles)
        _run([CROSS, *K.FLAGS, "-O1", "-march=armv8-a", str(K.CSRC / source), "-o", str(tmp_path / f"{source}.so")])
        assert (tmp_path / f"{source}.so").stat().st_size > 0
