"""``wavenet-dilated info``: what a checkpoint holds (the facts are :func:`wavenet_dilated.checkpoint.describe`'s)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .common import DEFAULT_SAMPLE_RATE, format_rates, milliseconds, print_fields

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "info",
        help="what a checkpoint holds",
        description="Print a checkpoint's model config, training step, sample rate, receptive field (samples and "
        "ms), parameter count, validation NLL (bits per sample) and which weights it holds (EMA or not).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="a checkpoint written by the trainer or WaveNet.save")
    p.add_argument("--json", action="store_true", help="print the same facts as one JSON object")
    p.set_defaults(run=run)


def _bits(value: Any) -> str:
    return "not recorded" if value is None else f"{float(value):.4f} bits/sample"


def _kernel_line(isa: str) -> str:
    """The compiled generation kernel of this machine: its vector ISA, or why there is none."""
    if isa.startswith("none"):
        return isa
    from ..generation.kernel import kernel_int8_dot

    return f"{isa} vectors on this machine (precisions fp32, bf16, int8, w8a8; w8a8 products: {kernel_int8_dot()})"


def _print_section(title: str, section: dict[str, Any]) -> None:
    print(f"{title}:")
    width = max(len(str(k)) for k in section)
    for key, value in section.items():
        print(f"  {key!s:<{width}}  {value}")


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import describe, load_checkpoint, read_audio_config, read_config

    ckpt = load_checkpoint(args.checkpoint, require_finite=False)  # reported below, not refused
    config = read_config(ckpt, args.checkpoint)
    audio_config = read_audio_config(ckpt, args.checkpoint)  # validated: a stored rate of -5 is reported as invalid
    stored_rate = audio_config.sample_rate if audio_config is not None else None
    rate = stored_rate or DEFAULT_SAMPLE_RATE
    has_ema = ckpt.get("ema") is not None
    facts = describe(ckpt, args.checkpoint, DEFAULT_SAMPLE_RATE)
    from ..generation.kernel import kernel_isa

    if args.json:
        print(json.dumps({**facts, "kernel_isa": kernel_isa()}, indent=2, default=str))
        return 0

    if config.cond_channels is None:
        conditioning = "none (unconditioned)"
    else:
        conditioning = f"mel, {config.cond_channels} bins, hop {config.hop_length}"
        conditioning += "" if ckpt.get("mel_stats") is not None else " (no mel_stats stored)"
    if config.n_speakers is not None:
        names = facts["speakers"]
        conditioning += f"; {config.n_speakers} speakers" + (f" ({', '.join(names)})" if names else "")
    rows = [
        ("checkpoint", str(args.checkpoint)),
        ("step", "not recorded" if ckpt.get("step") is None else str(ckpt["step"])),
        ("sample rate", f"{stored_rate} Hz" if stored_rate else
         f"not recorded (no audio_config; sample assumes {DEFAULT_SAMPLE_RATE} Hz)"),
        ("receptive field", f"{config.receptive_field} samples = {milliseconds(config.receptive_field, rate)}"),
        ("parameters", f"{facts['parameters']:,}"),
        ("validation NLL", _bits(ckpt.get("val_nll_bits"))),
        ("best validation NLL", _bits(ckpt.get("best_val_nll_bits"))),
        ("weights", f"NOT FINITE ({facts['non_finite']}): sample and resume refuse this checkpoint"
         if facts["non_finite"] else "model + EMA (sample uses the EMA weights; --no-ema for the raw ones)" if has_ema
         else "model only (no EMA weights)"),
        ("conditioning", conditioning),
        ("layers", f"{config.n_layers}, kernel {config.kernel_size}, dilations "
         f"{format_rates(config.dilations[: config.layers_per_stack], config.n_stacks)}"),
        ("output", f"{config.output} ({config.n_classes} classes)" if config.output == "categorical" else config.output),
        ("fast kernel", _kernel_line(kernel_isa())),
    ]
    print_fields(rows)
    _print_section("config", ckpt["config"])
    for title, section in (("audio config", ckpt.get("audio_config")), ("train config", ckpt.get("train_config"))):
        if isinstance(section, dict) and section:
            _print_section(title, section)
    return 0
