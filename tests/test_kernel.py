"""The compiled libraries' build machinery (generation/kernel.py) and the struct-layout check against abi.py."""

import ctypes

import pytest

from wavenet_dilated.generation import abi
from wavenet_dilated.generation import kernel as K


def _kernel_or_skip():
    try:
        return K.load_kernel()
    except K.KernelUnavailable as err:
        pytest.skip(f"compiled kernel unavailable: {err}")


def _copy(name, fields):
    """A modified ctypes struct: ``name`` (the mismatch message names it) with the given fields."""
    return type(name, (ctypes.Structure,), {"_fields_": fields})


def _with(structs, replaced):
    return tuple(replaced if s.__name__ == replaced.__name__ else s for s in structs)


# ------------------------------------------------------------------------------------------------ layout


def test_sources_are_real_files_shipped_beside_the_loader():
    names = {p.name for p in K.CSRC.iterdir()}
    assert {K.KERNEL_SOURCE, "bench.cpp", "wavenet_kernel.h"} <= names
    assert "struct WNModel" in (K.CSRC / "wavenet_kernel.h").read_text()


def test_kernel_layout_matches_the_ctypes_mirror():
    lib = _kernel_or_skip()
    c = K.kernel_layout(lib)

    def plain(layout):  # a trailing "_" is no part of a name: the C field "in" is the ctypes "in_"
        return [(name, size, [(f.rstrip("_"), offset, n) for f, offset, n in fields]) for name, size, fields in layout]

    assert plain(c) == plain(abi.layout())  # names, offsets and sizes
    assert abi.layout_mismatch(c) is None
    name, size, fields = c[0]
    assert (name, size) == ("Matrix", ctypes.sizeof(abi.Matrix))
    assert fields[:2] == [("offset", 0, 8), ("rows", 8, 4)] and fields[2][0] == "in"


def test_a_widened_field_is_refused_by_name():
    fields = [(n, ctypes.c_int64 if n == "n_threads" else t) for n, t in abi.Model._fields_]
    bad = _with(abi.STRUCTS, _copy("Model", fields))
    why = abi.layout_mismatch(abi.layout(), bad)  # abi.layout() is what the kernel reports (previous test)
    assert why == "Model.n_threads: 4 bytes at offset 44 in C, 8 bytes at offset 48 in ctypes"


def test_a_missing_or_swapped_field_is_refused_where_it_is():
    fields = [f for f in abi.Model._fields_ if f[0] != "S"]  # K moves into S's place, same offset and size
    why = abi.layout_mismatch(abi.layout(), _with(abi.STRUCTS, _copy("Model", fields)))
    assert why == "Model.K: the C struct has S in its place (field 3)"
    fields = list(abi.Model._fields_)
    fields[1], fields[2] = fields[2], fields[1]  # R and G swapped: every offset and size still agrees
    why = abi.layout_mismatch(abi.layout(), _with(abi.STRUCTS, _copy("Model", fields)))
    assert why == "Model.G: the C struct has R in its place (field 1)"


def test_an_extra_or_dropped_trailing_field_is_refused():
    extra = _copy("State", [*abi.State._fields_, ("extra", ctypes.c_int32)])
    why = abi.layout_mismatch(abi.layout(), _with(abi.STRUCTS, extra))
    assert why == "State.extra: not in the C struct (it has 14 fields)"
    short = _copy("State", abi.State._fields_[:-1])
    why = abi.layout_mismatch(abi.layout(), _with(abi.STRUCTS, short))
    assert why == "State: the C struct's field code_offset (offset 96) has no ctypes counterpart"


def test_a_changed_size_alone_is_refused():
    c = abi.layout()
    c[0] = (c[0][0], c[0][1] + 8, c[0][2])  # same fields, but the C side reports a larger WNMatrix (more padding)
    assert abi.layout_mismatch(c) == "Matrix: 32 bytes in C, 24 in ctypes"


def test_other_structs_are_refused():
    c = abi.layout()
    assert abi.layout_mismatch(c[:-1]).startswith("the compiled kernel has the structs ['Matrix', 'Model', 'State'], "
                                                  "abi.py")
    assert abi.layout_mismatch([*c, ("Extra", 8, [("x", 0, 8)])]) is not None


def test_c_layout_reads_the_kernels_format():
    numbers = [2, 16, 0, 8, 8, 4, 1, 4, 0, 4]
    assert abi.c_layout(numbers, "WNA x in;WNB y") == [("A", 16, [("x", 0, 8), ("in", 8, 4)]), ("B", 4, [("y", 0, 4)])]
    with pytest.raises(ValueError, match="malformed"):
        abi.c_layout(numbers, "WNA x;WNB y")
    with pytest.raises(ValueError, match="left over"):
        abi.c_layout([*numbers, 0], "WNA x in;WNB y")


def test_load_kernel_refuses_a_library_whose_layout_differs(monkeypatch):
    _kernel_or_skip()
    wrong = abi.layout()
    name, size, fields = wrong[1]
    fields = [(f, offset + 4 if f == "n_threads" else offset, n) for f, offset, n in fields]  # one int further on
    wrong[1] = (name, size, fields)
    monkeypatch.setattr(K, "kernel_layout", lambda lib: wrong)
    K.load_kernel.cache_clear()
    try:
        with pytest.raises(K.KernelUnavailable, match=r"structs differ from generation/abi.py: Model\.n_threads: 4 bytes "
                                                      r"at offset 48 in C, 4 bytes at offset 44 in ctypes"):
            K.load_kernel()
    finally:
        monkeypatch.undo()
        K.load_kernel.cache_clear()
    assert K.load_kernel() is not None


# ------------------------------------------------------------------------------------------------ build


def test_benchmark_routines_live_in_their_own_library():
    lib = _kernel_or_skip()
    assert not hasattr(lib, "wn_fma_gflops") and not hasattr(lib, "wn_read_gbps")
    bench = K.load_library("bench.cpp", "the benchmark's machine-limits library")
    assert hasattr(bench, "wn_fma_gflops") and hasattr(bench, "wn_read_gbps")
    assert not hasattr(bench, "wn_run")


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """A private source folder and cache: what load_library builds from and into."""
    _kernel_or_skip()  # a compiler and an AVX2 + FMA x86-64 CPU
    src = tmp_path / "csrc"
    src.mkdir()
    monkeypatch.setattr(K, "CSRC", src)
    monkeypatch.setenv("WAVENET_DILATED_CACHE", str(tmp_path / "cache"))
    return src


def test_a_compiler_error_names_the_real_file_and_line(sources):
    (sources / "broken_for_test.cpp").write_text('#include "answer.h"\n\nextern "C" int f() { return undefined_name; }\n')
    (sources / "answer.h").write_text("#pragma once\n")
    with pytest.raises(K.KernelUnavailable) as info:
        K.load_library("broken_for_test.cpp", "a test library")
    message = str(info.value)
    assert "\n" not in message and message.startswith("building a test library with ")
    assert f"{sources / 'broken_for_test.cpp'}:3:" in message and "undefined_name" in message
    assert not list((sources.parent / "cache").glob("*.so"))  # nothing half-built is installed


def test_the_cache_key_follows_the_sources_and_headers(sources):
    (sources / "answer_for_test.cpp").write_text('#include "answer.h"\nextern "C" int answer() { return ANSWER; }\n')
    (sources / "answer.h").write_text("#define ANSWER 42\n")
    first = K._source_digest("answer_for_test.cpp")
    lib = K.load_library("answer_for_test.cpp", "a test library")
    assert lib.answer() == 42
    built = list((sources.parent / "cache").glob("answer_for_test-*.so"))
    assert len(built) == 1
    (sources / "answer.h").write_text("#define ANSWER 43\n")
    assert K._source_digest("answer_for_test.cpp") != first
    (sources / "answer.h").write_text("#define ANSWER 42\n")
    assert K._source_digest("answer_for_test.cpp") == first  # contents, not times
