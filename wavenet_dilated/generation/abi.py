"""The ctypes mirror of the compiled kernel's C structs (``csrc``): the one place their Python layout is written."""

from __future__ import annotations

import ctypes

__all__ = ["Matrix", "Model", "State"]


class Matrix(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_int64), ("rows", ctypes.c_int32), ("in_", ctypes.c_int32),
                ("ry", ctypes.c_int32), ("pad_", ctypes.c_int32)]


class Model(ctypes.Structure):
    _fields_ = [
        ("n_layers", ctypes.c_int32), ("R", ctypes.c_int32), ("G", ctypes.c_int32), ("S", ctypes.c_int32),
        ("K", ctypes.c_int32), ("n_out", ctypes.c_int32), ("n_out_pad", ctypes.c_int32), ("head", ctypes.c_int32),
        ("n_classes", ctypes.c_int32), ("n_mix", ctypes.c_int32), ("first_table", ctypes.c_int32),
        ("n_threads", ctypes.c_int32),
        ("res_scale", ctypes.c_float), ("log_scale_min", ctypes.c_float),
        ("dilation", ctypes.c_void_p), ("col0", ctypes.c_void_p), ("row0", ctypes.c_void_p),
        ("conv_a", ctypes.c_void_p), ("conv_b", ctypes.c_void_p), ("skip", ctypes.c_void_p), ("res", ctypes.c_void_p),
        ("weights", ctypes.c_void_p), ("res_bias", ctypes.c_void_p), ("skip_bias", ctypes.c_void_p),
        ("table", ctypes.c_void_p), ("embed", ctypes.c_void_p),
        ("out1", ctypes.c_void_p), ("out2", ctypes.c_void_p),
        ("out1_bias", ctypes.c_void_p), ("out2_bias", ctypes.c_void_p),
        ("block", ctypes.c_void_p), ("past_a", ctypes.c_void_p), ("past_b", ctypes.c_void_p),
    ]


class State(ctypes.Structure):
    _fields_ = [("rings", ctypes.c_void_p), ("ring_offset", ctypes.c_void_p), ("class_ring", ctypes.c_void_p),
                ("prev_class", ctypes.c_void_p), ("prev_value", ctypes.c_void_p), ("pre", ctypes.c_void_p),
                ("pre_offset", ctypes.c_void_p), ("step", ctypes.c_int64), ("batch", ctypes.c_int32)]
