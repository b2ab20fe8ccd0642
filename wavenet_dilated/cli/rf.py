"""``wavenet-dilated rf``: receptive field, parameters, gridding coverage and HDC validity of a dilated stack.

The arithmetic is :mod:`wavenet_dilated.nn.dilation`'s and the gradient measurement
:mod:`wavenet_dilated.nn.analysis`'s; this module picks the stack from the flags and formats the report.

Any size a user types is answered at once or refused in one line: a stack is its group of rates and a repeat count,
never expanded; the receptive field, parameters and HDC are closed forms on Python ints; the coverage is
:func:`~wavenet_dilated.nn.dilation.coverage_fraction` (immediate unless the stack grids, then counted within a stated
bound or reported "not counted" with what it would take); ``--measure`` is refused, with the memory and work it would
need, beyond :data:`~wavenet_dilated.nn.analysis.MAX_MEASURE_BYTES`; ``--compare`` prints at most
:data:`MAX_COMPARE_LAYERS` rows; ``--layers`` is at most :data:`MAX_EXPONENTIAL_LAYERS`. Numbers beyond 30 digits
print as ``about 1.27 x 10^30``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._format import format_bytes, format_count
from ..nn import dilation as dil
from ..nn.analysis import MAX_MEASURE_BYTES
from ..presets import MODEL_PRESETS, model_preset
from .common import (
    DEFAULT_SAMPLE_RATE,
    PROG,
    dilation_list,
    format_rates,
    int_at_least,
    int_in,
    milliseconds,
    print_fields,
    wrap,
)

if TYPE_CHECKING:
    from ..nn.analysis import Measurement
    from ..wavenet import WaveNet, WaveNetConfig

__all__ = ["MAX_COMPARE_LAYERS", "MAX_EXPONENTIAL_LAYERS", "add_parser", "run"]

#: most layers in one stack of ``--layers L``: its last rate is 2^(L-1), a number of L bits
MAX_EXPONENTIAL_LAYERS = 4096
#: most layers ``--compare`` prints a row for
MAX_COMPARE_LAYERS = 4096


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "rf",
        help="receptive field, parameters, gridding coverage and HDC validity of a stack",
        description=wrap("Receptive field (samples and milliseconds), parameter count, gridding coverage (the fraction of "
        "offsets inside the receptive field that some input-to-output path reaches) and HDC validity (Wang et al. "
        "2018, checked on one group of rates: one stack) of a dilated stack, given as a model preset, a "
        "checkpoint, or explicitly with --dilations or --layers. The receptive field, parameters and HDC are closed "
        "forms, instant for any size; the coverage of a gridded stack is counted exactly up to "
        f"{dil.MAX_REACH_OFFSETS:,} offsets, and --measure refuses, saying what it would need, a stack that would "
        f"take more than {format_bytes(MAX_MEASURE_BYTES)}."),
        epilog=f"examples:\n  {PROG} rf --preset ljspeech\n  {PROG} rf --compare --layers 6\n"
        f"  {PROG} rf --compare --layers 6 --dims 2        # standard vs dilated 3x3 stacks, side by side\n"
        f"  {PROG} rf --dilations 1,2,5 --stacks 3 --kernel 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="a named model size")
    source.add_argument("--checkpoint", metavar="PATH", type=Path, help="the model stored in a checkpoint")
    source.add_argument("--dilations", metavar="R1,R2,...", type=dilation_list,
                        help="explicit rates of one stack, e.g. 1,2,5 (repeated --stacks times)")
    source.add_argument("--layers", metavar="L", type=int_in(1, MAX_EXPONENTIAL_LAYERS),
                        help="explicit stack of L layers with exponential rates 1, 2, 4, ..., 2^(L-1) (repeated --stacks "
                        f"times); L <= {MAX_EXPONENTIAL_LAYERS}")
    p.add_argument("--kernel", metavar="K", type=int_at_least(1),
                   help="kernel size of every layer of an explicit stack (default: 3)")
    p.add_argument("--stacks", metavar="N", type=int_at_least(1),
                   help="how many times an explicit stack's rates repeat (default: 1)")
    p.add_argument("--channels", metavar="C", type=int_at_least(1),
                   help="channels in and out of every layer of an explicit stack, for its parameter count "
                   "(default: 64)")
    p.add_argument("--dims", type=int, choices=(1, 2),
                   help="1 for audio (k taps), 2 for images (k x k kernels) in an explicit stack's parameter count and "
                   "coverage (default: 1); the receptive field is per axis")
    p.add_argument("--sample-rate", metavar="HZ", type=int_at_least(1),
                   help=f"rate for the milliseconds (default: the checkpoint's, else {DEFAULT_SAMPLE_RATE})")
    p.add_argument("--compare", action="store_true",
                   help="also print a table, layer by layer, of the receptive field of a standard stack (every "
                   "dilation 1) beside the dilated one, with their (equal) parameter counts (stacks of at most "
                   f"{MAX_COMPARE_LAYERS} layers)")
    p.add_argument("--measure", action="store_true",
                   help="also measure the receptive field from gradients: back-propagate from one output and count "
                   "the inputs it reaches (through the real network for a preset, with random weights, or a "
                   "checkpoint; through an all-ones stack for an explicit one), and check causality; refused, saying "
                   f"how much it would need, beyond {format_bytes(MAX_MEASURE_BYTES)} of memory")
    p.set_defaults(run=run)


# --------------------------------------------------------------------------------------------------- the stack


@dataclass
class _Stack:
    """One dilated stack as ``rf`` reports it: ``group`` repeated ``n_stacks`` times, never expanded (``--stacks`` may
    be any size)."""

    label: str
    kernel: int
    group: list[int]
    n_stacks: int
    dims: int
    sample_rate: int
    parameters: int
    parameters_note: str
    #: parameters of each layer of an explicit stack (all equal)
    per_layer_parameters: int | None = None
    #: parameters of the first i layers (i = 1..n) of a model, for the comparison table
    cumulative_parameters: list[int] = field(default_factory=list)
    model: WaveNet | None = None

    @property
    def n_layers(self) -> int:
        return len(self.group) * self.n_stacks

    @property
    def receptive_field(self) -> int:
        """Closed form: a stride-1 stack's field grows by ``Σ (k − 1)·r`` per repetition of the group."""
        return 1 + self.n_stacks * (dil.receptive_field(self.kernel, self.group) - 1)

    def parameters_up_to(self, i: int) -> int:
        """Parameters of the first ``i + 1`` layers."""
        if self.per_layer_parameters is not None:
            return self.per_layer_parameters * (i + 1)
        return self.cumulative_parameters[i]


def _explicit_only(args: argparse.Namespace) -> None:
    given = [flag for flag, value in (("--kernel", args.kernel), ("--stacks", args.stacks),
                                      ("--channels", args.channels), ("--dims", args.dims)) if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: only for an explicit stack (--dilations or --layers); a preset or "
                         "checkpoint has its own")


def _model_stack(label: str, config: WaveNetConfig, rate: int, model: WaveNet) -> _Stack:
    block_params = [sum(p.numel() for p in block.parameters()) for block in model.blocks]
    cumulative = [sum(block_params[: i + 1]) for i in range(len(block_params))]
    return _Stack(
        label=label,
        kernel=config.kernel_size,
        group=config.dilations[: config.layers_per_stack],
        n_stacks=config.n_stacks,
        dims=1,
        sample_rate=rate,
        parameters=model.n_parameters,
        parameters_note=f"the whole model; {cumulative[-1]:,} in its {len(block_params)} residual blocks",
        cumulative_parameters=cumulative,
        model=model,
    )


def _checkpoint_stack(args: argparse.Namespace) -> _Stack:
    from ..checkpoint import load_checkpoint, read_audio_config, read_config
    from ..wavenet import WaveNet

    ckpt = load_checkpoint(args.checkpoint)
    config = read_config(ckpt, args.checkpoint)
    audio_config = read_audio_config(ckpt, args.checkpoint)  # validated: a stored rate of -5 is refused
    rate = args.sample_rate or (audio_config.sample_rate if audio_config is not None else DEFAULT_SAMPLE_RATE)
    model = WaveNet.from_checkpoint(args.checkpoint)
    return _model_stack(f"checkpoint {args.checkpoint}", config, rate, model)


def _rf_stack(args: argparse.Namespace) -> _Stack:
    if args.preset is not None:
        _explicit_only(args)
        import torch

        from ..wavenet import WaveNet

        config = model_preset(args.preset)
        torch.manual_seed(0)  # --measure on a preset uses these random weights; fixed, so runs agree
        model = WaveNet(config).eval()
        return _model_stack(f"preset {args.preset}", config, args.sample_rate or DEFAULT_SAMPLE_RATE, model)
    if args.checkpoint is not None:
        _explicit_only(args)
        return _checkpoint_stack(args)
    if args.dilations is None and args.layers is None:
        raise ValueError("say which stack: --preset NAME, --checkpoint PATH, --dilations 1,2,4 or --layers L "
                         f"(see '{PROG} rf --help')")
    kernel = args.kernel or 3
    n_stacks = args.stacks or 1
    channels = args.channels or 64
    dims = args.dims or 1
    group = args.dilations if args.dilations is not None else dil.exponential_dilations(args.layers)
    n = len(group) * n_stacks
    per_layer = dil.conv_parameters(channels, channels, kernel, dims)
    return _Stack(
        label=f"explicit: {format_count(n, grouped=True)} layers, {dims}D",
        kernel=kernel,
        group=list(group),
        n_stacks=n_stacks,
        dims=dims,
        sample_rate=args.sample_rate or DEFAULT_SAMPLE_RATE,
        parameters=dil.stack_parameters(channels, n, kernel, dims),
        parameters_note=f"{format_count(n, grouped=True)} convolutions of {format_count(channels, grouped=True)} -> "
        f"{format_count(channels, grouped=True)} channels with bias, {format_count(per_layer, grouped=True)} each; "
        "dilation does not change it",
        per_layer_parameters=per_layer,
    )


def _coverage_text(stack: _Stack) -> str:
    """Gridding coverage of the whole stack: immediate when it is not gridded, counted (within a bound) when it is."""
    try:
        cover = dil.coverage_fraction(stack.kernel, stack.group, stack.dims, stack.n_stacks)
    except ValueError as err:  # a gridded stack too large to count: the rest of the report still stands
        return f"not counted: {err}"
    return (f"{float(cover):.1%} of the offsets inside the receptive field are reached"
            + (" (no gridding)" if cover == 1 else " (gridding: the rest are never seen)"))


def _measure(stack: _Stack) -> Measurement:
    """``--measure``: the network itself for a model, an all-ones stack otherwise; errors name the flag."""
    from ..nn.analysis import measure_model, measure_stack

    try:
        if stack.model is not None:
            return measure_model(stack.model)
        return measure_stack(stack.kernel, stack.group, stack.dims, n_stacks=stack.n_stacks)
    except ValueError as err:
        raise ValueError(f"--measure: {err}") from err


# --------------------------------------------------------------------------------------------------- the report


def _hdc_text(stack: _Stack) -> str:
    hdc = dil.hdc_check(stack.group, stack.kernel)
    m2 = hdc.max_distances[1] if len(hdc.max_distances) > 1 else hdc.max_distances[0]
    m2_text, k_text = format_count(m2), format_count(stack.kernel)
    if hdc.valid:
        text = f"valid (M_2 = {m2_text} <= K = {k_text}, rates share no factor > 1)"
    else:
        why = []
        if m2 > stack.kernel:
            why.append(f"M_2 = {m2_text} > K = {k_text}")
        if hdc.common_factor > 1:
            why.append(f"the rates share the factor {format_count(hdc.common_factor)}")
        text = "NOT valid: " + " and ".join(why)
    scope = "one stack: " if stack.n_stacks > 1 else ""
    return f"{text} [{scope}{format_rates(stack.group, 1)}]"


def _measured_text(measured: Measurement, rf: int, dims: int) -> str:
    verdict = "matches" if set(measured.extent) == {rf} else f"DIFFERS from the computed {rf}"
    text = " x ".join(map(str, measured.extent)) + f" {'samples' if dims == 1 else 'positions'}, {verdict}"
    if measured.causal is not None:
        text += "; causal" if measured.causal else "; NOT causal: later inputs reach it"
    if measured.zero_fraction is not None:
        text += f"; {measured.zero_fraction:.1%} zero gradients inside it"
    return text


def _print_comparison(stack: _Stack) -> None:
    """One row per layer (the caller has checked there are at most :data:`MAX_COMPARE_LAYERS`)."""
    dilations = stack.group * stack.n_stacks
    rfs = dil.receptive_fields(stack.kernel, dilations)
    print()
    header = ("layers", "dilation", "RF standard", "RF dilated", "parameters")
    table = [(str(i + 1), format_count(d), format_count(1 + (i + 1) * (stack.kernel - 1)), format_count(rfs[i]),
              format_count(stack.parameters_up_to(i), grouped=True))
             for i, d in enumerate(dilations)]
    widths = [max(len(h), *(len(r[c]) for r in table)) for c, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in table:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def run(args: argparse.Namespace) -> int:
    stack = _rf_stack(args)
    if args.compare and stack.n_layers > MAX_COMPARE_LAYERS:
        raise ValueError(f"--compare prints one row per layer: at most {MAX_COMPARE_LAYERS:,} layers, and this stack "
                         f"has {format_count(stack.n_layers, grouped=True)}")
    measured = _measure(stack) if args.measure else None  # first: it can refuse
    rf = stack.receptive_field
    if stack.dims == 1:
        rf_text = f"{format_count(rf)} samples = {milliseconds(rf, stack.sample_rate)} at {stack.sample_rate} Hz"
    else:
        rf_text = f"{format_count(rf)} x {format_count(rf)} (per axis {format_count(rf)})"
    rows = [
        ("stack", stack.label),
        ("kernel", format_count(stack.kernel) if stack.dims == 1 else f"{format_count(stack.kernel)}x"
         f"{format_count(stack.kernel)}"),
        ("dilations", format_rates(stack.group, stack.n_stacks)),
        ("receptive field", rf_text),
        ("parameters", f"{format_count(stack.parameters, grouped=True)} ({stack.parameters_note})"),
        ("gridding coverage", _coverage_text(stack)),
        ("HDC (Wang et al.)", _hdc_text(stack)),
    ]
    if measured is not None:
        rows.append(("measured RF", _measured_text(measured, rf, stack.dims)))
    print_fields(rows)
    if args.compare:
        _print_comparison(stack)
    return 0
