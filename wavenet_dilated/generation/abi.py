"""The ctypes mirror of the compiled kernel's C structs (``csrc/wavenet_kernel.h``): the one place their Python layout
is written.

The kernel describes its structs (``wn_layout``: sizes and field offsets; ``wn_layout_names``: names), :func:`layout`
describes these the same way, and the loader refuses a kernel whose description differs (:func:`layout_mismatch`), so
a struct changed on one side only is caught on load instead of corrupting memory.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

__all__ = ["Matrix", "Model", "State", "Term", "STRUCTS", "StructLayout", "layout", "c_layout", "layout_mismatch"]


class Matrix(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_int64), ("rows", ctypes.c_int32), ("in_", ctypes.c_int32),
                ("ry", ctypes.c_int32), ("scale_offset", ctypes.c_int32)]


class Model(ctypes.Structure):
    _fields_ = [
        ("n_layers", ctypes.c_int32), ("R", ctypes.c_int32), ("G", ctypes.c_int32), ("S", ctypes.c_int32),
        ("K", ctypes.c_int32), ("n_out", ctypes.c_int32), ("n_out_pad", ctypes.c_int32), ("head", ctypes.c_int32),
        ("n_classes", ctypes.c_int32), ("n_mix", ctypes.c_int32), ("first_table", ctypes.c_int32),
        ("n_threads", ctypes.c_int32),
        ("res_scale", ctypes.c_float), ("log_scale_min", ctypes.c_float),
        ("precision", ctypes.c_int32), ("exchange", ctypes.c_int32),
        ("dilation", ctypes.c_void_p), ("col0", ctypes.c_void_p), ("row0", ctypes.c_void_p),
        ("conv_a", ctypes.c_void_p), ("conv_b", ctypes.c_void_p), ("skip", ctypes.c_void_p), ("res", ctypes.c_void_p),
        ("weights", ctypes.c_void_p), ("scales", ctypes.c_void_p), ("res_bias", ctypes.c_void_p),
        ("skip_bias", ctypes.c_void_p),
        ("table", ctypes.c_void_p), ("embed", ctypes.c_void_p),
        ("out1", ctypes.c_void_p), ("out2", ctypes.c_void_p),
        ("out1_bias", ctypes.c_void_p), ("out2_bias", ctypes.c_void_p),
        ("block", ctypes.c_void_p), ("past_a", ctypes.c_void_p), ("past_b", ctypes.c_void_p),
    ]


class State(ctypes.Structure):
    _fields_ = [("rings", ctypes.c_void_p), ("ring_offset", ctypes.c_void_p), ("class_ring", ctypes.c_void_p),
                ("prev_class", ctypes.c_void_p), ("prev_value", ctypes.c_void_p), ("pre", ctypes.c_void_p),
                ("pre_offset", ctypes.c_void_p), ("step", ctypes.c_int64), ("batch", ctypes.c_int32),
                ("pad_", ctypes.c_int32), ("codes", ctypes.c_void_p), ("code_scale", ctypes.c_void_p),
                ("code_sum", ctypes.c_void_p), ("code_offset", ctypes.c_void_p)]


class Term(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_void_p), ("stride", ctypes.c_int64), ("x", ctypes.c_void_p), ("a", ctypes.c_void_p),
                ("add", ctypes.c_void_p), ("lo", ctypes.c_int64), ("n_rows", ctypes.c_int64), ("len", ctypes.c_int64),
                ("first", ctypes.c_int64), ("s", ctypes.c_int32), ("pad_", ctypes.c_int32)]


#: the structs the kernel describes (``wn_layout``, ``wn_layout_names``), in its order; the C name of each is ``WN`` +
#: the ctypes name
STRUCTS: tuple[type[ctypes.Structure], ...] = (Matrix, Model, State, Term)

#: one struct's layout: (name, size in bytes, [(field name, offset, size in bytes) in declaration order])
StructLayout = tuple[str, int, list[tuple[str, int, int]]]


def layout(structs: Sequence[type[ctypes.Structure]] = STRUCTS) -> list[StructLayout]:
    """The layout of ctypes structs, in the form :func:`c_layout` gives the kernel's."""
    return [(s.__name__, ctypes.sizeof(s), [(f[0], getattr(s, f[0]).offset, getattr(s, f[0]).size) for f in s._fields_])
            for s in structs]


def c_layout(numbers: Sequence[int], names: str) -> list[StructLayout]:
    """The kernel's description of its structs, from ``wn_layout`` (per struct: field count, size, then offset and size
    per field) and ``wn_layout_names`` (``"WNMatrix offset rows …;WNModel …"``); names lose their ``WN`` prefix."""
    out: list[StructLayout] = []
    pos = 0
    for words in (part.split() for part in names.split(";")):
        n_fields, size = numbers[pos], numbers[pos + 1]
        places = numbers[pos + 2: pos + 2 + 2 * n_fields]
        if len(words) != n_fields + 1 or len(places) != 2 * n_fields:
            raise ValueError(f"malformed layout of {words[:1]}: {n_fields} fields, names {words[1:]}")
        out.append((words[0].removeprefix("WN"), size,
                    [(w, places[2 * i], places[2 * i + 1]) for i, w in enumerate(words[1:])]))
        pos += 2 + 2 * n_fields
    if pos != len(numbers):
        raise ValueError(f"malformed layout: {len(numbers) - pos} values left over")
    return out


def layout_mismatch(kernel: Sequence[StructLayout], structs: Sequence[type[ctypes.Structure]] = STRUCTS) -> str | None:
    """``None`` when the kernel's structs (:func:`c_layout`) match the ctypes ``structs`` field by field (name, offset,
    size) and in size; else what differs first, naming the struct and the field. A trailing ``_`` is not part of a
    name (the ctypes ``in_`` is the C ``in``)."""
    ours = layout(structs)
    if [k[0] for k in kernel] != [o[0] for o in ours]:
        return f"the compiled kernel has the structs {[k[0] for k in kernel]}, abi.py mirrors {[o[0] for o in ours]}"
    for (name, c_size, c_fields), (_, size, fields) in zip(kernel, ours):
        for i in range(max(len(c_fields), len(fields))):
            if i >= len(c_fields):
                return f"{name}.{fields[i][0]}: not in the C struct (it has {len(c_fields)} fields)"
            c_name, c_offset, c_field_size = c_fields[i]
            if i >= len(fields):
                return f"{name}: the C struct's field {c_name} (offset {c_offset}) has no ctypes counterpart"
            field, offset, field_size = fields[i]
            if c_name.rstrip("_") != field.rstrip("_"):
                return f"{name}.{field}: the C struct has {c_name} in its place (field {i})"
            if (c_offset, c_field_size) != (offset, field_size):
                return f"{name}.{field}: {c_field_size} bytes at offset {c_offset} in C, {field_size} bytes at offset " \
                       f"{offset} in ctypes"
        if c_size != size:
            return f"{name}: {c_size} bytes in C, {size} in ctypes"
    return None
